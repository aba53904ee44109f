package main

import (
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/internal/lib/httpguard"
	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
)

// hardenFlags are the flags of app.HardenConfig: the HTTP servers' limits;
// a manager's bound on request bodies too.
func hardenFlags(fs *pflag.FlagSet, manager bool) {
	fs.Duration("http-read-header-timeout", httpguard.DefaultReadHeader, "time a client has to send a request's headers")
	fs.Duration("http-read-timeout", 0, "time a client has to send a whole request, body included; 0: off (bodies are paced by --http-body-timeout)")
	fs.Duration("http-write-timeout", 0, "time to write a whole response; 0: off (it would cut event streams, long polls and downloads)")
	fs.Duration("http-idle-timeout", httpguard.DefaultIdle, "how long a kept-alive connection waits for its next request")
	fs.Duration("http-body-timeout", httpguard.DefaultBody, "a request body must deliver --http-body-min-bytes within each such period")
	fs.Int64("http-body-min-bytes", httpguard.DefaultBodyMinBytes, "see --http-body-timeout")
	fs.Duration("http-write-stall-timeout", httpguard.DefaultWriteStall, "each write of a response must be taken by the client within this (off with --http-write-timeout)")
	fs.Int("http-max-header-bytes", httpguard.DefaultMaxHeaderBytes, "largest request header block in bytes")
	if !manager {
		return
	}
	fs.Int64("http-max-body-bytes", bodylimit.DefaultBodyLimit, "largest request body of routes that set no bound of their own (uploads and /execute do)")
	fs.StringSlice("trusted-proxies", nil, "load balancers in front of the manager (addresses or CIDRs, repeatable): the client's address is then read from X-Forwarded-For, for the limits per address and the audit lines")
}
