package conversion_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/lib/forkthread"
	"github.com/drover-dev/drover/storage"
)

const secret = "test-secret"

// hookReceiver is a webhook receiver that verifies signatures and keeps
// the bodies it accepted.
type hookReceiver struct {
	*httptest.Server
	mu     sync.Mutex
	bodies []webhook.Payload
	fail   int // answer 503 to this many attempts first
}

func newReceiver(t *testing.T) *hookReceiver {
	r := &hookReceiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		if err := webhook.Verify(secret, req.Header, b, time.Minute); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail > 0 {
			r.fail--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var p webhook.Payload
		_ = json.Unmarshal(b, &p)
		r.bodies = append(r.bodies, p)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *hookReceiver) got() []webhook.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]webhook.Payload(nil), r.bodies...)
}

type fixture struct {
	svc   *conversion.Service
	st    *storage.FS
	q     *queue.Memory
	items items.Store
}

func newService(t *testing.T, qo queue.Options, mut func(*conversion.Config)) *fixture {
	t.Helper()
	st, err := storage.NewFS(t.TempDir())
	require.NoError(t, err)
	q, err := queue.NewMemory(qo)
	require.NoError(t, err)
	store, err := items.Open(context.Background(), st, items.Options{})
	require.NoError(t, err)
	cfg := conversion.Config{Storage: st, Items: store, Queue: q, Close: true,
		ReclaimInterval: 50 * time.Millisecond, SweepInterval: 100 * time.Millisecond, SweepAge: 200 * time.Millisecond,
		Webhook: webhook.Options{Secret: secret, Policy: webhook.Policy{AllowHosts: []string{"127.0.0.1"}},
			MinBackoff: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}}
	if mut != nil {
		mut(&cfg)
	}
	svc, err := conversion.New(cfg)
	require.NoError(t, err)
	require.NoError(t, svc.Start())
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, svc.Stop(ctx))
		require.NoError(t, st.Close())
	})
	return &fixture{svc: svc, st: st, q: q, items: store}
}

func lease(t *testing.T, svc *conversion.Service, farm string) farmapi.JobLease {
	t.Helper()
	jobs, err := svc.LeaseJobs(context.Background(), farmapi.LeaseRequest{Farm: farm, Max: 1, Slots: 4, WaitMS: 2000})
	require.NoError(t, err)
	require.Len(t, jobs, 1)
	return jobs[0]
}

// complete uploads one output and completes the attempt.
func complete(svc *conversion.Service, j farmapi.JobLease, body string) (farmapi.JobAck, error) {
	ctx := context.Background()
	name := j.Name + ".glb"
	n, err := svc.PutJobOutput(ctx, j.ID, j.Token, name, strings.NewReader(body))
	if err != nil {
		return farmapi.JobAck{}, err
	}
	return svc.CompleteJob(ctx, j.ID, farmapi.CompleteRequest{Token: j.Token, Attempt: j.Attempt,
		Outputs: []farmapi.JobOutput{{Name: name, Type: "glb", Size: n}}})
}

func waitState(t *testing.T, svc *conversion.Service, id string) items.Item {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	it, err := svc.Wait(ctx, id)
	require.NoError(t, err)
	return it
}

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, goleak.IgnoreTopFunction(forkthread.Goroutine)) }

