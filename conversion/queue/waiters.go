package queue

import (
	"context"
	"sync"
	"time"
)

// waiters are the Lease calls of one process that wait for work. A job
// that becomes ready wakes one of them, not all: with a hundred farms
// polling, a wake-up for all would cost a hundred lease attempts per job.
// A waiter that leased a full batch wakes the next, since there may be
// more; one woken that leaves without trying passes its wake-up on. So a
// wake-up is never lost, and it costs one attempt when there is one job.
type waiters struct {
	mu sync.Mutex
	q  []*waiter // FIFO; a woken waiter leaves it
}

type waiter struct {
	ch chan struct{} // buffered 1: the wake-up
}

// add registers a waiter. Register before looking for work: a job that
// comes after the look wakes it.
func (ws *waiters) add() *waiter {
	w := &waiter{ch: make(chan struct{}, 1)}
	ws.mu.Lock()
	ws.q = append(ws.q, w)
	ws.mu.Unlock()
	return w
}

// wake wakes up to n waiters, oldest first.
func (ws *waiters) wake(n int) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	for ; n > 0 && len(ws.q) > 0; n-- {
		w := ws.q[0]
		ws.q[0] = nil
		ws.q = ws.q[1:]
		w.ch <- struct{}{}
	}
}

// done unregisters w after a look for work. A wake-up w got and did not
// act on goes to the next waiter.
func (ws *waiters) done(w *waiter) {
	ws.mu.Lock()
	for i, x := range ws.q {
		if x == w {
			ws.q = append(ws.q[:i], ws.q[i+1:]...)
			ws.mu.Unlock()
			return
		}
	}
	ws.mu.Unlock()
	select {
	case <-w.ch:
		ws.wake(1)
	default:
	}
}

// pollFunc looks once for up to max jobs. next is when it knows work
// becomes due (a delayed job), zero if it does not.
type pollFunc func(ctx context.Context) (leases []Lease, next time.Time, err error)

// wait runs poll until it leases something, until req.Wait has passed,
// or until ctx ends or closed is closed. fallback bounds each sleep, for
// wake-ups the queue may miss (0: none).
func (ws *waiters) wait(ctx context.Context, req LeaseRequest, closed <-chan struct{}, fallback time.Duration,
	poll pollFunc,
) ([]Lease, error) {
	var deadline time.Time
	if req.Wait > 0 {
		deadline = time.Now().Add(req.Wait)
	}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w := ws.add()
		leases, next, err := poll(ctx)
		if err != nil || len(leases) > 0 || req.Wait == 0 {
			ws.done(w)
			if len(leases) == req.Max {
				ws.wake(1) // there may be more
			}
			return leases, err
		}
		now := time.Now()
		sleep := deadline.Sub(now)
		if sleep <= 0 {
			ws.done(w)
			return nil, nil
		}
		if !next.IsZero() {
			sleep = min(sleep, max(next.Sub(now), time.Millisecond))
		}
		if fallback > 0 {
			sleep = min(sleep, fallback)
		}
		if timer == nil {
			timer = time.NewTimer(sleep)
		} else {
			timer.Reset(sleep)
		}
		select {
		case <-w.ch:
			// Woken and out of the queue: look again.
		case <-timer.C:
			ws.done(w)
		case <-ctx.Done():
			ws.done(w)
			return nil, ctx.Err()
		case <-closed:
			ws.done(w)
			return nil, errClosed
		}
	}
}
