package farm

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// The stream adapter (HOOPS SC-server style). A stream instance listens on
// its own port and its client's WebSocket is relayed to it byte for byte;
// the farm does not speak to it. With a port range, a stream instance gets
// the port of its slot, PortMin + slot number, so a farm's streaming
// servers sit on consecutive ports.
//
// The instance reports its state with liveliness reports (the farm's HTTP
// server routes POST /liveliness/:id?liveliness=ready|ping|disconnect to
// Liveliness):
//   - ready: with Readiness "liveliness" the instance is ready only then;
//     with "probe" (the default) it is ready once its port accepts
//     connections, and ready counts as a ping;
//   - ping: the instance is alive;
//   - disconnect: its client left; the farm stops it (a requested stop: no
//     OnExit).
//
// The farm kills a stream instance (and reports it to OnExit) when it stays
// silent for three Liveliness intervals, counted from its ready: always for
// Readiness "liveliness", and for "probe" once it has sent a report (a
// program that never reports is not expected to). It also kills it when no
// client connected within InitialUse of its ready, unless it was started
// warm (StartOptions.Warm): a manager's warm pool holds it until a client
// comes. The farm learns that a client connected when Endpoint is asked
// for the instance (the relay asks it as it opens) or from StreamConnected.

// Readiness values of PoolSpec.Readiness.
const (
	ReadinessProbe      = "probe"
	ReadinessLiveliness = "liveliness"
)

// Liveliness states an instance reports.
const (
	LivelinessReady      = "ready"
	LivelinessPing       = "ping"
	LivelinessDisconnect = "disconnect"
)

const (
	defaultLiveliness = 10 * time.Second
	defaultInitialUse = 60 * time.Second
	// silentIntervals is how many Liveliness intervals without a report
	// a stream instance survives.
	silentIntervals = 3
)

// ErrBadLiveliness means a liveliness report the farm cannot take: an
// unknown state, or an instance that is no stream instance.
var ErrBadLiveliness = errors.New("farm: bad liveliness report")

// streamWatch is the farm's watch over one stream instance. Guarded by
// Farm.mu.
type streamWatch struct {
	ready      chan struct{} // closed at the first ready report
	gotReady   bool
	reporting  bool // the instance has sent a report
	lastReport time.Time
	connected  bool
	armed      bool        // the instance is ready: the timers run
	silence    *time.Timer // kills after silentIntervals without a report
	unused     *time.Timer // kills when no client connected within InitialUse
}

// Liveliness takes a liveliness report of the stream instance id: state is
// "ready", "ping" or "disconnect". It returns ErrNotFound for an unknown
// id and ErrBadLiveliness for anything else it cannot take.
func (f *Farm) Liveliness(id, state string) error {
	f.mu.Lock()
	inst, ok := f.instances[id]
	if !ok || inst.state == StateExited {
		f.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	w := inst.stream
	if w == nil {
		f.mu.Unlock()
		return fmt.Errorf("%w: %s is no stream instance", ErrBadLiveliness, id)
	}
	switch state {
	case LivelinessReady:
		if !w.gotReady {
			w.gotReady = true
			close(w.ready)
		}
		f.reportedLocked(inst)
	case LivelinessPing:
		f.reportedLocked(inst)
	case LivelinessDisconnect:
		stopping := inst.stopping
		f.mu.Unlock()
		if !stopping {
			f.log.Info("stream instance reported disconnect, stopping it", "instance", id)
			f.goTracked(func() {
				ctx, cancel := context.WithTimeout(context.Background(), f.stopGrace+killWait)
				defer cancel()
				if err := f.StopInstance(ctx, id); err != nil && !errors.Is(err, ErrNotFound) {
					f.log.Warn("stop after disconnect failed", "instance", id, "err", err)
				}
			})
		}
		return nil
	default:
		f.mu.Unlock()
		return fmt.Errorf("%w: unknown state %q", ErrBadLiveliness, state)
	}
	f.mu.Unlock()
	return nil
}

// reportedLocked notes a liveliness report; f.mu is held.
func (f *Farm) reportedLocked(inst *instance) {
	w := inst.stream
	w.reporting = true
	w.lastReport = time.Now()
	if !w.armed {
		return
	}
	limit := silentIntervals * inst.pool.liveliness
	if w.silence == nil {
		w.silence = time.AfterFunc(limit, func() { f.silenceFired(inst) })
	} else {
		w.silence.Reset(limit)
	}
}

// StreamConnected tells the farm that a client connected to the stream
// instance id, which keeps the farm from killing it for lack of use.
// Endpoint calls it for stream instances; a relay that reaches the
// instance some other way calls it itself.
func (f *Farm) StreamConnected(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	inst, ok := f.instances[id]
	if !ok || inst.state == StateExited {
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	f.connectedLocked(inst)
	return nil
}

func (f *Farm) connectedLocked(inst *instance) {
	w := inst.stream
	if w == nil {
		return
	}
	w.connected = true
	if w.unused != nil {
		w.unused.Stop()
	}
}

// armStreamLocked starts the watch of a stream instance that just became
// ready; f.mu is held.
func (f *Farm) armStreamLocked(inst *instance) {
	w := inst.stream
	p := inst.pool
	w.armed = true
	if p.readiness == ReadinessLiveliness || w.reporting {
		w.lastReport = time.Now() // the clock starts at ready
		w.silence = time.AfterFunc(silentIntervals*p.liveliness, func() { f.silenceFired(inst) })
	}
	if !w.connected && !inst.warm {
		w.unused = time.AfterFunc(p.initialUse, func() {
			f.mu.Lock()
			used := w.connected
			f.mu.Unlock()
			if !used {
				f.kill(inst, fmt.Errorf("no client connected within %s", p.initialUse))
			}
		})
	}
}

func (f *Farm) silenceFired(inst *instance) {
	limit := silentIntervals * inst.pool.liveliness
	f.mu.Lock()
	quiet := time.Since(inst.stream.lastReport)
	f.mu.Unlock()
	if quiet < limit {
		return // a report came as the timer fired; it re-armed the timer
	}
	f.kill(inst, fmt.Errorf("no liveliness report for %s", limit.Round(time.Millisecond)))
}

// disarmStream stops the timers of an instance that exited.
func (f *Farm) disarmStream(inst *instance) {
	f.mu.Lock()
	defer f.mu.Unlock()
	w := inst.stream
	w.armed = false
	if w.silence != nil {
		w.silence.Stop()
	}
	if w.unused != nil {
		w.unused.Stop()
	}
}

// awaitLiveliness waits for a stream instance's ready report.
func (f *Farm) awaitLiveliness(ctx context.Context, inst *instance) error {
	select {
	case <-inst.stream.ready:
		return nil
	case <-inst.exited:
		return f.earlyExitError(inst)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
