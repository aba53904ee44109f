package main

import "github.com/spf13/pflag"

// authFlags are the flags of app.AuthConfig.
func authFlags(fs *pflag.FlagSet) {}
