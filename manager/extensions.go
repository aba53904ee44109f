package manager

import (
	"context"
	"sync"
)

// ExtraEvent is an event of another part of the server (the conversion
// service's item changes) that /events streams beside the manager's own:
// "event: <Type>" with Data as JSON.
type ExtraEvent struct {
	Type string
	Data any
}

// EventSource subscribes to another part's events: the channel delivers
// them until ctx ends, then closes.
type EventSource func(ctx context.Context) (<-chan ExtraEvent, error)

// AddEventSource adds a source of events to /events. Call it before
// serving.
func (m *Manager) AddEventSource(src EventSource) {
	m.extMu.Lock()
	m.sources = append(m.sources, src)
	m.extMu.Unlock()
}

// SetConversionStatus sets what /status shows as "conversion": the job
// queue and the farms' job slots. Call it before serving.
func (m *Manager) SetConversionStatus(fn func(context.Context) any) {
	m.extMu.Lock()
	m.convStatus = fn
	m.extMu.Unlock()
}

func (m *Manager) conversionStatus(ctx context.Context) any {
	m.extMu.Lock()
	fn := m.convStatus
	m.extMu.Unlock()
	if fn == nil {
		return nil
	}
	return fn(ctx)
}

// extraEvents merges the event sources into one channel for one /events
// stream; it closes when ctx ends (or every source has closed). Sources
// that fail to subscribe are left out.
func (m *Manager) extraEvents(ctx context.Context) <-chan ExtraEvent {
	m.extMu.Lock()
	sources := m.sources
	m.extMu.Unlock()
	if len(sources) == 0 {
		return nil
	}
	out := make(chan ExtraEvent, 64)
	var wg sync.WaitGroup
	for _, src := range sources {
		ch, err := src(ctx)
		if err != nil {
			m.log.Warn("event source for /events", "err", err)
			continue
		}
		wg.Go(func() {
			for {
				select {
				case <-ctx.Done():
					return
				case e, ok := <-ch:
					if !ok {
						return
					}
					select {
					case out <- e:
					case <-ctx.Done():
						return
					}
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(out)
	}()
	return out
}
