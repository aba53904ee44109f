package webhook

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// dialRecorder replaces a guard's lookup and dial: names resolve as
// table says, and every dial is recorded before it is made.
type dialRecorder struct {
	table map[string][]netip.Addr
	mu    sync.Mutex
	dials []string
}

func (d *dialRecorder) install(g *guard) {
	g.lookup = func(_ context.Context, host string) ([]netip.Addr, error) {
		if a, ok := d.table[host]; ok {
			return a, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	g.dial = func(ctx context.Context, network, addr string, check bool) (net.Conn, error) {
		d.mu.Lock()
		d.dials = append(d.dials, addr)
		d.mu.Unlock()
		return dialChecked(ctx, network, addr, check)
	}
}

func (d *dialRecorder) dialled() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.dials...)
}

func addrs(s ...string) []netip.Addr {
	var out []netip.Addr
	for _, a := range s {
		out = append(out, netip.MustParseAddr(a))
	}
	return out
}

func TestGuardRefusesBeforeDialling(t *testing.T) {
	hp, err := Policy{AllowHosts: []string{"allowed.test"}}.compile()
	require.NoError(t, err)
	g := newGuard(hp)
	rec := &dialRecorder{table: map[string][]netip.Addr{
		"metadata.test": addrs("169.254.169.254"),
		"rebind.test":   addrs("127.0.0.1"),
		"mapped.test":   addrs("::ffff:10.0.0.1"),
		"private.test":  addrs("10.0.0.1", "192.168.0.1", "fd00::1"),
	}}
	rec.install(g)
	for _, addr := range []string{
		"169.254.169.254:80", "[fd00:ec2::254]:80", "127.0.0.1:80", "[::1]:443", "0.0.0.0:80",
		"metadata.test:80", "rebind.test:80", "mapped.test:80", "private.test:443", "localhost:80",
	} {
		_, err := g.DialContext(context.Background(), "tcp", addr)
		require.ErrorIs(t, err, ErrNotAllowed, addr)
		require.NotContains(t, err.Error(), "169.254", "a refused dial names no address")
	}
	require.Empty(t, rec.dialled(), "nothing is dialled towards a refused address")

	_, err = g.DialContext(context.Background(), "udp", "8.8.8.8:53")
	require.ErrorIs(t, err, ErrNotAllowed)
	_, err = g.DialContext(context.Background(), "tcp", "unknown.test:80")
	var dnsErr *net.DNSError
	require.ErrorAs(t, err, &dnsErr)
	require.Empty(t, rec.dialled())
}

// A name that resolves to both kinds is dialled only on its public
// addresses; an allow-listed name on any.
func TestGuardDialsOnlyCheckedAddresses(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port

	hp, err := Policy{AllowHosts: []string{"allowed.test"}}.compile()
	require.NoError(t, err)
	g := newGuard(hp)
	rec := &dialRecorder{table: map[string][]netip.Addr{
		"mixed.test":   addrs("127.0.0.1", "192.0.2.1", "203.0.113.9"),
		"allowed.test": addrs("127.0.0.1"),
	}}
	rec.install(g)

	_, err = g.DialContext(context.Background(), "tcp", net.JoinHostPort("mixed.test", "1"))
	require.ErrorIs(t, err, ErrNotAllowed, "documentation ranges are refused too")
	require.Empty(t, rec.dialled())

	conn, err := g.DialContext(context.Background(), "tcp", net.JoinHostPort("allowed.test", itoa(port)))
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	require.Equal(t, []string{"127.0.0.1:" + itoa(port)}, rec.dialled())
}

func itoa(n int) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(n)).String()[len("0.0.0.0:"):]
}

// The Control check refuses a refused address even if a caller got past
// the guard: the socket is refused before it connects.
func TestDialControl(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	_, err := dialChecked(context.Background(), "tcp", srv.Listener.Addr().String(), true)
	require.ErrorIs(t, err, ErrNotAllowed)
	conn, err := dialChecked(context.Background(), "tcp", srv.Listener.Addr().String(), false)
	require.NoError(t, err)
	require.NoError(t, conn.Close())
}

