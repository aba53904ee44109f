package manager

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/drover-dev/drover/placement"
	"github.com/drover-dev/drover/session"
)

// The manager places sessions through package placement: a session is a
// placement.Holder, and its instance a *placement.Instance whose Conn is
// the manager's own instance connection (instConn), on which the task path
// runs without entering placement.

// Farm is the manager's handle on a farm; see placement.Farm. *farm.Farm
// implements it.
type Farm = placement.Farm

// ViaFarm is an optional Farm capability: a farm that serves its instances
// behind its own port, as the adapters of dial, stdio and stream pools
// need (see placement.Via). A farm.Farm added to a manager as it is has no
// port: package drover wires one up.
type ViaFarm = placement.Via

// ConnectorFarm is a farm in the manager's process that hands it
// connections to its adapted instances without a network (see
// placement.Connector); the manager attaches them as it does dialled ones.
type ConnectorFarm = placement.Connector

// Capacity is the input of the health rule; see placement.Capacity.
type Capacity = placement.Capacity

// Sentinel errors. Those of placement are the same values, so errors.Is
// matches either name.
var (
	ErrNoCapacity       = placement.ErrNoCapacity
	ErrQueueTimeout     = placement.ErrQueueTimeout
	ErrUnknownPool      = placement.ErrUnknownPool
	ErrNoFarm           = placement.ErrNoFarm
	ErrSpawnFailed      = placement.ErrSpawnFailed
	ErrShutdown         = placement.ErrShutdown
	ErrFarmNotFound     = placement.ErrFarmNotFound
	ErrStoreUnavailable = placement.ErrStoreUnavailable
	ErrSessionNotFound  = errors.New("session not found")
)

// poolState is the manager's side of a pool: the policy of its sessions
// (timeouts, lifetime) and its task metrics, resolved once.
type poolState struct {
	cfg     Pool
	metrics poolMetrics
}

// pools are the manager's pool policies; a pool that only a farm brought
// gets the default policy the first time a session asks for it.
type pools struct {
	mu sync.Mutex
	m  map[string]*poolState
}

func (m *Manager) pool(name string) (*poolState, error) {
	m.pools.mu.Lock()
	defer m.pools.mu.Unlock()
	if p := m.pools.m[name]; p != nil {
		return p, nil
	}
	if !m.place.HasPool(name) {
		return nil, &placement.PoolError{Pool: name, Err: ErrUnknownPool}
	}
	cfg := Pool{Name: name}
	cfg.defaults()
	p := &poolState{cfg: cfg, metrics: m.metrics.forPool(name)}
	m.pools.m[name] = p
	return p, nil
}

// placementPool is the part of a pool's policy placement applies. A reuse
// pool with a reset task has its instances reset before they go idle
// again; a failed reset stops the instance.
func (m *Manager) placementPool(p Pool) placement.Pool {
	pp := placement.Pool{Name: p.Name, Warm: p.Warm, Reuse: p.Release == ReleaseReuse, QueueTimeout: p.QueueTimeout}
	if pp.Reuse && p.resetTask != nil {
		pp.ResetTimeout = p.TaskTimeout + time.Second
		pp.Reset = func(ctx context.Context, inst *placement.Instance) error {
			conn, ok := inst.Conn().(*instConn)
			if !ok || conn == nil {
				return fmt.Errorf("reset an instance of pool %q: it has no connection", p.Name)
			}
			return m.resetInstance(ctx, conn, &p)
		}
	}
	return pp
}

// acquire places a session: see placement.Placer.Acquire.
func (m *Manager) acquire(ctx context.Context, s *Session, wait bool, queued func(int)) (*placement.Instance, error) {
	return m.place.Acquire(ctx, s.holder(), wait, queued)
}

// holder is the session as placement sees it.
func (s *Session) holder() *placement.Holder {
	return &placement.Holder{
		ID: s.info.ID, Pool: s.pool.cfg.Name, Labels: s.labels, Start: s.startOpts,
		Lost:     func(error) { s.instanceLost() },
		Draining: s.farmDraining,
	}
}

// dial is placement's DialFunc: the manager's own instance connection.
func (m *Manager) dial(ctx context.Context, url string, header http.Header, lost func(error)) (placement.Conn, error) {
	c, err := dialInstance(ctx, url, header, m.cfg.FarmTLS, m.cfg.MaxInstanceMessage, lost)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// attach takes a connection a local farm made to one of its instances.
func (m *Manager) attach(conn net.Conn, lost func(error)) (placement.Conn, error) {
	return newInstConn(conn, nil, m.cfg.MaxInstanceMessage, lost), nil
}

// instConn is placement's Conn.
var _ placement.Conn = (*instConn)(nil)

// Clean reports whether the instance could serve another session now.
func (c *instConn) Clean() bool { return c.clean() }

// Close shuts the connection without reporting a loss.
func (c *instConn) Close() { c.close() }

// errorCode maps placement errors to protocol codes.
func errorCode(err error) string {
	switch {
	case errors.Is(err, ErrNoCapacity), errors.Is(err, ErrQueueTimeout):
		return session.CodeNoCapacity
	case errors.Is(err, ErrUnknownPool), errors.Is(err, ErrNoFarm), errors.Is(err, ErrSessionNotFound):
		return session.CodeNotFound
	case errors.Is(err, ErrShutdown):
		return session.CodeShutdown
	case errors.Is(err, ErrStoreUnavailable):
		return session.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return session.CodeTimeout
	}
	var se *session.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return session.CodeInternal
}
