package placement

import (
	"errors"
	"net"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farmapi"
)

// connectorFarm is a local farm that connects to the instances of pool
// "adapted" itself (a Connector); the others are dialled.
type connectorFarm struct {
	*localFarm
	mu     sync.Mutex
	peers  map[string]net.Conn // instance: the farm's end of its pair
	failAt int                 // the nth ConnectInstance fails; 0: none
	calls  int
}

var _ Connector = (*connectorFarm)(nil)

func (f *connectorFarm) ConnectInstance(info farmapi.Instance) (net.Conn, bool, error) {
	if info.Pool != "adapted" {
		return nil, false, nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls == f.failAt {
		return nil, true, errors.New("the instance went before it was connected")
	}
	ours, theirs := net.Pipe()
	f.peers[info.ID] = ours
	return theirs, true, nil
}

// attacher records the connections placement attached, by the pair end.
type attacher struct {
	mu    sync.Mutex
	conns map[net.Conn]*fakeConn
}

func (a *attacher) attach(conn net.Conn, lost func(error)) (Conn, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := &fakeConn{lost: lost}
	a.conns[conn] = c
	return c, nil
}

// TestConnector: an instance its farm serves in this process is attached
// over the farm's connection, not dialled; the farm's other instances are
// dialled; a connection that fails stops the instance; a loss reported on
// an attached connection reaches the holder.
func TestConnector(t *testing.T) {
	d := &dialer{}
	a := &attacher{conns: map[net.Conn]*fakeConn{}}
	tp := newTestPlacer(t, Config{Dial: d.dial, Attach: a.attach,
		Pools: []Pool{{Name: "adapted"}, {Name: "native"}}})
	f := &connectorFarm{localFarm: newLocalFarm("f", 4, "adapted", "native"), peers: map[string]net.Conn{}, failAt: 2}
	tp.AddFarm(f)

	h1 := newHolder("h1", "adapted")
	i1 := tp.acquire(t, h1, false)
	require.Nil(t, d.conn(i1), "not dialled")
	f.mu.Lock()
	require.Contains(t, f.peers, i1.ID())
	f.mu.Unlock()
	require.Len(t, a.conns, 1)
	var attached *fakeConn
	for _, c := range a.conns {
		attached = c
	}
	require.Same(t, attached, i1.Conn(), "the instance runs on the attached connection")

	i2 := tp.acquire(t, newHolder("h2", "native"), false)
	require.NotNil(t, d.conn(i2), "an instance of its own port is dialled")
	require.Same(t, d.conn(i2), i2.Conn())

	// The farm's second connection fails: that instance is stopped, and
	// the holder gets the next one.
	i3 := tp.acquire(t, newHolder("h3", "adapted"), false)
	require.Len(t, f.stops(), 1, "the instance whose connection failed")
	require.NotEqual(t, f.stops()[0], i3.ID())
	require.Len(t, a.conns, 2)

	attached.lost(errors.New("the pair broke"))
	require.ErrorContains(t, <-h1.lost, "the pair broke")
}
