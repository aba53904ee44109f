package conversion_test

import (
	"context"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/items/itemstest"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/duration"
	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/storage"
)

// clock is the services' clock in these tests: it stands still where the
// test sets it, so that items age without sleeps and a limit can be hit
// to the millisecond.
type clock struct{ at atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.Set(time.Now())
	return c
}

func (c *clock) Now() time.Time        { return time.Unix(0, c.at.Load()) }
func (c *clock) Set(t time.Time)       { c.at.Store(t.UnixNano()) }
func (c *clock) Later(d time.Duration) { c.Set(time.Now().Add(d)) }

// parts are what several services share: files, items and jobs.
type parts struct {
	st *storage.FS
	is items.Store
	q  queue.Queue
}

// storeKinds are the two ways services keep items and jobs: in the
// process (`drover up`) and in Redis (several managers).
var storeKinds = []string{"local", "redis"}

func newParts(t *testing.T, kind string) parts {
	t.Helper()
	st, err := storage.NewFS(t.TempDir())
	require.NoError(t, err)
	p := parts{st: st}
	switch kind {
	case "local":
		local, err := items.Open(t.Context(), st, items.Options{})
		require.NoError(t, err)
		q, err := queue.NewMemory(queue.Options{})
		require.NoError(t, err)
		p.is, p.q = local, q
	case "redis":
		srv := redistest.Start(t)
		prefix := redistest.Prefix()
		p.is = redistest.Open(t, func(ctx context.Context) (*items.Redis, error) {
			return items.NewRedis(ctx, items.RedisOptions{URL: srv.URL(), Prefix: prefix})
		})
		p.q = redistest.Open(t, func(ctx context.Context) (*queue.Redis, error) {
			return queue.NewRedis(ctx, queue.Options{}, queue.RedisOptions{URL: srv.URL(), Prefix: prefix,
				Poll: 50 * time.Millisecond})
		})
	}
	// Registered first, so it runs after the services' stops.
	t.Cleanup(func() {
		require.NoError(t, p.is.Close())
		require.NoError(t, p.q.Close())
		require.NoError(t, st.Close())
	})
	return p
}

// retainer is a service on p with retention: max age 30 days, unfinished
// items 24 hours. Its loop waits an hour of real time: the tests purge
// with PurgeOnce.
func retainer(t *testing.T, p parts, c *clock, reg prometheus.Registerer, interval time.Duration) *conversion.Service {
	t.Helper()
	svc, err := conversion.New(conversion.Config{Storage: p.st, Items: p.is, Queue: p.q, Webhook: secretOnly,
		Retention: conversion.Retention{MaxAge: 30 * duration.Day, Unfinished: 24 * time.Hour, Interval: interval},
		Now:       c.Now, Registerer: reg})
	require.NoError(t, err)
	require.NoError(t, svc.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
	})
	return svc
}

var secretOnly = webhook.Options{Secret: secret}

func purgedTotal(t *testing.T, g prometheus.Gatherer, reason string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != "drover_conversion_items_purged_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "reason" && l.GetValue() == reason {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	t.Fatalf("no drover_conversion_items_purged_total{reason=%q}", reason)
	return 0
}

// gone checks that an item, its job and its files are gone.
func gone(t *testing.T, p parts, svc *conversion.Service, it items.Item) {
	t.Helper()
	ctx := t.Context()
	_, err := svc.Get(ctx, it.ID)
	require.ErrorIs(t, err, conversion.ErrNotFound, "item %s", it.Name)
	_, err = p.q.Get(ctx, it.ID+".0")
	require.ErrorIs(t, err, queue.ErrNotFound, "the job of %s", it.Name)
	infos, err := p.st.List(ctx, items.Dir(it.ID))
	require.NoError(t, err)
	require.Empty(t, infos, "the files of %s", it.Name)
}

