package drover

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/lib/bearer"
	"github.com/drover-dev/drover/internal/lib/certreload"
	"github.com/drover-dev/drover/manager"
	"github.com/drover-dev/drover/storage"
)

// DefaultDataDir is where conversions keep their files when
// Conversion.DataDir is empty.
const DefaultDataDir = "./drover-data"

// Conversion configures the conversion service: the HOOPS conversion
// server's REST API under /api and /caas_api, and the job API farms lease
// conversion jobs over. Every part left nil gets the one-machine default:
// files and item records under DataDir, an in-memory job queue.
type Conversion struct {
	// DataDir holds the files, and the item records beside them, when
	// Storage and Items are nil; default DefaultDataDir. Items survive a
	// restart there.
	DataDir string
	// Storage keeps uploads and outputs; nil for a directory storage on
	// DataDir. Given, it is the caller's to close.
	Storage storage.Storage
	// Items keeps item records; nil for records beside the files in
	// Storage (one manager). Several managers share items.NewRedis. Given,
	// it is the caller's to close.
	Items items.Store
	// Queue is the job queue; nil for queue.NewMemory(QueueOptions).
	// Several managers share queue.NewRedis. Given, it is the caller's to
	// close.
	Queue        queue.Queue
	QueueOptions queue.Options
	// Webhook configures webhook delivery: its signing Secret, the hosts
	// it may reach (Policy), retries.
	Webhook webhook.Options
	// MaxUpload bounds one item's uploads; 0 for conversion's default.
	MaxUpload int64
	// JobSlots is how many conversions the local farm runs at once; 0 for
	// farm.DefaultJobSlots, negative for none (farms on other machines
	// convert). Without a local farm there are none.
	JobSlots int
	// Converter runs the local farm's conversions; nil for the Debian
	// converters with the default limits.
	Converter *convert.Converter
	// ReclaimInterval: see conversion.Config.
	ReclaimInterval time.Duration
	// StreamPool is the stream pool of streaming sessions
	// (streamingSession); empty means DefaultStreamPool. A session is
	// placed on a fresh instance of it with a session directory of its own
	// on its farm, which enableStreamAccess fills.
	StreamPool string
	// PresignTTL: see conversion.Config; for storage that presigns (S3).
	PresignTTL time.Duration
	// Tokens configure upload and download tokens.
	Tokens Tokens
	// Retention purges old items; off by default. See conversion.Retention.
	Retention conversion.Retention
	// Quota bounds what each tenant's items hold; unlimited by default.
	// See conversion.TenantQuota.
	Quota conversion.TenantQuota
}

// Conversion is the conversion service; nil without Config.Conversion.
func (s *Server) Conversion() *conversion.Service { return s.conv }

