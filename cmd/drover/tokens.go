package main

import (
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/conversion/api"
)

// tokenFlags are the flags of app.TokenConfig.
func tokenFlags(fs *pflag.FlagSet) {
	fs.String("url-secret", "", "secret that signs upload and download token URLs (prefer DROVER_URL_SECRET; empty: one kept in the data directory)")
	fs.String("public-url", "", "base URL of token URLs as clients reach drover, e.g. https://drover.example.com (empty: the request's host)")
	fs.Bool("trust-forwarded", false, "take token URLs' base from X-Forwarded-Proto and X-Forwarded-Host (only behind a proxy that sets them)")
	fs.Duration("token-ttl", api.DefaultTokenTTL, "how long an upload or download token works")
}
