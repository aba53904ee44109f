package main

import (
	"github.com/spf13/pflag"

	"github.com/drover-dev/drover/conversion/convert"
)

// converterFlags are the flags of app.ConverterRuntimeConfig: how a farm
// runs its converters, and their limits.
func converterFlags(fs *pflag.FlagSet) {
	fs.String("converter-runtime", "process", "where converters run: process (limited through prlimit) or docker (a container per converter command)")
	fs.String("converter-image", "", "with --converter-runtime docker: the image holding the converters, on the Docker host (never pulled)")
	fs.String("converter-memory", "", "memory limit of each converter, such as 2GiB: its container's memory, or a process's address space (empty: none)")
	fs.Duration("converter-cpu-time", 0, "CPU time limit of each converter process, such as 5m (0: none)")
	fs.Float64("converter-cpus", 0, "with --converter-runtime docker: CPUs each converter container may use, such as 1.5 (0: no limit)")
	fs.Duration("converter-timeout", convert.DefaultTimeout, "wall-clock limit of one conversion, all its converter commands together")
}
