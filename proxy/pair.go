package proxy

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pair is one relayed connection: the hijacked client side and the dialed
// upstream side. The goroutine of ServeWebSocket watches it (run) while two
// goroutines copy, one per direction.
type pair struct {
	up       net.Conn // TCP, or TLS over TCP
	upstream string

	// Guarded by Relay.mu: Shutdown reaches pairs through the registry.
	client  net.Conn
	stopped bool
	stop    chan struct{} // closed by Shutdown
}

// signalStop asks run to end the relay. Called with Relay.mu held.
func (p *pair) signalStop() {
	if !p.stopped {
		p.stopped = true
		close(p.stop)
	}
}

// forceClose closes both sides at once. Called with Relay.mu held.
func (p *pair) forceClose() {
	_ = p.up.Close()
	if p.client != nil {
		_ = p.client.Close()
	}
}

// copied is what a copy goroutine reports when its direction ends.
type copied struct {
	toUpstream bool
	n          int64
	err        error // nil at a clean EOF
}

// run relays until both directions have ended and returns the stats. head is
// written to the client first (the 101 and any stream bytes the upstream sent
// with it, downEarly of them), then upEarly to the upstream.
func (p *pair) run(ctx context.Context, r *Relay, head []byte, downEarly int, upEarly []byte) Stats {
	start := time.Now()
	client, up := p.client, p.up
	st := Stats{Down: int64(downEarly), Up: int64(len(upEarly))}
	if _, err := client.Write(head); err != nil {
		p.closeBoth()
		st.Err, st.Duration = err, time.Since(start)
		return st
	}
	if len(upEarly) > 0 {
		if _, err := up.Write(upEarly); err != nil {
			p.closeBoth()
			st.Err, st.Duration = err, time.Since(start)
			return st
		}
	}

	// The idle check needs to know whether bytes moved. Where the kernel
	// counts them per socket, the copy loops stay plain io.Copy calls, which
	// splice; elsewhere they count what they read.
	var meter activityMeter
	var counter *countMeter
	var idleC <-chan time.Time
	if idle := r.opts.IdleTimeout; idle > 0 {
		if r.tcpInfo {
			meter = newTCPMeter(client, up)
		}
		if meter == nil {
			counter = new(countMeter)
			meter = counter
		}
		t := time.NewTicker(max(idle/4, time.Millisecond))
		defer t.Stop()
		idleC = t.C
	}
	var lifeC <-chan time.Time
	if r.opts.MaxLifetime > 0 {
		t := time.NewTimer(r.opts.MaxLifetime)
		defer t.Stop()
		lifeC = t.C
	}

	// Buffered for both, so a copy goroutine never waits for the watcher.
	done := make(chan copied, 2)
	go copyDirection(done, true, up, client, counter)
	go copyDirection(done, false, client, up, counter)

	var (
		running   = 2
		ending    bool // a direction has ended or the relay is stopping
		stopping  bool // the relay ends the connection itself
		closed    bool // both sides are closed already
		closeWhy  string
		linger    *time.Timer
		lingerC   <-chan time.Time
		stopC     = p.stop
		ctxDone   = ctx.Done()
		lastBytes uint64
		lastMove  = start
	)
	if meter != nil {
		lastBytes = meter.sample()
	}
	// stopRelay makes both copy loops return at once: a deadline in the past
	// fails blocked reads and writes. The close frames go out after they
	// have returned, so they never interleave with a write in flight.
	stopRelay := func(err error, why string) {
		if stopping || closed {
			return
		}
		stopping, closeWhy = true, why
		if !ending {
			ending, st.Err = true, err
		}
		idleC, lifeC, stopC, ctxDone = nil, nil, nil, nil
		_ = client.SetDeadline(aLongTimeAgo)
		_ = up.SetDeadline(aLongTimeAgo)
	}
	closeNow := func() {
		closed = true
		p.closeBoth()
	}
	for running > 0 {
		select {
		case c := <-done:
			running--
			if c.toUpstream {
				st.Up += c.n
			} else {
				st.Down += c.n
			}
			if ending {
				continue
			}
			ending = true
			if c.err != nil {
				st.Err = c.err
				closeNow()
				continue
			}
			// A side closed its half: pass the close on and give the
			// other direction a moment to finish.
			dst := net.Conn(client)
			if c.toUpstream {
				dst = up
			}
			if cw, ok := dst.(interface{ CloseWrite() error }); !ok || cw.CloseWrite() != nil {
				closeNow()
				continue
			}
			linger = time.NewTimer(closeLinger)
			lingerC = linger.C
		case <-lingerC:
			lingerC = nil
			closeNow()
		case now := <-idleC:
			if b := meter.sample(); b != lastBytes {
				lastBytes, lastMove = b, now
			} else if now.Sub(lastMove) >= r.opts.IdleTimeout {
				stopRelay(ErrIdleTimeout, "idle timeout")
			}
		case <-lifeC:
			stopRelay(ErrMaxLifetime, "maximum lifetime reached")
		case <-stopC:
			stopRelay(ErrClosed, "server shutting down")
		case <-ctxDone:
			stopRelay(context.Cause(ctx), "going away")
		}
	}
	if linger != nil {
		linger.Stop()
	}
	if stopping && !closed {
		p.writeCloseFrames(r, closeWhy)
	}
	p.closeBoth()
	st.Duration = time.Since(start)
	return st
}