// DNS rebinding: a name that passes ValidateURL and resolves to a refused
// address when the attempt dials it ends the delivery failed, with nothing
// sent; and a name resolving to the metadata address is never dialled.
func TestSenderRefusesAtDialTime(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)

	reports := make(chan Record, 16)
	s, err := New(Options{
		Secret: "k", MinBackoff: time.Millisecond, MaxBackoff: time.Millisecond,
		Report: func(r Record) { reports <- r },
	})
	require.NoError(t, err)
	rec := &dialRecorder{table: map[string][]netip.Addr{
		"rebind.test":   addrs("127.0.0.1"),
		"metadata.test": addrs("169.254.169.254"),
		"v6.test":       addrs("::1"),
		"private.test":  addrs("10.1.2.3"),
		"mixed.test":    addrs("::ffff:127.0.0.1", "fd00:ec2::254"),
	}}
	rec.install(s.guard)
	require.NoError(t, s.Start())
	defer func() {
		_, err := s.Stop(context.Background())
		require.NoError(t, err)
	}()

	for _, host := range []string{"rebind.test", "metadata.test", "v6.test", "private.test", "mixed.test"} {
		target := "http://" + host + ":" + u.Port() + "/hook"
		require.NoError(t, s.ValidateURL(target), "a name passes until it is dialled")
		_, err := s.Send(Delivery{URL: target, Payload: Payload{ID: "i"}})
		require.NoError(t, err)
		r := <-reports
		require.Equal(t, StateFailed, r.State, host)
		require.Equal(t, ClassNotAllowed, r.LastError)
		require.Equal(t, 1, r.Attempts)
	}
	require.Empty(t, rec.dialled())
	require.Zero(t, hits.Load())
}

func TestRefusedKind(t *testing.T) {
	for addr, want := range map[string]string{
		"8.8.8.8": "", "1.1.1.1": "", "2606:4700:4700::1111": "", "172.32.0.1": "", "100.128.0.1": "",
		"127.0.0.1": "loopback", "::1": "loopback", "169.254.169.254": "link-local", "fe80::1%eth0": "link-local",
		"10.0.0.1": "private", "fd00:ec2::254": "private", "100.64.0.1": "shared (carrier-grade NAT)",
		"0.0.0.0": "unspecified", "::": "unspecified", "224.0.0.251": "multicast", "ff02::fb": "multicast",
		"::ffff:127.0.0.1": "loopback", "64:ff9b::a9fe:a9fe": "link-local", "64:ff9b::808:808": "",
		"2002:c0a8:101::": "private", "2002:808:808::": "", "2001:db8::1": "reserved", "240.0.0.1": "reserved",
	} {
		require.Equal(t, want, refusedKind(netip.MustParseAddr(addr)), addr)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"": 0, "0": 0, "-5": 0, "abc": 0, "120": 2 * time.Minute, " 7 ": 7 * time.Second, //nolint:gocritic // spaces are the case under test
		"99999999999999": maxRetryAfter,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
	} {
		require.Equal(t, want, parseRetryAfter(v, now), v)
	}
}

func TestBackoff(t *testing.T) {
	for n, want := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 3: 4 * time.Second, 10: 60 * time.Second, 1000: 60 * time.Second} {
		for range 50 {
			d := backoff(n, time.Second, time.Minute)
			require.GreaterOrEqual(t, d, want/2, n)
			require.LessOrEqual(t, d, want, n)
		}
	}
}

func TestClassify(t *testing.T) {
	bg := context.Background()
	canceled, cancel := context.WithCancel(bg)
	cancel()
	for _, tt := range []struct {
		err             error
		attempt, sender context.Context
		want            string
	}{
		{&net.OpError{Op: "dial", Err: errors.New("x")}, bg, canceled, ClassInterrupted},
		{&url.Error{Op: "Post", URL: "http://x", Err: &refusedError{"loopback address"}}, bg, bg, ClassNotAllowed},
		{&url.Error{Op: "Post", URL: "http://x", Err: context.DeadlineExceeded}, bg, bg, ClassTimeout},
		{&net.DNSError{Err: "no such host", IsNotFound: true}, bg, bg, ClassHostNotFound},
		{&net.DNSError{Err: "server misbehaving", IsTemporary: true}, bg, bg, ClassDNS},
		{errors.New("something else"), bg, bg, ClassNetwork},
	} {
		require.Equal(t, tt.want, classify(tt.attempt, tt.sender, tt.err), tt.err.Error())
	}
}