func TestUploadConvertSucceedsOnceAndTellsTheWebhook(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	hook := newReceiver(t)
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{Webhook: hook.URL}, "cube.stl", strings.NewReader("solid cube"))
	require.NoError(t, err)
	require.Equal(t, items.StatePending, it.State)
	require.Equal(t, "cube.stl", it.Name)

	j := lease(t, f.svc, "farm-a")
	require.Equal(t, it.ID, j.Item)
	require.Equal(t, "cube.stl", j.Name)
	require.Len(t, j.Inputs, 1)
	require.NotEqual(t, "cube.stl", j.Inputs[0].Name, "a single input goes by a name the server chose")
	require.Equal(t, j.Inputs[0].Name, j.Model)
	require.NotEmpty(t, j.Inputs[0].LocalPath, "FS storage offers the file in place")
	rc, size, err := f.svc.OpenJobInput(ctx, j.ID, j.Token, 0)
	require.NoError(t, err)
	b, _ := io.ReadAll(rc)
	rc.Close()
	require.Equal(t, "solid cube", string(b))
	require.EqualValues(t, 10, size)

	ack, err := complete(f.svc, j, "GLB")
	require.NoError(t, err)
	require.Equal(t, "done", ack.State)
	// The farm retries its acknowledgement: the same answer, nothing more.
	ack, err = f.svc.CompleteJob(ctx, j.ID, farmapi.CompleteRequest{Token: j.Token, Attempt: j.Attempt,
		Outputs: []farmapi.JobOutput{{Name: "cube.stl.glb", Type: "glb", Size: 3}}})
	require.NoError(t, err)
	require.Equal(t, "done", ack.State)

	it = waitState(t, f.svc, it.ID)
	require.Equal(t, items.StateSuccess, it.State)
	require.Equal(t, []items.File{{Name: "cube.stl.glb", Type: "glb", Size: 3}}, it.Files)
	require.Equal(t, 1, it.Attempts)
	obj, file, err := f.svc.OpenOutput(ctx, it.ID, "glb")
	require.NoError(t, err)
	b, _ = io.ReadAll(obj)
	obj.Close()
	require.Equal(t, "GLB", string(b))
	require.Equal(t, "cube.stl.glb", file.Name)

	require.Eventually(t, func() bool { return len(hook.got()) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, webhook.Payload{ID: it.ID, Name: "cube.stl", ConversionState: "SUCCESS",
		Files: []string{"cube.stl.glb"}}, hook.got()[0])
	require.Eventually(t, func() bool {
		it, err := f.svc.Get(ctx, it.ID)
		return err == nil && it.Delivery != nil && !it.Delivery.Delivered.IsZero()
	}, 5*time.Second, 10*time.Millisecond)
	it, _ = f.svc.Get(ctx, it.ID)
	require.Equal(t, 1, it.Delivery.Attempts)
	require.Equal(t, http.StatusOK, it.Delivery.LastStatus)

	// Nothing staged is left behind.
	infos, err := f.st.List(ctx, items.Dir(it.ID)+"staging/")
	require.NoError(t, err)
	require.Empty(t, infos)
}

func TestLateResultOfAReclaimedAttemptIsDropped(t *testing.T) {
	f := newService(t, queue.Options{Lease: 200 * time.Millisecond}, nil)
	hook := newReceiver(t)
	hook.fail = 2 // down for its first attempts
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{Webhook: hook.URL}, "part.obj", strings.NewReader("o"))
	require.NoError(t, err)

	a := lease(t, f.svc, "farm-a")
	// farm-a freezes: its lease expires, the reclaimer hands the job on.
	b := lease(t, f.svc, "farm-b")
	require.Equal(t, a.ID, b.ID)
	require.Equal(t, 2, b.Attempt)

	_, err = f.svc.RenewJob(ctx, a.ID, a.Token)
	require.ErrorIs(t, err, farmapi.ErrLeaseLost)
	_, err = complete(f.svc, a, "late")
	require.ErrorIs(t, err, farmapi.ErrLeaseLost)

	_, err = complete(f.svc, b, "fresh")
	require.NoError(t, err)
	it = waitState(t, f.svc, it.ID)
	require.Equal(t, items.StateSuccess, it.State)
	obj, _, err := f.svc.OpenOutput(ctx, it.ID, "glb")
	require.NoError(t, err)
	data, _ := io.ReadAll(obj)
	obj.Close()
	require.Equal(t, "fresh", string(data))

	require.Eventually(t, func() bool { return len(hook.got()) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "SUCCESS", hook.got()[0].ConversionState)
	require.Eventually(t, func() bool {
		it, err := f.svc.Get(ctx, it.ID)
		return err == nil && it.Delivery != nil && it.Delivery.Attempts == 3 && !it.Delivery.Delivered.IsZero()
	}, 5*time.Second, 10*time.Millisecond)
}

func TestFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("final", func(t *testing.T) {
		f := newService(t, queue.Options{}, nil)
		it, err := f.svc.Upload(ctx, conversion.Options{}, "a.zip", strings.NewReader("PK"))
		require.NoError(t, err)
		j := lease(t, f.svc, "farm")
		ack, err := f.svc.FailJob(ctx, j.ID, farmapi.FailRequest{Token: j.Token, Reason: "Unzip Error",
			Detail: "entry ../x climbs out", Final: true})
		require.NoError(t, err)
		require.Equal(t, "failed", ack.State)
		it = waitState(t, f.svc, it.ID)
		require.Equal(t, items.State("ERROR - Unzip Error"), it.State)
		require.Equal(t, "entry ../x climbs out", it.DetailedError)
	})
	t.Run("retried until the attempts run out", func(t *testing.T) {
		f := newService(t, queue.Options{MaxAttempts: 2, Backoff: queue.Backoff{Base: 10 * time.Millisecond, Jitter: -1}}, nil)
		it, err := f.svc.Upload(ctx, conversion.Options{}, "a.step", strings.NewReader("ISO"))
		require.NoError(t, err)
		for attempt := 1; attempt <= 2; attempt++ {
			j := lease(t, f.svc, "farm")
			require.Equal(t, attempt, j.Attempt)
			_, err := f.svc.FailJob(ctx, j.ID, farmapi.FailRequest{Token: j.Token, Reason: "something odd", Detail: "timed out"})
			require.NoError(t, err)
		}
		it = waitState(t, f.svc, it.ID)
		require.Equal(t, items.State("ERROR - Conversion Error"), it.State, "an unknown reason is a Conversion Error")
		require.Equal(t, "timed out", it.DetailedError)
	})
	t.Run("every lease expired", func(t *testing.T) {
		f := newService(t, queue.Options{MaxAttempts: 1, Lease: 100 * time.Millisecond}, nil)
		it, err := f.svc.Upload(ctx, conversion.Options{}, "a.step", strings.NewReader("ISO"))
		require.NoError(t, err)
		lease(t, f.svc, "farm")
		it = waitState(t, f.svc, it.ID)
		require.Equal(t, items.State("ERROR - Conversion Error"), it.State)
		require.Contains(t, it.DetailedError, "stopped answering")
	})
}

func TestReconvertDropsTheOldConversionsResult(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{}, "a.stl", strings.NewReader("s"))
	require.NoError(t, err)
	old := lease(t, f.svc, "farm")
	cl := []string{"--output_stl"}
	it, err = f.svc.Reconvert(ctx, it.ID, conversion.Reconversion{CommandLine: cl})
	require.NoError(t, err)
	require.Equal(t, 1, it.Generation)
	require.Equal(t, items.StatePending, it.State)
	_, err = complete(f.svc, old, "old")
	require.ErrorIs(t, err, farmapi.ErrLeaseLost)

	j := lease(t, f.svc, "farm")
	require.Equal(t, 1, j.Generation)
	require.Equal(t, cl, j.CommandLine)
	_, err = complete(f.svc, j, "new")
	require.NoError(t, err)
	it = waitState(t, f.svc, it.ID)
	require.Equal(t, items.StateSuccess, it.State)
	require.Equal(t, 1, it.Generation)
}

func TestMultiFileUploadWithRootFile(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	ctx := context.Background()
	it, err := f.svc.Begin(ctx, conversion.Options{StartPath: "model.obj"})
	require.NoError(t, err)
	require.Equal(t, items.StateUploading, it.State)
	for _, name := range []string{"model.obj", "model.mtl"} {
		_, err := f.svc.AddFile(ctx, it.ID, name, strings.NewReader(name))
		require.NoError(t, err)
	}
	_, err = f.svc.AddFile(ctx, it.ID, "model.obj", strings.NewReader("again"))
	require.ErrorIs(t, err, conversion.ErrInvalid)
	_, err = f.svc.AddFile(ctx, it.ID, "../x.obj", strings.NewReader("x"))
	require.ErrorIs(t, err, conversion.ErrInvalid)
	it, err = f.svc.Commit(ctx, it.ID, false)
	require.NoError(t, err)
	require.Equal(t, "model.obj", it.Name)
	j := lease(t, f.svc, "farm")
	require.Equal(t, "model.obj", j.Model)
	require.Equal(t, []string{"model.obj", "model.mtl"}, []string{j.Inputs[0].Name, j.Inputs[1].Name})
}

