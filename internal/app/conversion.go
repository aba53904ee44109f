package app

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/internal/lib/cleanup"
	"github.com/drover-dev/drover/storage"
)

// ConversionConfig configures the conversion service of `drover up` and
// `drover manager`.
type ConversionConfig struct {
	// Data is the data directory: uploads, outputs and, without Redis,
	// the item records. Managers that share Redis share this directory
	// (a network filesystem), or keep the files in S3 (S3Config).
	Data string `koanf:"data"`
	// MaxUpload bounds one item's uploads, in bytes.
	MaxUpload int64 `koanf:"max_upload"`
	// WebhookSecret signs webhooks (prefer DROVER_WEBHOOK_SECRET).
	WebhookSecret string `koanf:"webhook_secret"`
	// WebhookAllow are the hosts webhooks may reach although they are
	// private or loopback addresses; see webhook.Policy.
	WebhookAllow []string `koanf:"webhook_allow"`
	// WebhookRetryFor is how long a webhook is retried;
	// WebhookMinBackoff the wait before its first retry, doubled for each
	// further one.
	WebhookRetryFor   time.Duration `koanf:"webhook_retry_for"`
	WebhookMinBackoff time.Duration `koanf:"webhook_min_backoff"`
	// MaxAttempts is how many times a job is tried before it ends
	// ERROR - Conversion Error.
	MaxAttempts int `koanf:"max_attempts"`
	// JobLease is a job lease's length; farms renew it at a third.
	JobLease time.Duration `koanf:"job_lease"`
	// Streaming sessions.
	StreamConfig `koanf:",squash"`
	// S3 puts the files in a bucket (conversion_s3.go).
	S3 S3Config `koanf:",squash"`
	// Upload and download tokens.
	TokenConfig `koanf:",squash"`

	RetentionConfig `koanf:",squash"`
	// Quotas of each tenant's items.
	TenancyConfig `koanf:",squash"`
}

// conversion builds package drover's Conversion: on Redis (items and
// queue) when redisURL is set, in the process otherwise; what it opens is
// pushed on cleanups.
func (cc ConversionConfig) conversion(redisURL string, jobSlots int, log *slog.Logger, cleanups *cleanup.Stack) (*drover.Conversion, error) {
	quota, err := cc.quota()
	if err != nil {
		return nil, err
	}
	c := &drover.Conversion{
		Quota:     quota,
		DataDir:   cmp.Or(cc.Data, drover.DefaultDataDir),
		MaxUpload: cc.MaxUpload,
		JobSlots:  jobSlots,
		QueueOptions: queue.Options{MaxAttempts: cc.MaxAttempts, Lease: cc.JobLease,
			MaxLease: max(cc.JobLease, queue.DefaultMaxLease)},
		Webhook: webhook.Options{Secret: webhook.Secret(cc.WebhookSecret),
			Policy: webhook.Policy{AllowHosts: cc.WebhookAllow}, RetryFor: cc.WebhookRetryFor,
			MinBackoff: cc.WebhookMinBackoff},
		StreamPool: cc.StreamPool,
		Tokens:     cc.tokens(),
		Retention:  cc.retention(),
	}
	if cc.S3.Enabled() {
		st, err := cc.S3.open(log.With("component", "storage"))
		if err != nil {
			return nil, err
		}
		c.Storage, c.PresignTTL = st, cc.S3.PresignTTL
		if redisURL == "" {
			if c.Items, err = localItems(c.DataDir, log.With("component", "items"), cleanups); err != nil {
				return nil, err
			}
			return c, nil
		}
	}
	if redisURL == "" {
		return c, nil
	}
	// Several managers: items and the queue in Redis, files in the bucket
	// or the shared data directory.
	if c.Storage == nil {
		if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
		st, err := storage.NewFS(c.DataDir)
		if err != nil {
			return nil, err
		}
		cleanups.PushFunc("storage", st.Close)
		c.Storage = st
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	is, err := items.NewRedis(ctx, items.RedisOptions{URL: redisURL, Logger: log.With("component", "items")})
	if err != nil {
		return nil, fmt.Errorf("conversion items: %w", err)
	}
	cleanups.PushFunc("items", is.Close)
	c.Items = is
	q, err := queue.NewRedis(ctx, c.QueueOptions, queue.RedisOptions{URL: redisURL, Logger: log.With("component", "queue")})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("conversion queue: %w", err))
	}
	cleanups.PushFunc("queue", q.Close)
	c.Queue = q
	return c, nil
}

// ConverterConfig is a converter a farm adds or replaces: files ending in
// Ext are converted to GLB by Argv, in which {in}, {out} and {dir} are
// replaced by the input's path, the output's and the work directory
// (convert.Exec). Mesh says that assimp reads the format too (for STL and
// OBJ outputs).
type ConverterConfig struct {
	Ext  string   `koanf:"ext"`
	Argv []string `koanf:"argv"`
	Mesh bool     `koanf:"mesh"`
}

// converter builds a farm's converter: the Debian converters, with the
// configured ones added, run as rc says; owner names its containers. What
// it opens is pushed on cleanups.
func converter(cfgs []ConverterConfig, rc ConverterRuntimeConfig, owner string, log *slog.Logger, cleanups *cleanup.Stack) (*convert.Converter, error) {
	reg := convert.NewRegistry(convert.Programs{})
	for _, c := range cfgs {
		if c.Ext == "" || len(c.Argv) == 0 {
			return nil, errors.New("a converter needs ext and argv")
		}
		if c.Ext[0] != '.' {
			c.Ext = "." + c.Ext
		}
		reg.Register(c.Ext, convert.Entry{GLB: convert.Exec{Argv: c.Argv}, Mesh: c.Mesh})
	}
	runner, closeRunner, err := rc.runner(owner, log)
	if err != nil {
		return nil, err
	}
	cleanups.PushFunc("converter runtime", closeRunner)
	conv, err := convert.New(convert.Config{Registry: reg, Logger: log, Runner: runner, Timeout: rc.ConverterTimeout})
	if err != nil {
		return nil, err
	}
	if err := conv.Check(); err != nil {
		log.Warn("some converters are missing; those conversions will fail", "err", err)
	}
	if d, ok := runner.(*convert.DockerRunner); ok {
		log.Info("converters run in containers", "image", d.Image(), "memory", rc.ConverterMemory,
			"cpus", rc.ConverterCPUs, "cpu_time", rc.ConverterCPUTime)
	}
	return conv, nil
}
