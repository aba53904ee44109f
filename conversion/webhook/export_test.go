package webhook

import "net/netip"

// Refused reports whether host is an address of a refused kind.
func Refused(host string) bool {
	a, err := netip.ParseAddr(normalizeHost(host))
	return err == nil && refusedKind(a) != ""
}