func TestUploadLimitsAndArguments(t *testing.T) {
	f := newService(t, queue.Options{}, func(c *conversion.Config) { c.MaxUpload = 8 })
	ctx := context.Background()
	_, err := f.svc.Upload(ctx, conversion.Options{}, "a.stl", strings.NewReader("123456789"))
	require.ErrorIs(t, err, conversion.ErrTooLarge)
	it, err := f.svc.Upload(ctx, conversion.Options{}, "a.stl", strings.NewReader("12345678"))
	require.NoError(t, err, "exactly the limit is allowed")
	_, err = f.svc.AddFile(ctx, it.ID, "b.stl", strings.NewReader("1"))
	require.ErrorIs(t, err, conversion.ErrTooLarge, "the limit is the item's")
	all, err := f.svc.List(ctx)
	require.NoError(t, err)
	require.Len(t, all, 1, "a refused upload leaves no item")

	for name, o := range map[string]conversion.Options{
		"webhook to a private address": {Webhook: "http://10.0.0.1/hook"},
		"unknown flag":                 {CommandLine: []string{"--output_scs"}},
		"startPath out of the zip":     {StartPath: "../a.step"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := f.svc.Upload(ctx, o, "a.stl", strings.NewReader("1"))
			require.ErrorIs(t, err, conversion.ErrInvalid)
		})
	}
}

func TestCreateSkipAndDelete(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	ctx := context.Background()
	before, err := f.svc.LastUpdated(ctx)
	require.NoError(t, err)
	it, err := f.svc.Create(ctx, conversion.Options{Name: "EmptyContainer"})
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, it.State)
	_, err = f.svc.AddFile(ctx, it.ID, "a.stl", strings.NewReader("s"))
	require.NoError(t, err)
	_, _, err = f.svc.OpenOriginal(ctx, it.ID)
	require.NoError(t, err)

	sk, err := f.svc.Upload(ctx, conversion.Options{SkipConversion: true}, "b.stl", strings.NewReader("s"))
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, sk.State)
	st := f.svc.Status(ctx)
	require.Zero(t, st.Queue.Pending, "skipConversion queues nothing")

	require.NoError(t, f.svc.Delete(ctx, it.ID))
	require.ErrorIs(t, f.svc.Delete(ctx, it.ID), conversion.ErrNotFound, "delete says when there was nothing")
	require.ErrorIs(t, f.svc.Delete(ctx, "no/such"), conversion.ErrNotFound)
	after, err := f.svc.LastUpdated(ctx)
	require.NoError(t, err)
	require.True(t, after.After(before))
	infos, err := f.st.List(ctx, items.Dir(it.ID))
	require.NoError(t, err)
	require.Empty(t, infos, "a deleted item's files are gone")
}

func TestSweepQueuesTheJobOfAPendingItemAgain(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{}, "a.stl", strings.NewReader("s"))
	require.NoError(t, err)
	// An in-memory queue restarted: the job is gone, the item PENDING.
	require.NoError(t, f.q.Delete(ctx, it.ID+".0"))
	j := lease(t, f.svc, "farm")
	require.Equal(t, it.ID, j.Item)
}

