package webhook

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Errors of URL checks, at ValidateURL and Send, and of refused dials.
var (
	// ErrInvalidURL: not an http or https URL with a host, or one with
	// credentials in it.
	ErrInvalidURL = errors.New("webhook: invalid url")
	// ErrNotAllowed: the host, or every address it resolves to, is
	// refused by the Policy.
	ErrNotAllowed = errors.New("webhook: destination not allowed")
)

// maxURLLen bounds a webhook URL.
const maxURLLen = 2048

// Policy says which hosts webhooks may reach. The zero Policy refuses
// loopback, link-local, private, shared, unspecified, multicast and
// reserved addresses and allows every other.
type Policy struct {
	// AllowHosts are hosts that may be reached whatever they resolve to,
	// refused kinds of address included: a host exactly ("hooks.corp",
	// "127.0.0.1", "::1") or "*.suffix" for every host below suffix
	// ("*.corp.example" allows "a.corp.example", not "corp.example").
	// Case and a trailing dot do not matter; names are ASCII (punycode);
	// a pattern has no port. "*" alone allows every host and turns the
	// address check off: for development only.
	AllowHosts []string
	// AllowOnly refuses every host not in AllowHosts, public ones too.
	AllowOnly bool
}

// hostPolicy is a Policy made ready for matching.
type hostPolicy struct {
	exact    map[string]bool
	suffixes []string // ".corp.example"
	any      bool
	only     bool
}

func (p Policy) compile() (*hostPolicy, error) {
	hp := &hostPolicy{exact: map[string]bool{}, only: p.AllowOnly}
	for _, pat := range p.AllowHosts {
		s := strings.TrimSpace(pat)
		switch {
		case s == "*":
			hp.any = true
		case strings.HasPrefix(s, "*."):
			suffix := normalizeHost(s[2:])
			if suffix == "" || strings.ContainsAny(suffix, "*/:[] ") {
				return nil, fmt.Errorf("webhook: allow-list entry %q: want a host or *.suffix", pat)
			}
			hp.suffixes = append(hp.suffixes, "."+suffix)
		default:
			h := normalizeHost(s)
			if _, err := netip.ParseAddr(h); err != nil && (h == "" || strings.ContainsAny(h, "*/:[] ")) {
				return nil, fmt.Errorf("webhook: allow-list entry %q: want a host or *.suffix, no port", pat)
			}
			hp.exact[h] = true
		}
	}
	return hp, nil
}

// normalizeHost makes a host comparable: lower case, no brackets, no
// trailing dot, an IPv4-mapped IPv6 address as IPv4, no IPv6 zone.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().WithZone("").String()
	}
	return h
}

// allowed reports whether the normalized host h is allow-listed.
func (hp *hostPolicy) allowed(h string) bool {
	if hp.any || hp.exact[h] {
		return true
	}
	for _, s := range hp.suffixes {
		if strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// ValidateURL checks a webhook URL up front, as an item is created: an
// http or https URL with a host and no credentials, whose host is
// allow-listed, or else (unless AllowOnly) neither an address of a refused
// kind nor a loopback name. A host name passes until it is dialled: the
// addresses it resolves to are checked then, on every attempt. The error
// wraps ErrInvalidURL or ErrNotAllowed and names the host, never the path
// or query, which may hold a token.
func (p Policy) ValidateURL(raw string) error {
	hp, err := p.compile()
	if err != nil {
		return err
	}
	_, err = hp.validate(raw)
	return err
}

// ValidateURL checks raw with the zero Policy.
func ValidateURL(raw string) error { return Policy{}.ValidateURL(raw) }

func (hp *hostPolicy) validate(raw string) (*url.URL, error) {
	if len(raw) > maxURLLen {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidURL, maxURLLen)
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error repeats the whole URL; its cause names only the part
		// at fault.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("%w: %w", ErrInvalidURL, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("%w: the scheme must be http or https", ErrInvalidURL)
	case u.Opaque != "" || u.Host == "":
		return nil, fmt.Errorf("%w: no host", ErrInvalidURL)
	case u.User != nil:
		return nil, fmt.Errorf("%w: credentials in the url are not accepted; the signature authenticates the sender", ErrInvalidURL)
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("%w: port out of range", ErrInvalidURL)
		}
	}
	host := u.Hostname()
	if host == "" {
		return nil, fmt.Errorf("%w: no host", ErrInvalidURL)
	}
	if err := hp.checkHost(host); err != nil {
		return nil, err
	}
	return u, nil
}

