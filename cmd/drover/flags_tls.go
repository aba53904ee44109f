package main

import "github.com/spf13/pflag"

// tlsFlags are the flags of app.TLSConfig.
func tlsFlags(fs *pflag.FlagSet) {}
