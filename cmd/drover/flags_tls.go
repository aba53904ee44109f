package main

import "github.com/spf13/pflag"

// tlsFlags are the flags of app.TLSConfig: `drover up` and `drover
// manager`.
func tlsFlags(fs *pflag.FlagSet) {
	fs.String("tls-cert", "", "serve https and wss with this certificate chain (PEM file; re-read on SIGHUP)")
	fs.String("tls-key", "", "the private key of --tls-cert (PEM file; re-read on SIGHUP)")
	fs.String("farm-ca", "", "CA bundle of the farms (PEM file; re-read on SIGHUP): verify farms' wss, and require farms to present a client certificate of it (needs --tls-cert)")
}

// farmTLSFlags are the flags of app.FarmTLSConfig: `drover farm`.
func farmTLSFlags(fs *pflag.FlagSet) {
	fs.String("tls-cert", "", "serve the farm's API and instances over https and wss with this certificate chain (PEM file; re-read on SIGHUP)")
	fs.String("tls-key", "", "the private key of --tls-cert (PEM file; re-read on SIGHUP)")
	fs.String("manager-ca", "", "CA bundle to verify https managers with (PEM file; default the system's roots; re-read on SIGHUP)")
	fs.String("tls-client-cert", "", "client certificate shown to managers that require one (their --farm-ca; PEM file; re-read on SIGHUP)")
	fs.String("tls-client-key", "", "the private key of --tls-client-cert (PEM file; re-read on SIGHUP)")
}

// schemes are the URL schemes of a listener: http and ws, or https and
// wss with TLS.
func schemes(tls bool) (web, ws string) {
	if tls {
		return "https", "wss"
	}
	return "http", "ws"
}
