package redisx_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/redisx"
	"github.com/drover-dev/drover/internal/testkit/redistest"
)

var errDown = errors.New("pkg: unavailable")

func newClient(t *testing.T, url string, resp2 bool) *redisx.Client {
	t.Helper()
	c, err := redisx.New(redisx.Options{URL: url, OpTimeout: 300 * time.Millisecond, RESP2: resp2, Pkg: "pkg", Unavailable: errDown})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestNewOptions: the timeout fills what the URL leaves unset, RESP2 only
// where the URL names no protocol.
func TestNewOptions(t *testing.T) {
	c := newClient(t, "redis://127.0.0.1:1/0?read_timeout=2s", true)
	o := c.Options()
	require.True(t, o.ContextTimeoutEnabled)
	require.Equal(t, 2, o.Protocol)
	require.Equal(t, 1, o.DialerRetries)
	require.Equal(t, 2*time.Second, o.ReadTimeout, "the URL wins")
	require.Equal(t, 300*time.Millisecond, o.DialTimeout)
	require.Equal(t, 300*time.Millisecond, o.WriteTimeout)
	require.Equal(t, 300*time.Millisecond, o.PoolTimeout)

	require.Equal(t, 3, newClient(t, "redis://127.0.0.1:1/0?protocol=3", true).Options().Protocol)
	require.NotEqual(t, 2, newClient(t, "redis://127.0.0.1:1/0", false).Options().Protocol)

	_, err := redisx.New(redisx.Options{URL: "redis://127.0.0.1:1/0", Pkg: "pkg"})
	require.Error(t, err, "no timeout")
}

// TestURLError: errors about a URL never carry its password, and start
// with the package's name.
func TestURLError(t *testing.T) {
	for _, url := range []string{
		"redis://:hunter2%zzSecret@127.0.0.1:6379/0",
		"redis://:hunter2/Secret@127.0.0.1:6379/0",
		"redis://:hunter2Secret@127.0.0.1:6379/db",
		"http://:hunter2Secret@127.0.0.1:6379/0",
		"redis://:hunter2Secret@host:port:x/0",
	} {
		_, err := redisx.New(redisx.Options{URL: url, OpTimeout: time.Second, Pkg: "pkg", Unavailable: errDown})
		require.Error(t, err, url)
		require.Contains(t, err.Error(), "pkg: redis URL ")
		require.NotContains(t, err.Error(), "hunter2")
		require.NotContains(t, err.Error(), "Secret")
	}
}

// TestFail: a server that cannot be used is the package's sentinel; a reply
// is not; a caller that cancelled gets its context error alone.
func TestFail(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.URL(), false)
	ctx := t.Context()

	err := c.Do(ctx, "NOSUCHCOMMAND").Err()
	require.False(t, redisx.Unavailable(err))
	err = c.Fail(ctx, "nosuch", err)
	require.NotErrorIs(t, err, errDown)
	require.ErrorContains(t, err, "pkg: redis nosuch: ")

	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	down := newClient(t, "redis://"+addr+"/0", false)
	octx, cancel := down.Op(ctx)
	defer cancel()
	err = down.Ping(octx).Err()
	require.True(t, redisx.Unavailable(err))
	err = down.Fail(ctx, "ping", err)
	require.ErrorIs(t, err, errDown)
	var netErr net.Error
	require.ErrorAs(t, err, &netErr, "the go-redis error is kept")
	require.Equal(t, "pkg: unavailable: redis ping: ", err.Error()[:len("pkg: unavailable: redis ping: ")])

	require.True(t, redisx.Unavailable(redis.ErrClosed))
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	require.NotErrorIs(t, down.Fail(cctx, "ping", redis.ErrClosed), errDown)
}

// TestSubscribeConfirmed: a message published once it returns arrives; a
// server that is down is the package's sentinel.
func TestSubscribeConfirmed(t *testing.T) {
	srv := redistest.Start(t)
	c := newClient(t, srv.URL(), true)
	ctx := t.Context()
	ps, err := c.SubscribeConfirmed(ctx, "ch")
	require.NoError(t, err)
	defer ps.Close()
	require.NoError(t, c.Publish(ctx, "ch", "hi").Err())
	select {
	case m := <-ps.Channel():
		require.Equal(t, "hi", m.Payload)
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}

	srv.Stop()
	_, err = c.SubscribeConfirmed(ctx, "ch")
	require.ErrorIs(t, err, errDown)
}
