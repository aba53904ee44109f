package manager

import "github.com/drover-dev/drover/session"

// SetIdleEndHook makes the janitor call f when it has found a session idle,
// before it ends it: tests use it to put a task in flight at that moment.
func (m *Manager) SetIdleEndHook(f func(*session.Info)) { m.idleEndHook.Store(&f) }

// ClientConns is the number of client WebSocket connections the manager
// holds open.
func (m *Manager) ClientConns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.conns)
}

// QuietConns is the number of client connections waiting in the read
// poller, without a reader.
func (m *Manager) QuietConns() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for c := range m.conns {
		if c.reading.Load() == readQuiet {
			n++
		}
	}
	return n
}
