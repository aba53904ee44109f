package main

import "github.com/spf13/pflag"

// securityFlags are the flags of app.SecurityConfig, each part's in a file
// of its own.
func securityFlags(fs *pflag.FlagSet) {
	authFlags(fs)
	limitsFlags(fs)
	tlsFlags(fs)
	hardenFlags(fs, true)
}
