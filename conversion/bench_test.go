package conversion_test

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/storage"
)

// BenchmarkService: conversions per second through the whole service with
// a no-op converter: upload (item, file, job), lease, one output
// uploaded, complete (outputs moved into place, the item SUCCESS), on
// directory storage. memory is `drover up`, redis several managers.
// jobs/s is the figure to read. redis runs the same number of jobs in
// memory first and reports redis/memory, the ratio of the two under the
// same load of the machine, which means more than either figure on a
// shared machine.
//
//	go test -run '^$' -bench Service -benchtime 3s ./conversion/
func BenchmarkService(b *testing.B) {
	b.Run("memory", func(b *testing.B) {
		svc := benchMemory(b)
		b.ReportAllocs()
		b.ResetTimer()
		runJobs(b, svc, b.N)
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	})
	b.Run("redis", func(b *testing.B) {
		mem := runJobs(b, benchMemory(b), b.N)
		svc := benchRedis(b)
		b.ReportAllocs()
		b.ResetTimer()
		runJobs(b, svc, b.N)
		red := float64(b.N) / b.Elapsed().Seconds()
		b.ReportMetric(red, "jobs/s")
		b.ReportMetric(float64(b.N)/mem.Seconds(), "memory-jobs/s")
		b.ReportMetric(red/(float64(b.N)/mem.Seconds()), "redis/memory")
	})
}

func benchMemory(b *testing.B) *conversion.Service {
	q, err := queue.NewMemory(queue.Options{})
	if err != nil {
		b.Fatal(err)
	}
	return benchService(b, items.NewMemory(), q)
}

func benchRedis(b *testing.B) *conversion.Service {
	srv := redistest.Start(b)
	ctx := context.Background()
	is, err := items.NewRedis(ctx, items.RedisOptions{URL: srv.URL(), Prefix: redistest.Prefix()})
	if err != nil {
		b.Fatal(err)
	}
	q, err := queue.NewRedis(ctx, queue.Options{}, queue.RedisOptions{URL: srv.URL(), Prefix: redistest.Prefix(), Poll: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	return benchService(b, is, q)
}

// benchService starts a service on is and q with storage in a temporary
// directory, stopped when b ends.
func benchService(b *testing.B, is items.Store, q queue.Queue) *conversion.Service {
	st, err := storage.NewFS(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	svc, err := conversion.New(conversion.Config{Storage: st, Items: is, Queue: q, Close: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = svc.Stop(context.Background())
		_ = st.Close()
	})
	return svc
}

// runJobs converts n uploads: producers upload, farms lease, upload an
// output and complete. It returns how long that took.
func runJobs(b *testing.B, svc *conversion.Service, n int) time.Duration {
	ctx := b.Context()
	const producers, farms, slots = 4, 8, 4
	var next, done atomic.Int64
	total := int64(n)
	start := time.Now()
	var wg sync.WaitGroup
	for range producers {
		wg.Go(func() {
			for next.Add(1) <= total {
				if _, err := svc.Upload(ctx, conversion.Options{}, "part.stl", strings.NewReader("solid x")); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for f := range farms {
		farm := "farm" + strconv.Itoa(f)
		wg.Go(func() {
			for done.Load() < total && !b.Failed() {
				jobs, err := svc.LeaseJobs(ctx, farmapi.LeaseRequest{Farm: farm, Max: slots, Slots: slots, WaitMS: 50})
				if err != nil {
					b.Error(err)
					return
				}
				for _, j := range jobs {
					n, err := svc.PutJobOutput(ctx, j.ID, j.Token, "part.stl.glb", strings.NewReader("glb"))
					if err == nil {
						_, err = svc.CompleteJob(ctx, j.ID, farmapi.CompleteRequest{Token: j.Token, Attempt: j.Attempt,
							Outputs: []farmapi.JobOutput{{Name: "part.stl.glb", Type: "glb", Size: n}}})
					}
					if err != nil {
						b.Error(err)
						return
					}
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start)
}
