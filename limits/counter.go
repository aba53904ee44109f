package limits

import (
	"sync"
	"sync/atomic"
)

// Counter counts what each key holds at once (open sessions per user) and
// refuses past a maximum. Keys holding nothing are forgotten, so its
// memory follows what is held. A nil *Counter, or one with a maximum of
// 0, admits everything and counts nothing.
type Counter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// NewCounter returns a counter admitting max holdings per key, or nil
// when max <= 0 (no limit).
func NewCounter(max int) *Counter {
	if max <= 0 {
		return nil
	}
	return &Counter{max: max, n: map[string]int{}}
}

// Max is the most a key may hold; 0 without a limit.
func (c *Counter) Max() int {
	if c == nil {
		return 0
	}
	return c.max
}

// Acquire takes one holding for key. ok is false, and nothing is taken,
// when key holds the maximum already. release gives the holding back;
// calling it again does nothing.
func (c *Counter) Acquire(key string) (release func(), ok bool) {
	if c == nil {
		return func() {}, true
	}
	c.mu.Lock()
	if c.n[key] >= c.max {
		c.mu.Unlock()
		return nil, false
	}
	c.n[key]++
	c.mu.Unlock()
	return c.releaser(key), true
}

// releaser gives one of key's holdings back, once.
func (c *Counter) releaser(key string) func() {
	var done atomic.Bool
	return func() {
		if !done.CompareAndSwap(false, true) {
			return
		}
		c.mu.Lock()
		if c.n[key]--; c.n[key] <= 0 {
			delete(c.n, key)
		}
		c.mu.Unlock()
	}
}

// Hold takes one holding for key even past the maximum (what was taken
// elsewhere and moves here); release is as Acquire's.
func (c *Counter) Hold(key string) (release func()) {
	if c == nil {
		return func() {}
	}
	c.mu.Lock()
	c.n[key]++
	c.mu.Unlock()
	return c.releaser(key)
}

// Count is what key holds now.
func (c *Counter) Count(key string) int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// Keys is how many keys hold something.
func (c *Counter) Keys() int {
	if c == nil {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.n)
}
