package items

import (
	"context"
	"sync"
)

// subscriberBuffer is how many events a subscriber may fall behind before
// it loses some (and then gets EventResync).
const subscriberBuffer = 256

// hub fans events out to subscribers in the process. A subscriber whose
// buffer is full loses the event and is owed an EventResync, sent before
// its next event that fits.
type hub struct {
	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	closed bool
	done   chan struct{} // closed by close: subscriptions end
	wg     sync.WaitGroup
}

type subscriber struct {
	ch   chan Event
	lost bool
}

func newHub() *hub {
	return &hub{subs: map[*subscriber]struct{}{}, done: make(chan struct{})}
}

// subscribe adds a subscriber until ctx ends or the hub closes. It
// returns false if the hub is closed.
func (h *hub) subscribe(ctx context.Context) (<-chan Event, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, false
	}
	s := &subscriber{ch: make(chan Event, subscriberBuffer)}
	h.subs[s] = struct{}{}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		select {
		case <-ctx.Done():
		case <-h.done:
		}
		h.mu.Lock()
		delete(h.subs, s)
		close(s.ch) // under mu: publish sends under it
		h.mu.Unlock()
	}()
	return s.ch, true
}

// publish offers e to every subscriber without blocking.
func (h *hub) publish(e Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.subs {
		s.offer(e)
	}
}

// offer sends e without blocking: after an EventResync if the subscriber
// lost events before, and not at all if there is no room.
func (s *subscriber) offer(e Event) {
	if s.lost && !s.resync() {
		return
	}
	select {
	case s.ch <- e:
	default:
		s.lost = true
	}
}

// resync tells the subscriber it lost events, or keeps that owed if there
// is no room; it reports whether it could.
func (s *subscriber) resync() bool {
	select {
	case s.ch <- Event{Type: EventResync}:
		s.lost = false
		return true
	default:
		s.lost = true
		return false
	}
}

// close ends every subscription and waits for them.
func (h *hub) close() {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	h.closed = true
	close(h.done)
	h.mu.Unlock()
	h.wg.Wait()
}
