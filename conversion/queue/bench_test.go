package queue_test

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/internal/testkit/redistest"
)

// Benchmarks: jobs through enqueue → lease → complete with a no-op
// converter, as farms run them. Producers enqueue b.N jobs; consumers (the
// farms' job slots) long-poll for up to benchSlots jobs each and complete
// them one by one. jobs/s is the figure to read.
const (
	benchProducers = 4
	benchConsumers = 8
	benchSlots     = 4
)

func BenchmarkQueueMemory(b *testing.B) {
	q, err := queue.NewMemory(queue.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = q.Close() })
	benchQueue(b, q)
}

func BenchmarkQueueRedis(b *testing.B) {
	srv := redistest.Start(b)
	q := openRedis(b, srv, queue.Options{}, queue.RedisOptions{Poll: time.Second})
	benchQueue(b, q)
}

func benchQueue(b *testing.B, q queue.Queue) {
	ctx := b.Context()
	payload := []byte(`{"input":"in/part.step","outputs":["glb","png"]}`)
	var next, done atomic.Int64
	total := int64(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for range benchProducers {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				if err := q.Enqueue(ctx, queue.Job{ID: strconv.FormatInt(i, 10), Item: "item", Payload: payload}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	for c := range benchConsumers {
		consumer := "farm" + strconv.Itoa(c)
		wg.Go(func() {
			for done.Load() < total {
				ls, err := q.Lease(ctx, queue.LeaseRequest{Consumer: consumer, Max: benchSlots, Wait: 50 * time.Millisecond})
				if err != nil {
					b.Error(err)
					return
				}
				for _, l := range ls {
					if _, err := q.Complete(ctx, l.JobID, l.Token); err != nil {
						b.Error(err)
						return
					}
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}