// TestSweepFinishesACompletedJob: a manager that died after the queue
// took an attempt's completion, with some outputs moved into place and
// others not, leaves an item the sweep ends SUCCESS from the attempt's
// manifest, with every output.
func TestSweepFinishesACompletedJob(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{}, "a.stl", strings.NewReader("s"))
	require.NoError(t, err)
	j := lease(t, f.svc, "farm")
	var outs []farmapi.JobOutput
	for _, name := range []string{"a.stl.glb", "a.stl.png"} {
		n, err := f.svc.PutJobOutput(ctx, j.ID, j.Token, name, strings.NewReader("bytes of "+name))
		require.NoError(t, err)
		outs = append(outs, farmapi.JobOutput{Name: name, Type: strings.TrimPrefix(path.Ext(name), "."), Size: n})
	}
	// What CompleteJob did before the manager died: the manifest, the
	// queue's completion, and one output moved.
	dir := conversion.StagingDir(it.ID, 0, j.Token)
	b, err := json.Marshal(map[string]any{"attempt": j.Attempt, "outputs": outs})
	require.NoError(t, err)
	_, err = f.st.Put(ctx, dir+conversion.ManifestName, bytes.NewReader(b))
	require.NoError(t, err)
	_, err = f.q.Complete(ctx, j.ID, j.Token)
	require.NoError(t, err)
	require.NoError(t, f.st.Move(ctx, dir+"a.stl.glb", items.OutputKey(it.ID, "a.stl.glb")))

	it = waitState(t, f.svc, it.ID)
	require.Equal(t, items.StateSuccess, it.State)
	require.Len(t, it.Files, 2)
	for _, o := range outs {
		obj, _, err := f.svc.OpenOutputByName(ctx, it.ID, o.Name)
		require.NoError(t, err)
		got, _ := io.ReadAll(obj)
		obj.Close()
		require.Equal(t, "bytes of "+o.Name, string(got))
	}
	// The sweep drops the staged files after the update: Stop waits for
	// it.
	require.NoError(t, f.svc.Stop(ctx))
	infos, err := f.st.List(ctx, items.Dir(it.ID)+"staging/")
	require.NoError(t, err)
	require.Empty(t, infos)
}

// TestSweepSendsAnUnsentWebhook: a finisher whose write ending the item
// reached the store while the store's answer was an error (Redis
// restarting under the reply) returns before it sends the webhook; the
// item is SUCCESS, not PENDING, so the sweep's repairs skip it. The sweep
// sends its webhook, once (found by the chaos run: an item ended SUCCESS
// during a Redis restart and its receiver never heard of it).
func TestSweepSendsAnUnsentWebhook(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	hook := newReceiver(t)
	ctx := context.Background()
	it, err := f.svc.Upload(ctx, conversion.Options{Webhook: hook.URL}, "a.stl", strings.NewReader("s"))
	require.NoError(t, err)
	j := lease(t, f.svc, "farm")
	_, err = f.q.Complete(ctx, j.ID, j.Token)
	require.NoError(t, err)
	// What the finisher's write did before its error: the item ended.
	_, err = f.items.Update(ctx, it.ID, func(it *items.Item) error { return it.Succeed(0, nil) })
	require.NoError(t, err)

	require.Eventually(t, func() bool { return len(hook.got()) == 1 }, 5*time.Second, 10*time.Millisecond)
	require.Equal(t, "SUCCESS", hook.got()[0].ConversionState)
	require.Eventually(t, func() bool {
		cur, err := f.items.Get(ctx, it.ID)
		return err == nil && cur.Delivery != nil && !cur.Delivery.Delivered.IsZero()
	}, 5*time.Second, 10*time.Millisecond)
	// Recorded delivered: later sweeps leave it; Stop waits for a sweep
	// under way.
	require.NoError(t, f.svc.Stop(ctx))
	require.Len(t, hook.got(), 1)
}

func TestLeaseWaitEndsAtStop(t *testing.T) {
	f := newService(t, queue.Options{}, nil)
	errc := make(chan error, 1)
	go func() {
		_, err := f.svc.LeaseJobs(context.Background(), farmapi.LeaseRequest{Farm: "f", Max: 1, WaitMS: 30000})
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, f.svc.Stop(ctx))
	select {
	case err := <-errc:
		require.True(t, errors.Is(err, farmapi.ErrJobsUnavailable), "err: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("the long poll outlived the service")
	}
}