// TestRetention: items not SUCCESS go when they have not changed for the
// unfinished limit, SUCCESS ones at the max age, young ones stay; each
// purge removes the item's job and files, moves LastUpdated and publishes
// the delete, and is counted by reason.
func TestRetention(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			p := newParts(t, kind)
			c := newClock()
			reg := prometheus.NewRegistry()
			svc := retainer(t, p, c, reg, time.Hour)
			ctx := t.Context()

			failed, err := svc.Upload(ctx, conversion.Options{}, "bad.stl", strings.NewReader("x"))
			require.NoError(t, err)
			j := lease(t, svc, "farm")
			_, err = svc.FailJob(ctx, j.ID, farmapi.FailRequest{Token: j.Token, Reason: "Conversion Error", Final: true})
			require.NoError(t, err)
			failed = waitState(t, svc, failed.ID)
			require.True(t, failed.State.Failed())
			done, err := svc.Upload(ctx, conversion.Options{SkipConversion: true}, "done.stl", strings.NewReader("x"))
			require.NoError(t, err)
			require.Equal(t, items.StateSuccess, done.State)
			pending, err := svc.Upload(ctx, conversion.Options{}, "queued.stl", strings.NewReader("x"))
			require.NoError(t, err)
			uploading, err := svc.Begin(ctx, conversion.Options{Name: "half.zip"})
			require.NoError(t, err)
			_, err = svc.AddFile(ctx, uploading.ID, "half.zip", strings.NewReader("PK"))
			require.NoError(t, err)
			all, err := svc.List(ctx)
			require.NoError(t, err)
			require.Len(t, all, 4)

			purge := func() []string {
				t.Helper()
				ids, err := svc.PurgeOnce(ctx)
				require.NoError(t, err)
				slices.Sort(ids)
				return ids
			}
			// The limits count from each item's last change, to the
			// millisecond.
			unfinished := []items.Item{failed, pending, uploading}
			var last time.Time
			for _, it := range unfinished {
				it, err := svc.Get(ctx, it.ID)
				require.NoError(t, err)
				last = maxTime(last, it.Updated)
			}
			c.Set(last.Add(24*time.Hour - time.Millisecond))
			require.Len(t, purge(), 2, "all but the newest are 24 hours old")
			events, err := svc.Subscribe(ctx)
			require.NoError(t, err)
			before, err := svc.LastUpdated(ctx)
			require.NoError(t, err)
			c.Set(last.Add(24 * time.Hour))
			require.Len(t, purge(), 1)
			want := []string{failed.ID, pending.ID, uploading.ID}
			slices.Sort(want)
			for _, it := range unfinished {
				gone(t, p, svc, it)
			}
			_, err = svc.Get(ctx, done.ID)
			require.NoError(t, err, "SUCCESS stays")
			after, err := svc.LastUpdated(ctx)
			require.NoError(t, err)
			require.True(t, after.After(before), "a purge moves updated")
			e := itemstest.Next(t, events)
			require.Equal(t, items.EventDeleted, e.Type, "a purge publishes what a client's delete does")
			require.Equal(t, after, e.LastUpdated)
			require.EqualValues(t, 3, purgedTotal(t, reg, "unfinished"))
			require.EqualValues(t, 0, purgedTotal(t, reg, "age"))

			young, err := svc.Upload(ctx, conversion.Options{SkipConversion: true}, "young.stl", strings.NewReader("x"))
			require.NoError(t, err)
			require.True(t, young.Updated.After(done.Updated))
			c.Set(done.Updated.Add(30*duration.Day - time.Millisecond))
			require.Empty(t, purge(), "SUCCESS stays until the max age")
			c.Set(done.Updated.Add(30 * duration.Day))
			require.Equal(t, []string{done.ID}, purge())
			gone(t, p, svc, done)
			_, err = svc.Get(ctx, young.ID)
			require.NoError(t, err, "a younger item stays")
			require.EqualValues(t, 1, purgedTotal(t, reg, "age"))
		})
	}
}

// TestRetentionTwoManagers: two services that share items, jobs and files
// purge at once; each item is deleted once, by one of them.
func TestRetentionTwoManagers(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			p := newParts(t, kind)
			c := newClock()
			regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
			a := retainer(t, p, c, regA, time.Hour)
			b := retainer(t, p, c, regB, time.Hour)
			ctx := t.Context()
			const n = 40
			var want []string
			for i := range n {
				svc := a
				if i%2 == 1 {
					svc = b
				}
				it, err := svc.Upload(ctx, conversion.Options{}, "m.stl", strings.NewReader("solid m"))
				require.NoError(t, err)
				want = append(want, it.ID)
			}
			events, err := a.Subscribe(ctx)
			require.NoError(t, err)
			c.Later(25 * time.Hour)

			for round := range 3 { // several rounds: the race is not a one-off
				var got [2][]string
				var wg sync.WaitGroup
				for i, svc := range []*conversion.Service{a, b} {
					wg.Go(func() {
						ids, err := svc.PurgeOnce(ctx)
						require.NoError(t, err)
						got[i] = ids
					})
				}
				wg.Wait()
				if round > 0 {
					require.Empty(t, slices.Concat(got[0], got[1]), "nothing is left to purge")
					continue
				}
				all := slices.Concat(got[0], got[1])
				slices.Sort(all)
				slices.Sort(want)
				require.Equal(t, want, all, "each item purged by exactly one manager")
			}
			require.EqualValues(t, n, purgedTotal(t, regA, "unfinished")+purgedTotal(t, regB, "unfinished"))

			// One delete event per item: the item created next is the
			// event after the last delete.
			marker, err := a.Create(ctx, conversion.Options{Name: "marker"})
			require.NoError(t, err)
			var deleted []string
			for {
				e := itemstest.Next(t, events)
				if e.ID == marker.ID {
					break
				}
				require.Equal(t, items.EventDeleted, e.Type)
				deleted = append(deleted, e.ID)
			}
			slices.Sort(deleted)
			require.Equal(t, want, deleted)
			for _, id := range want {
				gone(t, p, a, items.Item{ID: id, Name: id})
			}
		})
	}
}

