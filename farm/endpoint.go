package farm

import (
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/drover-dev/drover/internal/lib/memconn"
)

// Endpoint tells how a client reaches the native-protocol WebSocket of a
// ready instance: either h, a handler inside the farm that speaks the native
// protocol for the instance (dial and stdio instances: the adapter upgrades
// the request itself), or, when h is nil, upstream, the instance's own
// WebSocket URL to relay to (native instances; stream instances, whose
// client's bytes are relayed untouched). Asking for a stream instance's
// endpoint tells the farm that a client connected (see StreamConnected).
// It returns ErrNotFound for an instance that is not ready (starting,
// stopping, gone).
func (f *Farm) Endpoint(id string) (h http.Handler, upstream string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.instances[id]
	if !ok || inst.state != StateReady {
		return nil, "", fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	switch {
	case inst.dial != nil:
		return &inst.dial.hosts, "", nil
	case inst.stdio != nil:
		return &inst.stdio.hosts, "", nil
	case inst.stream != nil:
		// The relay asks as its client connects: the instance is in use.
		f.connectedLocked(inst)
	}
	return nil, "ws://" + inst.addr + "/", nil
}

// ErrNotHosted: Connect was asked for an instance the farm does not adapt
// (native, stream): it is reached at its own address.
var ErrNotHosted = errors.New("farm: the instance is not served by the farm")

// Connect connects a caller in the farm's own process to an instance the
// farm adapts (dial, stdio), as a manager's WebSocket to PathInstance would,
// over an in-process connection instead (memconn): no socket, no HTTP
// upgrade, and no token, since nothing crosses a process. The returned
// connection is past the handshake: the caller writes masked client
// frames and reads the farm's at once. It closes when the instance goes,
// like one through the server. ErrNotFound: no such ready instance;
// ErrNotHosted: the instance has an address of its own.
func (f *Farm) Connect(id string) (net.Conn, error) {
	f.mu.Lock()
	inst, ok := f.instances[id]
	var hosts *hostSet
	switch {
	case !ok || inst.state != StateReady:
		f.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	case inst.dial != nil:
		hosts = &inst.dial.hosts
	case inst.stdio != nil:
		hosts = &inst.stdio.hosts
	default:
		f.mu.Unlock()
		return nil, fmt.Errorf("%w: %s", ErrNotHosted, id)
	}
	f.mu.Unlock()
	ours, theirs := memconn.Pair(0)
	if !f.goTracked(func() { hosts.serve(ours) }) {
		_ = ours.Close()
		_ = theirs.Close()
		return nil, ErrClosed
	}
	return theirs, nil
}

// Status is the farm's own view of itself, as served at PathStatus.
func (f *Farm) Status() FarmStatus {
	insts := f.Instances()
	f.mu.Lock()
	free := max(f.slots-f.used, 0)
	draining := f.draining
	f.mu.Unlock()
	return FarmStatus{
		ID:        f.id,
		Name:      f.name,
		Slots:     f.slots,
		Free:      free,
		Draining:  draining,
		Pools:     f.Pools(),
		Instances: insts,
		Cache:     cacheStatus(f.cache),
	}
}
