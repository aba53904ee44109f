package manager

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// The client's address behind trusted proxies comes from X-Forwarded-For,
// read from the right; a client cannot choose it by sending the header
// itself, and without trusted proxies the header is ignored.
func TestClientAddr(t *testing.T) {
	req := func(peer string, xff ...string) *http.Request {
		r := &http.Request{RemoteAddr: peer, Header: http.Header{}}
		for _, v := range xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		return r
	}
	none := &Manager{}
	require.Equal(t, "10.0.0.5:4000", none.clientAddr(req("10.0.0.5:4000", "1.2.3.4")))

	proxies, err := parseProxies([]string{"10.0.0.0/24", "::1"})
	require.NoError(t, err)
	m := &Manager{proxies: proxies}
	for _, c := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"untrusted peer", "192.0.2.9:1000", []string{"1.2.3.4"}, "192.0.2.9:1000"},
		{"trusted peer", "10.0.0.5:4000", []string{"198.51.100.7"}, "198.51.100.7"},
		{"forged first entry", "10.0.0.5:4000", []string{"6.6.6.6, 198.51.100.7"}, "198.51.100.7"},
		{"two proxies", "10.0.0.5:4000", []string{"198.51.100.7, 10.0.0.9"}, "198.51.100.7"},
		{"several headers", "[::1]:4000", []string{"6.6.6.6", "198.51.100.7"}, "198.51.100.7"},
		{"no header", "10.0.0.5:4000", nil, "10.0.0.5:4000"},
		{"garbage", "10.0.0.5:4000", []string{"nonsense"}, "10.0.0.5:4000"},
		{"only proxies", "10.0.0.5:4000", []string{"10.0.0.7"}, "10.0.0.5:4000"},
	} {
		require.Equal(t, c.want, m.clientAddr(req(c.peer, c.xff...)), c.name)
	}
	_, err = parseProxies([]string{"not-an-address"})
	require.Error(t, err)
}
