package webhook

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"syscall"
	"time"
)

// dialTimeout bounds connecting to one address; the attempt's timeout
// bounds the whole attempt.
const dialTimeout = 10 * time.Second

// guard dials webhook receivers: it resolves the host itself, drops the
// addresses the policy refuses, and dials only addresses it checked, so a
// name that resolves to a public address at ValidateURL and to a private
// one later (DNS rebinding) still cannot reach it.
type guard struct {
	policy *hostPolicy
	// lookup resolves a host name; tests replace it.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	// dial connects to an address already checked; tests replace it.
	dial func(ctx context.Context, network, addr string, check bool) (net.Conn, error)
}

func newGuard(hp *hostPolicy) *guard {
	return &guard{policy: hp, lookup: lookupNetIP, dial: dialChecked}
}

// refusedError is a dial the policy refused. It wraps ErrNotAllowed and
// names no address; a record shows only ClassNotAllowed anyway.
type refusedError struct{ why string }

func (e *refusedError) Error() string { return "webhook: destination not allowed: " + e.why }
func (e *refusedError) Unwrap() error { return ErrNotAllowed }

// DialContext is the transport's dialer.
func (g *guard) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("webhook: network %s: %w", network, ErrNotAllowed)
	}
	host, portStr, err := net.SplitHostPort(address)
	if err != nil {
		return nil, fmt.Errorf("webhook: dial: %w", err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("webhook: dial: bad port: %w", err)
	}
	h := normalizeHost(host)
	allowed := g.policy.allowed(h)
	if !allowed {
		if g.policy.only {
			return nil, &refusedError{"host not on the allow-list"}
		}
		// A name gets ValidateURL's judgement again (a URL validated under
		// an older policy gets no further than it would now); addresses
		// are judged below, one by one.
		if _, err := netip.ParseAddr(host); err != nil {
			if err := g.policy.checkHost(host); err != nil {
				return nil, err
			}
		}
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else if addrs, err = g.lookup(ctx, host); err != nil {
		return nil, err
	}
	var refused, dialErr error
	for _, a := range addrs {
		if is4 := a.Unmap().Is4(); network == "tcp4" && !is4 || network == "tcp6" && is4 {
			continue
		}
		if !allowed {
			if kind := refusedKind(a); kind != "" {
				if refused == nil {
					refused = &refusedError{kind + " address"}
				}
				continue
			}
		}
		conn, err := g.dial(ctx, network, netip.AddrPortFrom(a, uint16(port)).String(), !allowed)
		if err == nil {
			return conn, nil
		}
		if dialErr == nil {
			dialErr = err
		}
		if ctx.Err() != nil {
			break
		}
	}
	switch {
	case dialErr != nil:
		return nil, dialErr // a real dial error says more than a skipped address
	case refused != nil:
		return nil, refused
	}
	return nil, &net.DNSError{Err: "no usable address", Name: host, IsNotFound: true}
}

// lookupNetIP resolves host to addresses of both families.
func lookupNetIP(ctx context.Context, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// dialChecked connects to addr, an address and port. With check, a
// Control refuses the socket once more if its address is of a refused
// kind: the last word before a packet leaves.
func dialChecked(ctx context.Context, network, addr string, check bool) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	if check {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return fmt.Errorf("webhook: dial: %w", err)
			}
			if kind := refusedKind(ap.Addr()); kind != "" {
				return &refusedError{kind + " address"}
			}
			return nil
		}
	}
	return d.DialContext(ctx, network, addr)
}

// newClient is the HTTP client of a Sender: the guard's dialer, no proxy,
// no redirects followed.
func newClient(g *guard, tlsConfig *tls.Config) *http.Client {
	var tc *tls.Config
	if tlsConfig != nil {
		tc = tlsConfig.Clone()
	} else {
		tc = &tls.Config{}
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	tr := &http.Transport{
		Proxy:                  nil, // a proxy would resolve the host beyond the guard
		DialContext:            g.DialContext,
		TLSClientConfig:        tc,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxIdleConns:           64,
		MaxIdleConnsPerHost:    4,
		IdleConnTimeout:        60 * time.Second,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}
