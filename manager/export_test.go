package manager

import "github.com/drover-dev/drover/session"

// SetIdleEndHook makes the janitor call f when it has found a session idle,
// before it ends it: tests use it to put a task in flight at that moment.
func (m *Manager) SetIdleEndHook(f func(*session.Info)) { m.idleEndHook.Store(&f) }
