package manager

import (
	"net/http"
	"strings"
)

// subprotocol is the first protocol r offers that is not a bearer token.
// Stand-in for auth.Subprotocol until package auth has it.
func subprotocol(r *http.Request) string {
	for _, p := range websocketProtocols(r) {
		if !strings.HasPrefix(p, "bearer.") {
			return p
		}
	}
	return ""
}

func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-Websocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}
