package manager

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// parseProxies reads Config.TrustedProxies: addresses or CIDR prefixes.
func parseProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("manager: trusted proxy %q is not an address or a CIDR prefix", s)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

func (m *Manager) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range m.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// clientAddr is the address of the client behind r, as the limits per
// address, the audit lines and /status know it: the peer, or, when the
// peer is a trusted proxy (Config.TrustedProxies), the last address of
// X-Forwarded-For that is not one. A client cannot choose its address by
// sending the header itself: entries are read from the right, and the
// first one no trusted proxy added is the answer.
func (m *Manager) clientAddr(r *http.Request) string {
	if len(m.proxies) == 0 {
		return r.RemoteAddr
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil || !m.trusted(peer) {
		return r.RemoteAddr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return r.RemoteAddr // a header we cannot read: the peer is all we know
		}
		if !m.trusted(a) {
			return a.Unmap().String()
		}
	}
	return r.RemoteAddr
}
