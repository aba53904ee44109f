package auth

import (
	"encoding/json"
	"net/http"
	"strings"
)

// Where a credential was found, for log lines.
const (
	fromHeader      = "authorization"
	fromSubprotocol = "subprotocol"
	fromQuery       = "query"
	fromCSAPIArg    = "cs-api-arg"
)

// subprotocolPrefix marks the WebSocket subprotocol entry that carries a
// token: "bearer.<token>". Browsers cannot set headers on a WebSocket but
// can offer subprotocols, and the characters of JWTs and API keys are all
// allowed in one.
const subprotocolPrefix = "bearer."

// CSAPIArgHeader is the header hc-caas clients send their arguments in,
// as JSON; its accessKey member is an API key.
const CSAPIArgHeader = "CS-API-Arg"

// maxCSAPIArg bounds the header this package parses.
const maxCSAPIArg = 8 << 10

// bearerToken is the token of an "Authorization: Bearer <token>" header
// (the scheme in any case, RFC 7235).
func bearerToken(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !strings.EqualFold(h[:7], "bearer ") {
		return ""
	}
	return strings.TrimSpace(h[7:])
}

// subprotocols are the entries of every Sec-WebSocket-Protocol header of
// r, in order.
func subprotocols(r *http.Request) []string {
	var out []string
	for _, h := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(h, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

// subprotocolToken is the token of the first "bearer.<token>" entry.
func subprotocolToken(r *http.Request) string {
	for _, p := range subprotocols(r) {
		if t, ok := strings.CutPrefix(p, subprotocolPrefix); ok && t != "" {
			return t
		}
	}
	return ""
}

// Subprotocol is the WebSocket subprotocol a server should answer r's
// upgrade with: the first one offered that does not carry a token ("drover"
// when the client offered "drover, bearer.<token>"), "" when there is
// none. A browser closes the connection when the server answers with no
// subprotocol although it offered some, and the token must not be echoed.
func Subprotocol(r *http.Request) string {
	for _, p := range subprotocols(r) {
		if !strings.HasPrefix(p, subprotocolPrefix) {
			return p
		}
	}
	return ""
}

// CSAPIArgAccessKey is the accessKey member of a CS-API-Arg header value,
// "" when the value is not a JSON object with a string accessKey or is
// longer than 8 KiB.
func CSAPIArgAccessKey(h string) string {
	if h == "" || len(h) > maxCSAPIArg {
		return ""
	}
	var arg struct {
		AccessKey string `json:"accessKey"`
	}
	if err := json.Unmarshal([]byte(h), &arg); err != nil {
		return ""
	}
	return arg.AccessKey
}
