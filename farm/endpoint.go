package farm

import (
	"fmt"
	"net/http"
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