// writeCloseFrames sends a 1001 close frame to both sides, best effort.
func (p *pair) writeCloseFrames(r *Relay, reason string) {
	var buf [maxCloseFrame]byte
	deadline := time.Now().Add(closeFrameTimeout)
	_ = p.client.SetWriteDeadline(deadline)
	if _, err := p.client.Write(appendCloseFrame(buf[:0], CloseGoingAway, reason, false, [4]byte{})); err != nil {
		r.log.Debug("websocket relay: close frame to client", "upstream", p.upstream, "err", err)
	}
	// Towards the upstream the relay is the client, so the frame is masked.
	_ = p.up.SetWriteDeadline(deadline)
	if _, err := p.up.Write(appendCloseFrame(buf[:0], CloseGoingAway, reason, true, newMaskKey())); err != nil {
		r.log.Debug("websocket relay: close frame to upstream", "upstream", p.upstream, "err", err)
	}
}

func (p *pair) closeBoth() {
	_ = p.client.Close()
	_ = p.up.Close()
}

// copyDirection copies src to dst until EOF or an error and reports it. With
// no counter it is a plain io.Copy: between two *net.TCPConn on Linux that is
// splice(2), the bytes never enter user space.
func copyDirection(done chan<- copied, toUpstream bool, dst, src net.Conn, counter *countMeter) {
	var n int64
	var err error
	if counter == nil {
		n, err = io.Copy(dst, src)
	} else {
		buf := copyBufs.Get().(*[]byte)
		n, err = io.CopyBuffer(writerOnly{dst}, countingReader{src, counter}, *buf)
		copyBufs.Put(buf)
	}
	done <- copied{toUpstream: toUpstream, n: n, err: err}
}

// activityMeter yields a number that changes whenever bytes move through a
// pair, in either direction.
type activityMeter interface {
	sample() uint64
}

// countMeter counts the bytes the copy loops read; it is the portable
// activityMeter, used where the kernel's counters are not available.
type countMeter struct{ atomic.Uint64 }

func (m *countMeter) sample() uint64 { return m.Load() }

type countingReader struct {
	r io.Reader
	m *countMeter
}

func (c countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.m.Add(uint64(n))
	}
	return n, err
}

// writerOnly hides dst's ReadFrom, which would bypass the pooled buffer.
type writerOnly struct{ io.Writer }

var copyBufs = sync.Pool{New: func() any {
	b := make([]byte, 32<<10)
	return &b
}}
