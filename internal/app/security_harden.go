package app

import (
	"time"

	"github.com/drover-dev/drover/internal/lib/httpguard"
	"github.com/drover-dev/drover/manager"
)

// HardenConfig: the limits of the HTTP servers drover runs (the public
// listener, the local farm's server, `drover farm`'s API). Zero values
// take httpguard's defaults, a negative duration turns a limit off; see
// httpguard.Timeouts for why the read and write timeouts are off unless
// set.
type HardenConfig struct {
	HTTPReadHeaderTimeout time.Duration `koanf:"http_read_header_timeout"`
	HTTPReadTimeout       time.Duration `koanf:"http_read_timeout"`
	HTTPWriteTimeout      time.Duration `koanf:"http_write_timeout"`
	HTTPIdleTimeout       time.Duration `koanf:"http_idle_timeout"`
	// HTTPBodyTimeout and HTTPBodyMinBytes: a request body must deliver
	// HTTPBodyMinBytes every HTTPBodyTimeout until it ends.
	HTTPBodyTimeout  time.Duration `koanf:"http_body_timeout"`
	HTTPBodyMinBytes int64         `koanf:"http_body_min_bytes"`
	// HTTPWriteStallTimeout: each write of a response must be taken by the
	// client within it.
	HTTPWriteStallTimeout time.Duration `koanf:"http_write_stall_timeout"`
	HTTPMaxHeaderBytes    int           `koanf:"http_max_header_bytes"`
	// HTTPMaxBodyBytes bounds the bodies of the manager's routes that set
	// no bound of their own (uploads and /execute do).
	HTTPMaxBodyBytes int64 `koanf:"http_max_body_bytes"`
	// TrustedProxies are the load balancers in front of a manager; see
	// manager.Config.TrustedProxies.
	TrustedProxies []string `koanf:"trusted_proxies"`
}

// httpTimeouts are the servers' limits.
func (h HardenConfig) httpTimeouts() httpguard.Timeouts {
	return httpguard.Timeouts{ReadHeader: h.HTTPReadHeaderTimeout, Read: h.HTTPReadTimeout,
		Write: h.HTTPWriteTimeout, Idle: h.HTTPIdleTimeout, Body: h.HTTPBodyTimeout,
		BodyMinBytes: h.HTTPBodyMinBytes, WriteStall: h.HTTPWriteStallTimeout, MaxHeaderBytes: h.HTTPMaxHeaderBytes}
}

// harden sets a manager's HTTP limits.
func (h HardenConfig) harden(mc manager.Config) manager.Config {
	mc.HTTP, mc.MaxBodyBytes, mc.TrustedProxies = h.httpTimeouts(), h.HTTPMaxBodyBytes, h.TrustedProxies
	return mc
}
