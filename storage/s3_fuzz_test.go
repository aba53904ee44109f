package storage

import (
	"strings"
	"testing"
)

// FuzzParseEndpoint: an endpoint from the configuration is host:port with
// a scheme or none, and an error never quotes it (it may hold a password).
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"", "127.0.0.1:7070", "http://127.0.0.1:7070", "https://s3.amazonaws.com",
		"http://user:pw@host", "ftp://x", "http://host/path", "host:1?x=y", "[::1]:9000", "http://[::1]:9000/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ep string) {
		host, _, err := parseEndpoint(ep, true)
		if err != nil {
			switch err.Error() {
			case "storage: the s3 endpoint must be host:port or http(s)://host:port",
				"storage: the s3 endpoint's scheme must be http or https":
			default:
				t.Fatalf("an error that may quote the endpoint: %v", err)
			}
			return
		}
		if host == "" || strings.ContainsAny(host, "/?#@") {
			t.Fatalf("endpoint %q gave host %q", ep, host)
		}
	})
}
