package main

import "github.com/spf13/pflag"

// limitsFlags are the flags of app.LimitsConfig.
func limitsFlags(fs *pflag.FlagSet) {}