// TestRetentionLateResult: the farm converting an item that is purged
// loses its lease; its uploads and its completion are refused, and the
// item, its job and its files stay gone.
func TestRetentionLateResult(t *testing.T) {
	for _, kind := range storeKinds {
		t.Run(kind, func(t *testing.T) {
			p := newParts(t, kind)
			c := newClock()
			svc := retainer(t, p, c, nil, time.Hour)
			ctx := t.Context()

			early, err := svc.Upload(ctx, conversion.Options{}, "early.stl", strings.NewReader("x"))
			require.NoError(t, err)
			je := lease(t, svc, "farm")
			late, err := svc.Upload(ctx, conversion.Options{}, "late.stl", strings.NewReader("x"))
			require.NoError(t, err)
			jl := lease(t, svc, "farm")
			// One attempt uploaded its output before the purge, the other
			// uploads after it.
			n, err := svc.PutJobOutput(ctx, je.ID, je.Token, "early.stl.glb", strings.NewReader("glb"))
			require.NoError(t, err)

			c.Later(25 * time.Hour)
			ids, err := svc.PurgeOnce(ctx)
			require.NoError(t, err)
			require.ElementsMatch(t, []string{early.ID, late.ID}, ids)

			_, err = svc.RenewJob(ctx, je.ID, je.Token)
			require.ErrorIs(t, err, farmapi.ErrLeaseLost)
			_, err = svc.CompleteJob(ctx, je.ID, farmapi.CompleteRequest{Token: je.Token, Attempt: je.Attempt,
				Outputs: []farmapi.JobOutput{{Name: "early.stl.glb", Type: "glb", Size: n}}})
			require.ErrorIs(t, err, farmapi.ErrLeaseLost, "the completion of a purged item is refused")
			gone(t, p, svc, early)

			_, err = svc.PutJobOutput(ctx, jl.ID, jl.Token, "late.stl.glb", strings.NewReader("glb"))
			require.ErrorIs(t, err, farmapi.ErrLeaseLost)
			_, err = svc.CompleteJob(ctx, jl.ID, farmapi.CompleteRequest{Token: jl.Token, Attempt: jl.Attempt,
				Outputs: []farmapi.JobOutput{{Name: "late.stl.glb", Type: "glb", Size: 3}}})
			require.ErrorIs(t, err, farmapi.ErrLeaseLost)
			_, err = svc.FailJob(ctx, jl.ID, farmapi.FailRequest{Token: jl.Token, Reason: "Conversion Error"})
			require.ErrorIs(t, err, farmapi.ErrLeaseLost)
			gone(t, p, svc, late)

			all, err := svc.List(ctx)
			require.NoError(t, err)
			require.Empty(t, all, "nothing came back")
			jobs, err := svc.LeaseJobs(ctx, farmapi.LeaseRequest{Farm: "farm", Max: 4, Slots: 4})
			require.NoError(t, err)
			require.Empty(t, jobs, "no job is left to lease")
		})
	}
}

// TestRetentionLoop: the service purges by itself, every interval, until
// it stops.
func TestRetentionLoop(t *testing.T) {
	p := newParts(t, "local")
	c := newClock()
	svc := retainer(t, p, c, nil, 20*time.Millisecond)
	ctx := t.Context()
	it, err := svc.Upload(ctx, conversion.Options{}, "m.stl", strings.NewReader("x"))
	require.NoError(t, err)
	events, err := svc.Subscribe(ctx)
	require.NoError(t, err)
	c.Later(25 * time.Hour)
	e := itemstest.Next(t, events)
	require.Equal(t, items.Event{Type: items.EventDeleted, ID: it.ID, LastUpdated: e.LastUpdated}, e)
	// Stop waits for the pass under way: it removes the job and files
	// after the item.
	require.NoError(t, svc.Stop(ctx))
	_, err = p.is.Get(ctx, it.ID)
	require.ErrorIs(t, err, items.ErrNotFound)
	_, err = p.q.Get(ctx, it.ID+".0")
	require.ErrorIs(t, err, queue.ErrNotFound)
	infos, err := p.st.List(ctx, items.Dir(it.ID))
	require.NoError(t, err)
	require.Empty(t, infos)
}

func TestRetentionConfig(t *testing.T) {
	p := newParts(t, "local")
	_, err := conversion.New(conversion.Config{Storage: p.st, Items: p.is, Queue: p.q,
		Retention: conversion.Retention{MaxAge: -time.Hour}})
	require.Error(t, err)
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