// setupConversion builds the conversion service, mounts its routes on the
// manager, and starts the local farm's job slots. Its stops are pushed
// after the manager's, so they run first: the job slots stop, then the
// service (its long polls end, so the HTTP server can shut down).
func (s *Server) setupConversion(cc Conversion, m *manager.Manager, mc manager.Config, log *slog.Logger) error {
	clog := log.With("component", "conversion")
	st := cc.Storage
	if st == nil {
		dir := cmp.Or(cc.DataDir, DefaultDataDir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("drover: data directory: %w", err)
		}
		fs, err := storage.NewFS(dir)
		if err != nil {
			return err
		}
		s.cleanups.PushFunc("storage", fs.Close)
		st = fs
		// Temporary files of uploads a crash cut off.
		if _, err := fs.Sweep(context.Background(), 24*time.Hour); err != nil {
			clog.Warn("sweep the data directory", "err", err)
		}
	}
	tokens, err := cc.Tokens.api(st, cmp.Or(cc.DataDir, DefaultDataDir))
	if err != nil {
		return err
	}
	store := cc.Items
	if store == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		local, err := items.Open(ctx, st, items.Options{Logger: clog})
		cancel()
		if err != nil {
			return err
		}
		s.cleanups.PushFunc("items", local.Close)
		store = local
	}
	q := cc.Queue
	if q == nil {
		mq, err := queue.NewMemory(cc.QueueOptions)
		if err != nil {
			return err
		}
		s.cleanups.PushFunc("queue", mq.Close)
		q = mq
	}
	wo := cc.Webhook
	if wo.Registerer == nil {
		wo.Registerer = mc.Registerer
	}
	svc, err := conversion.New(conversion.Config{Storage: st, Items: store, Queue: q, Webhook: wo,
		MaxUpload: cc.MaxUpload, ReclaimInterval: cc.ReclaimInterval, PresignTTL: cc.PresignTTL,
		Retention: cc.Retention, Quota: cc.Quota, Logger: clog,
		Registerer: mc.Registerer})
	if err != nil {
		return err
	}
	if err := svc.Start(); err != nil {
		return err
	}
	s.conv = svc
	s.cleanups.Push("conversion", svc.Stop)

	ao := api.Options{Version: mc.Version, Logger: clog, Audit: log.With("component", "audit"), Tokens: tokens, Registerer: mc.Registerer}
	if l := m.Limits(); l != nil {
		ao.Uploads = l // the manager's limits: uploads per user and address (Manager.Limits)
	}
	a := api.New(svc, ao)
	// The API is the users'; the signed URLs carry their own credential.
	users := m.Router().Group("", m.Require(manager.LevelUser))
	a.MountRoutes(users)
	a.MountDirect(m.Router())
	a.MountStream(users, &streamer{m: m, pool: cmp.Or(cc.StreamPool, DefaultStreamPool)})
	if mc.FarmToken != "" {
		a.MountFarm(m.Router(), farmAuth(mc.FarmToken, mc.RequireFarmCert, clog))
	}
	m.AddEventSource(itemEvents(svc))
	m.SetConversionStatus(func(ctx context.Context) any { return svc.Status(ctx) })

	if s.f != nil && cc.JobSlots >= 0 {
		jobs, err := farm.NewJobs(farm.JobsConfig{Source: svc, Farm: s.f.ID(), Slots: cc.JobSlots,
			Converter: cc.Converter, ReadLocal: true, Cache: s.f.Cache(), Logger: log.With("component", "jobs"),
			Registerer: mc.Registerer})
		if err != nil {
			return err
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- jobs.Run(ctx) }()
		s.cleanups.Push("job slots", func(sctx context.Context) error {
			cancel()
			select {
			case err := <-done:
				return err
			case <-sctx.Done():
				return sctx.Err()
			}
		})
	}
	return nil
}

// farmAuth admits farms with the farm token and, with requireCert, a
// verified client certificate (see manager.FarmCertGuard).
func farmAuth(token string, requireCert bool, log *slog.Logger) gin.HandlerFunc {
	check := bearer.NewChecker(token)
	guard := manager.FarmCertGuard(requireCert, log)
	return func(c *gin.Context) {
		// The guard refuses without a verified certificate; it is not
		// called otherwise, since admitting means c.Next(), which would run
		// the handler before the token is checked.
		if requireCert && !certreload.Verified(c.Request.TLS) {
			guard(c)
			return
		}
		if check.Request(c.Request, false) {
			c.Next()
			return
		}
		log.Warn("unauthorized job API request", "path", c.FullPath(), "remote", c.ClientIP())
		c.AbortWithStatusJSON(401, gin.H{"message": "missing or wrong token"})
	}
}

// ItemEvent is an item change as /events shows it ("item_created",
// "item_updated", "item_deleted", "item_resync").
type ItemEvent struct {
	ID              string `json:"id,omitempty"`
	Name            string `json:"name,omitempty"`
	ConversionState string `json:"conversionState,omitempty"`
	Generation      int    `json:"generation"`
	LastUpdated     string `json:"lastUpdated,omitempty"`
}

// itemEvents feeds the conversion service's item changes to /events.
func itemEvents(svc *conversion.Service) manager.EventSource {
	return func(ctx context.Context) (<-chan manager.ExtraEvent, error) {
		ch, err := svc.Subscribe(ctx)
		if err != nil {
			return nil, err
		}
		out := make(chan manager.ExtraEvent, 16)
		go func() {
			defer close(out)
			for e := range ch {
				ie := ItemEvent{ID: e.ID}
				if !e.LastUpdated.IsZero() {
					ie.LastUpdated = e.LastUpdated.UTC().Format("2006-01-02T15:04:05.000Z")
				}
				if e.Item != nil {
					ie.Name, ie.ConversionState, ie.Generation = e.Item.Name, string(e.Item.State), e.Item.Generation
				}
				select {
				case out <- manager.ExtraEvent{Type: "item_" + string(e.Type), Data: ie}:
				case <-ctx.Done():
					// Drain so the store's subscription can close.
					for range ch {
					}
					return
				}
			}
		}()
		return out, nil
	}
}