// checkHost judges a host before it is resolved: an address by its kind,
// a name by the allow-list and the names that are loopback by definition.
func (hp *hostPolicy) checkHost(host string) error {
	h := normalizeHost(host)
	if h == "" || strings.HasPrefix(h, ".") || strings.Contains(h, "..") {
		return fmt.Errorf("%w: an empty label in the host", ErrInvalidURL)
	}
	if hp.allowed(h) {
		return nil
	}
	if hp.only {
		return fmt.Errorf("%w: %s is not on the webhook allow-list", ErrNotAllowed, h)
	}
	if a, err := netip.ParseAddr(h); err == nil {
		if kind := refusedKind(a); kind != "" {
			return fmt.Errorf("%w: %s is a %s address; allow-list the host to use it", ErrNotAllowed, h, kind)
		}
		return nil
	}
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return fmt.Errorf("%w: %s is a loopback name; allow-list the host to use it", ErrNotAllowed, h)
	}
	// A name whose last label is a number is an IPv4 address to browsers
	// and to some resolvers ("127.1", "0x7f.1", "2130706433"): refuse it
	// rather than guess how it would resolve.
	last := h[strings.LastIndexByte(h, '.')+1:]
	if last != "" && last[0] >= '0' && last[0] <= '9' {
		return fmt.Errorf("%w: %s is not a host name or a dotted IPv4 address", ErrInvalidURL, h)
	}
	return nil
}

// The refused ranges beyond what netip.Addr's predicates name.
var (
	v4Refused = []struct {
		p    netip.Prefix
		kind string
	}{
		{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
		{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
		{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
		{netip.MustParsePrefix("192.0.2.0/24"), "reserved"},
		{netip.MustParsePrefix("198.18.0.0/15"), "reserved"},
		{netip.MustParsePrefix("198.51.100.0/24"), "reserved"},
		{netip.MustParsePrefix("203.0.113.0/24"), "reserved"},
		{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	}
	v6Refused = []struct {
		p    netip.Prefix
		kind string
	}{
		{netip.MustParsePrefix("::/96"), "reserved"}, // IPv4-compatible, deprecated
		{netip.MustParsePrefix("64:ff9b:1::/48"), "private"},
		{netip.MustParsePrefix("100::/64"), "reserved"},
		{netip.MustParsePrefix("2001::/32"), "reserved"}, // Teredo
		{netip.MustParsePrefix("2001:db8::/32"), "reserved"},
		{netip.MustParsePrefix("fec0::/10"), "private"}, // site-local, deprecated
	}
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// refusedKind names the kind of an address webhooks may not reach
// ("loopback", "link-local", …), or is "" for one they may.
func refusedKind(a netip.Addr) string {
	a = a.Unmap().WithZone("") // a prefix never contains an address with a zone
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsLinkLocalUnicast():
		return "link-local" // 169.254.169.254, the cloud metadata service, among them
	case a.IsMulticast():
		return "multicast"
	case a.IsPrivate():
		return "private"
	}
	if a.Is4() {
		for _, r := range v4Refused {
			if r.p.Contains(a) {
				return r.kind
			}
		}
		return ""
	}
	// IPv6 addresses that carry an IPv4 one are judged by it.
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return refusedKind(netip.AddrFrom4([4]byte(b[12:16])))
	case sixTo4.Contains(a):
		return refusedKind(netip.AddrFrom4([4]byte(b[2:6])))
	}
	for _, r := range v6Refused {
		if r.p.Contains(a) {
			return r.kind
		}
	}
	return ""
}
