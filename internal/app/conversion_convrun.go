package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/farm"
)

// Converter runtimes of ConverterRuntimeConfig.ConverterRuntime.
const (
	ConverterProcess = "process"
	ConverterDocker  = "docker"
)

// ConverterRuntimeConfig says how a farm runs its converters, and within
// which limits: `--converter-runtime process|docker` and the rest.
type ConverterRuntimeConfig struct {
	// ConverterRuntime is "process" (the default: processes of the farm,
	// limited through prlimit) or "docker" (a container per converter
	// command, of ConverterImage).
	ConverterRuntime string `koanf:"converter_runtime"`
	// ConverterImage holds the converters, for the docker runtime. It must
	// be on the Docker host: drover does not pull it.
	ConverterImage string `koanf:"converter_image"`
	// ConverterMemory limits each converter's memory ("2GiB"): its
	// container's memory, or a process's address space. "" for none.
	ConverterMemory string `koanf:"converter_memory"`
	// ConverterCPUTime limits each converter process's CPU time; 0 for
	// none.
	ConverterCPUTime time.Duration `koanf:"converter_cpu_time"`
	// ConverterCPUs is each converter container's share of the CPUs; 0
	// for no limit. Docker runtime only.
	ConverterCPUs float64 `koanf:"converter_cpus"`
	// ConverterTimeout bounds one conversion, all its converter commands
	// together, in wall-clock time; 0 for convert.DefaultTimeout.
	ConverterTimeout time.Duration `koanf:"converter_timeout"`
}

// runner builds the converters' runner; owner names the farm's converter
// containers (convert.DockerConfig.Owner). The returned close releases it.
func (rc ConverterRuntimeConfig) runner(owner string, log *slog.Logger) (convert.Runner, func() error, error) {
	var memory int64
	if rc.ConverterMemory != "" {
		n, err := convert.ParseBytes(rc.ConverterMemory)
		if err != nil || n == 0 {
			return nil, nil, fmt.Errorf("bad --converter-memory %q: want a size such as 512MiB or 2GiB", rc.ConverterMemory)
		}
		memory = n
	}
	switch {
	case rc.ConverterCPUTime < 0:
		return nil, nil, errors.New("--converter-cpu-time must not be negative")
	case rc.ConverterTimeout < 0:
		return nil, nil, errors.New("--converter-timeout must not be negative")
	case rc.ConverterCPUs < 0:
		return nil, nil, errors.New("--converter-cpus must not be negative")
	}
	nop := func() error { return nil }
	switch rc.ConverterRuntime {
	case "", ConverterProcess:
		if rc.ConverterImage != "" || rc.ConverterCPUs != 0 {
			return nil, nil, errors.New("--converter-image and --converter-cpus are for --converter-runtime docker")
		}
		r := &convert.ProcessRunner{Memory: memory, CPUTime: rc.ConverterCPUTime}
		if err := r.Check(); err != nil {
			return nil, nil, err
		}
		return r, nop, nil
	case ConverterDocker:
		if rc.ConverterImage == "" {
			return nil, nil, errors.New("--converter-runtime docker needs --converter-image: an image on the Docker host holding the converters (docs/conversion.md has a Dockerfile)")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		r, err := convert.NewDockerRunner(ctx, convert.DockerConfig{
			Image:   rc.ConverterImage,
			Memory:  memory,
			CPUs:    rc.ConverterCPUs,
			CPUTime: rc.ConverterCPUTime,
			Owner:   owner,
			Logger:  log,
		})
		if err != nil {
			return nil, nil, err
		}
		return r, r.Close, nil
	}
	return nil, nil, fmt.Errorf("unknown --converter-runtime %q (want %s or %s)", rc.ConverterRuntime, ConverterProcess, ConverterDocker)
}

// upConverterOwner names the converter containers of `drover up`: after
// its address when that is fixed, so that the next run on it removes what
// a killed one left; a random name otherwise.
func upConverterOwner(addr string) string {
	if _, port, err := net.SplitHostPort(addr); err == nil && port != "" && port != "0" {
		return farm.StableID("up " + addr)
	}
	return farm.StableID("up " + time.Now().Format(time.RFC3339Nano))
}
