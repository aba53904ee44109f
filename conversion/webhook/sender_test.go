package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const testSecret = "whsec-Zq8-never-in-a-log-line"

// reports collects what a Sender reports.
type reports struct{ ch chan webhook.Record }

func newReports() *reports { return &reports{ch: make(chan webhook.Record, 1024)} }

func (r *reports) report(rec webhook.Record) { r.ch <- rec }

func (r *reports) next(t *testing.T) webhook.Record {
	t.Helper()
	select {
	case rec := <-r.ch:
		return rec
	case <-time.After(20 * time.Second): // a hang guard, not a synchronisation
		t.Fatal("no report")
		return webhook.Record{}
	}
}

// final returns the final record of one delivery and the reports before it.
func (r *reports) final(t *testing.T) (webhook.Record, []webhook.Record) {
	t.Helper()
	var before []webhook.Record
	for {
		rec := r.next(t)
		if rec.Final() {
			return rec, before
		}
		before = append(before, rec)
	}
}

// options are a test's: the receivers on 127.0.0.1 allow-listed, tiny
// backoffs.
func options(r *reports) webhook.Options {
	return webhook.Options{
		Secret:         testSecret,
		Policy:         webhook.Policy{AllowHosts: []string{"127.0.0.1"}},
		MinBackoff:     time.Millisecond,
		MaxBackoff:     4 * time.Millisecond,
		AttemptTimeout: 10 * time.Second,
		Report:         r.report,
	}
}

func start(t *testing.T, o webhook.Options) *webhook.Sender {
	t.Helper()
	s, err := webhook.New(o)
	require.NoError(t, err)
	require.NoError(t, s.Start())
	t.Cleanup(func() {
		_, err := s.Stop(context.Background())
		require.NoError(t, err)
	})
	return s
}

// received is one request a receiver got.
type received struct {
	header http.Header
	body   []byte
}

// receiver is a webhook receiver on 127.0.0.1 that answers the n-th
// request (from 1) with answer(n, w, r), or 200.
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	answer func(n int, w http.ResponseWriter, r *http.Request)
}

func newReceiver(t *testing.T, answer func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	rc := &receiver{answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	rc.got = append(rc.got, received{r.Header.Clone(), body})
	n := len(rc.got)
	rc.mu.Unlock()
	if rc.answer != nil {
		rc.answer(n, w, r)
	}
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

var payload = webhook.Payload{ID: "item-1", Name: "part.step", ConversionState: "SUCCESS", Files: []string{"part.glb", "part.png"}}

// checkSigned checks that got is the payload, signed with testSecret.
func checkSigned(t *testing.T, got received, deliveryID string) {
	t.Helper()
	require.NoError(t, webhook.Verify(testSecret, got.header, got.body, time.Minute))
	require.Equal(t, deliveryID, got.header.Get(webhook.HeaderDelivery))
	require.Equal(t, "application/json", got.header.Get("Content-Type"))
	var p webhook.Payload
	require.NoError(t, json.Unmarshal(got.body, &p))
	require.Equal(t, payload, p)
}

func TestDeliver(t *testing.T) {
	rc := newReceiver(t, nil)
	r := newReports()
	s := start(t, options(r))

	rec, err := s.Send(webhook.Delivery{URL: rc.URL + "/hook", Payload: payload})
	require.NoError(t, err)
	require.Equal(t, webhook.StatePending, rec.State)
	require.NotEmpty(t, rec.ID)

	final, before := r.final(t)
	require.Empty(t, before)
	require.Equal(t, webhook.StateDelivered, final.State)
	require.Equal(t, rec.ID, final.ID)
	require.Equal(t, 1, final.Attempts)
	require.Equal(t, http.StatusOK, final.LastStatus)
	require.Empty(t, final.LastError)
	require.True(t, final.NextAttempt.IsZero())
	require.Empty(t, s.Pending())

	got := rc.requests()
	require.Len(t, got, 1)
	checkSigned(t, got[0], rec.ID)

	// What an item's data shows: no URL, no payload.
	pub, err := json.Marshal(final.Public())
	require.NoError(t, err)
	require.NotContains(t, string(pub), "/hook")
	require.NotContains(t, string(pub), "part.glb")
	require.Contains(t, string(pub), `"state":"delivered"`)
}

func TestEmptyFilesIsAnArray(t *testing.T) {
	rc := newReceiver(t, nil)
	r := newReports()
	s := start(t, options(r))
	_, err := s.Send(webhook.Delivery{ID: "d-empty", URL: rc.URL, Payload: webhook.Payload{ID: "i", Name: "n", ConversionState: "ERROR - Conversion Error"}})
	require.NoError(t, err)
	final, _ := r.final(t)
	require.Equal(t, webhook.StateDelivered, final.State)
	require.Contains(t, string(rc.requests()[0].body), `"files":[]`)
}

// The must-show: a receiver down for its first two attempts gets the
// delivery on the third, and its signature verifies.
func TestReceiverDownForTwoAttempts(t *testing.T) {
	t.Run("answers 503", func(t *testing.T) {
		rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
			if n <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		r := newReports()
		s := start(t, options(r))
		rec, err := s.Send(webhook.Delivery{URL: rc.URL + "/hook", Payload: payload})
		require.NoError(t, err)

		final, before := r.final(t)
		require.Len(t, before, 2)
		for i, b := range before {
			require.Equal(t, webhook.StatePending, b.State)
			require.Equal(t, i+1, b.Attempts)
			require.Equal(t, http.StatusServiceUnavailable, b.LastStatus)
			require.False(t, b.NextAttempt.Before(b.LastAttempt))
		}
		require.Equal(t, webhook.StateDelivered, final.State)
		require.Equal(t, 3, final.Attempts)

		got := rc.requests()
		require.Len(t, got, 3)
		for _, g := range got {
			checkSigned(t, g, rec.ID) // every attempt is signed, with one delivery id
		}
	})

	t.Run("refuses connections", func(t *testing.T) {
		// A port with nothing listening that no other test can take
		// meanwhile (one freed after a look could be: in CI the first
		// attempt once timed out on somebody else's server).
		addr, closeFD := testutil.RefusingAddr(t)

		rc := &receiver{}
		rc.Server = httptest.NewUnstartedServer(http.HandlerFunc(rc.serve))
		t.Cleanup(rc.Close)

		r := newReports()
		o := options(r)
		var listenErr error
		o.Report = func(rec webhook.Record) {
			// Reports come before the next attempt is scheduled: the
			// receiver comes up between the second and the third.
			if rec.Attempts == 2 && rec.State == webhook.StatePending {
				closeFD()
				rc.Listener.Close()
				rc.Listener, listenErr = net.Listen("tcp", addr)
				if listenErr == nil {
					rc.Start()
				}
			}
			r.report(rec)
		}
		s := start(t, o)
		rec, err := s.Send(webhook.Delivery{URL: "http://" + addr + "/hook", Payload: payload})
		require.NoError(t, err)

		final, before := r.final(t)
		require.NoError(t, listenErr)
		require.Len(t, before, 2)
		for _, b := range before {
			require.Equal(t, webhook.ClassRefused, b.LastError)
			require.Zero(t, b.LastStatus)
		}
		require.Equal(t, webhook.StateDelivered, final.State)
		require.Equal(t, 3, final.Attempts)
		got := rc.requests()
		require.Len(t, got, 1)
		checkSigned(t, got[0], rec.ID)
	})
}

func TestStatusOutcomes(t *testing.T) {
	tests := []struct {
		status   int
		attempts int // until final
		state    webhook.State
	}{
		{http.StatusBadRequest, 1, webhook.StateFailed},
		{http.StatusUnauthorized, 1, webhook.StateFailed},
		{http.StatusForbidden, 1, webhook.StateFailed},
		{http.StatusNotFound, 1, webhook.StateFailed},
		{http.StatusGone, 1, webhook.StateFailed},
		{http.StatusUnprocessableEntity, 1, webhook.StateFailed},
		{http.StatusRequestTimeout, 2, webhook.StateDelivered},
		{http.StatusTooManyRequests, 2, webhook.StateDelivered},
		{http.StatusInternalServerError, 2, webhook.StateDelivered},
		{http.StatusBadGateway, 2, webhook.StateDelivered},
		{http.StatusNoContent, 1, webhook.StateDelivered},
		{http.StatusAccepted, 1, webhook.StateDelivered},
	}
	for _, tt := range tests {
		t.Run(http.StatusText(tt.status), func(t *testing.T) {
			rc := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.WriteHeader(tt.status)
				}
			})
			r := newReports()
			s := start(t, options(r))
			_, err := s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
			require.NoError(t, err)
			final, _ := r.final(t)
			require.Equal(t, tt.state, final.State)
			require.Equal(t, tt.attempts, final.Attempts)
			require.Len(t, rc.requests(), tt.attempts)
			if tt.state == webhook.StateFailed {
				require.Equal(t, tt.status, final.LastStatus)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	t.Run("honoured", func(t *testing.T) {
		rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
		})
		r := newReports()
		s, err := webhook.New(options(r))
		require.NoError(t, err)
		require.NoError(t, s.Start())
		rec, err := s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
		require.NoError(t, err)

		got := r.next(t)
		require.Equal(t, webhook.StatePending, got.State)
		require.Equal(t, http.StatusTooManyRequests, got.LastStatus)
		wait := got.NextAttempt.Sub(got.LastAttempt)
		require.GreaterOrEqual(t, wait, time.Hour, "the backoff is milliseconds; Retry-After asked for an hour")
		require.Less(t, wait, time.Hour+time.Minute)

		// Stop hands the waiting delivery back, as it was reported.
		pending, err := s.Stop(context.Background())
		require.NoError(t, err)
		require.Len(t, pending, 1)
		require.Equal(t, rec.ID, pending[0].ID)
		require.Equal(t, got.NextAttempt, pending[0].NextAttempt)
		require.Len(t, rc.requests(), 1)
		_, err = s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
		require.ErrorIs(t, err, webhook.ErrStopped)
	})

	t.Run("beyond the retry period", func(t *testing.T) {
		rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Retry-After", time.Now().Add(2*time.Hour).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		r := newReports()
		o := options(r)
		o.RetryFor = time.Hour
		s := start(t, o)
		_, err := s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
		require.NoError(t, err)
		final, _ := r.final(t)
		require.Equal(t, webhook.StateFailed, final.State)
		require.Equal(t, 1, final.Attempts)
		require.Equal(t, http.StatusServiceUnavailable, final.LastStatus)
		require.Equal(t, webhook.ClassRetryAfterLong, final.LastError)
	})
}

func TestRetryPeriodEnds(t *testing.T) {
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusBadGateway)
	})
	r := newReports()
	o := options(r)
	o.RetryFor = 300 * time.Millisecond
	s := start(t, o)
	rec, err := s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
	require.NoError(t, err)
	final, _ := r.final(t)
	require.Equal(t, webhook.StateFailed, final.State)
	require.GreaterOrEqual(t, final.Attempts, 2)
	require.Equal(t, http.StatusBadGateway, final.LastStatus)
	// Retried until the period ended: the last attempt was due at its end
	// at the latest, and ended after it.
	deadline := rec.Created.Add(o.RetryFor)
	require.WithinDuration(t, deadline, final.LastAttempt, time.Second)
}

func TestAttemptTimeout(t *testing.T) {
	rc := newReceiver(t, func(n int, _ http.ResponseWriter, r *http.Request) {
		if n == 1 {
			<-r.Context().Done() // never answers; the sender gives up and hangs up
		}
	})
	r := newReports()
	o := options(r)
	o.AttemptTimeout = 100 * time.Millisecond
	s := start(t, o)
	_, err := s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
	require.NoError(t, err)
	first := r.next(t)
	require.Equal(t, webhook.StatePending, first.State)
	require.Equal(t, webhook.ClassTimeout, first.LastError)
	final, _ := r.final(t)
	require.Equal(t, webhook.StateDelivered, final.State)
	require.Equal(t, 2, final.Attempts)
}

func TestRefusedByDefault(t *testing.T) {
	rc := newReceiver(t, nil)
	r := newReports()
	o := options(r)
	o.Policy = webhook.Policy{}
	s := start(t, o)
	for _, u := range []string{
		rc.URL + "/hook",
		strings.Replace(rc.URL, "127.0.0.1", "localhost", 1),
		strings.Replace(rc.URL, "127.0.0.1", "[::ffff:127.0.0.1]", 1),
		"http://169.254.169.254/latest/meta-data/iam/security-credentials/",
		"http://[fd00:ec2::254]/latest/meta-data/",
	} {
		_, err := s.Send(webhook.Delivery{URL: u, Payload: payload})
		require.ErrorIs(t, err, webhook.ErrNotAllowed, u)
		require.ErrorIs(t, s.ValidateURL(u), webhook.ErrNotAllowed, u)
	}
	require.Empty(t, rc.requests())
	require.Empty(t, s.Pending())
	require.Empty(t, r.ch)

	// A saved record whose URL is refused now ends failed, reported.
	require.NoError(t, s.Resume([]webhook.Record{{
		Delivery: webhook.Delivery{ID: "saved", URL: rc.URL, Payload: payload},
		State:    webhook.StatePending, Attempts: 3,
	}}))
	final := r.next(t)
	require.Equal(t, webhook.StateFailed, final.State)
	require.Equal(t, webhook.ClassBadURL, final.LastError)
	require.Empty(t, rc.requests())
}

// Redirects are not followed, to loopback or anywhere: the 3xx ends the
// delivery.
func TestRedirectNotFollowed(t *testing.T) {
	target := newReceiver(t, nil)
	for _, to := range []string{
		strings.Replace(target.URL, "127.0.0.1", "localhost", 1) + "/hook",
		target.URL + "/hook", // allow-listed itself, and still not followed
		"http://169.254.169.254/latest/meta-data/",
	} {
		t.Run(to, func(t *testing.T) {
			for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
				redirector := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
					http.Redirect(w, r, to, code)
				})
				r := newReports()
				s := start(t, options(r))
				_, err := s.Send(webhook.Delivery{URL: redirector.URL, Payload: payload})
				require.NoError(t, err)
				final, _ := r.final(t)
				require.Equal(t, webhook.StateFailed, final.State)
				require.Equal(t, code, final.LastStatus)
				require.Equal(t, webhook.ClassRedirect, final.LastError)
				require.Len(t, redirector.requests(), 1)
			}
		})
	}
	require.Empty(t, target.requests())
}

func TestWorkersBounded(t *testing.T) {
	const workers, deliveries = 3, 30
	var inFlight, most atomic.Int32
	rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
	})
	r := newReports()
	o := options(r)
	o.Workers = workers
	o.Registerer = prometheus.NewRegistry()
	s, err := webhook.New(o)
	require.NoError(t, err)
	// Sent before Start: they wait for it.
	ids := map[string]bool{}
	for range deliveries {
		rec, err := s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
		require.NoError(t, err)
		ids[rec.ID] = true
	}
	require.Len(t, s.Pending(), deliveries)
	require.NoError(t, s.Start())
	require.NoError(t, s.Start(), "Start twice")
	for range deliveries {
		final, _ := r.final(t)
		require.Equal(t, webhook.StateDelivered, final.State)
		require.True(t, ids[final.ID])
		delete(ids, final.ID)
	}
	require.LessOrEqual(t, most.Load(), int32(workers))
	pending, err := s.Stop(context.Background())
	require.NoError(t, err)
	require.Empty(t, pending)
	require.ErrorIs(t, s.Start(), webhook.ErrStopped)
	_, err = s.Stop(context.Background())
	require.NoError(t, err, "Stop twice")
}

func TestSendErrors(t *testing.T) {
	r := newReports()
	o := options(r)
	o.MaxPending = 1
	s, err := webhook.New(o) // not started: deliveries wait
	require.NoError(t, err)
	_, err = s.Send(webhook.Delivery{ID: "a", URL: "http://127.0.0.1:1/", Payload: payload})
	require.NoError(t, err)
	_, err = s.Send(webhook.Delivery{ID: "a", URL: "http://127.0.0.1:1/", Payload: payload})
	require.ErrorIs(t, err, webhook.ErrExists)
	_, err = s.Send(webhook.Delivery{ID: "b", URL: "http://127.0.0.1:1/", Payload: payload})
	require.ErrorIs(t, err, webhook.ErrFull)
	_, err = s.Send(webhook.Delivery{ID: "bad id\n", URL: "http://127.0.0.1:1/", Payload: payload})
	require.ErrorIs(t, err, webhook.ErrInvalidDelivery)
	_, err = s.Send(webhook.Delivery{URL: "ftp://127.0.0.1/", Payload: payload})
	require.ErrorIs(t, err, webhook.ErrInvalidURL)

	pending, err := s.Stop(context.Background())
	require.NoError(t, err)
	require.Len(t, pending, 1)
	require.Equal(t, 0, pending[0].Attempts)

	_, err = webhook.New(webhook.Options{})
	require.Error(t, err, "a secret is required")
}

func TestStop(t *testing.T) {
	t.Run("waits for the attempt in flight", func(t *testing.T) {
		entered, release := make(chan struct{}), make(chan struct{})
		rc := newReceiver(t, func(int, http.ResponseWriter, *http.Request) {
			close(entered)
			<-release
		})
		r := newReports()
		s, err := webhook.New(options(r))
		require.NoError(t, err)
		require.NoError(t, s.Start())
		_, err = s.Send(webhook.Delivery{URL: rc.URL, Payload: payload})
		require.NoError(t, err)
		<-entered

		stopped := make(chan error, 1)
		var pending []webhook.Record
		go func() {
			var err error
			pending, err = s.Stop(context.Background())
			stopped <- err
		}()
		// Stop has begun once Start refuses.
		require.Eventually(t, func() bool { return errors.Is(s.Start(), webhook.ErrStopped) }, 10*time.Second, time.Millisecond)
		select {
		case <-stopped:
			t.Fatal("Stop returned with an attempt in flight")
		default:
		}
		close(release)
		require.NoError(t, <-stopped)
		require.Empty(t, pending)
		final, _ := r.final(t)
		require.Equal(t, webhook.StateDelivered, final.State)
	})

	t.Run("cuts the attempt off when ctx ends", func(t *testing.T) {
		entered := make(chan struct{})
		var hung atomic.Bool
		rc := newReceiver(t, func(n int, w http.ResponseWriter, r *http.Request) {
			switch {
			case n == 1:
				hung.Store(true)
				close(entered)
				<-r.Context().Done()
			case r.URL.Path == "/later":
				w.Header().Set("Retry-After", "600")
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		r := newReports()
		o := options(r)
		o.AttemptTimeout = time.Hour
		s, err := webhook.New(o)
		require.NoError(t, err)
		require.NoError(t, s.Start())
		hangs, err := s.Send(webhook.Delivery{ID: "hangs", URL: rc.URL, Payload: payload})
		require.NoError(t, err)
		<-entered
		later, err := s.Send(webhook.Delivery{ID: "later", URL: rc.URL + "/later", Payload: payload})
		require.NoError(t, err)
		require.Equal(t, webhook.StatePending, r.next(t).State) // "later" waits ten minutes

		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		begun := time.Now()
		pending, err := s.Stop(ctx)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Less(t, time.Since(begun), 10*time.Second, "Stop waits for ctx, not for the attempt timeout")
		require.True(t, hung.Load())

		cut := r.next(t)
		require.Equal(t, hangs.ID, cut.ID)
		require.Equal(t, webhook.StatePending, cut.State)
		require.Equal(t, webhook.ClassInterrupted, cut.LastError)
		require.Equal(t, 1, cut.Attempts)

		require.Len(t, pending, 2)
		byID := map[string]webhook.Record{}
		for _, p := range pending {
			byID[p.ID] = p
		}
		require.Equal(t, cut, byID[hangs.ID])
		require.Equal(t, 1, byID[later.ID].Attempts)

		// The next Sender resumes them from the saved records: the same
		// delivery ids, and the cut-off one at once.
		saved, err := json.Marshal(pending)
		require.NoError(t, err)
		var loaded []webhook.Record
		require.NoError(t, json.Unmarshal(saved, &loaded))
		r2 := newReports()
		s2 := start(t, options(r2))
		require.NoError(t, s2.Resume(loaded))
		require.ErrorIs(t, s2.Resume([]webhook.Record{byID[later.ID]}), webhook.ErrExists)
		final, _ := r2.final(t)
		require.Equal(t, hangs.ID, final.ID)
		require.Equal(t, webhook.StateDelivered, final.State)
		require.Equal(t, 2, final.Attempts)
		got := rc.requests()
		checkSigned(t, got[len(got)-1], hangs.ID)
		require.Len(t, s2.Pending(), 1, "the other still waits for its Retry-After")
	})
}

// The secret never reaches a log line, whatever happens.
func TestSecretNeverLogged(t *testing.T) {
	var logs testutil.SyncBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	var flaky atomic.Int32
	rc := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/flaky") && flaky.Add(1) == 1:
			w.WriteHeader(http.StatusServiceUnavailable)
		case strings.HasPrefix(r.URL.Path, "/no"):
			w.WriteHeader(http.StatusForbidden)
		}
	})
	r := newReports()
	o := options(r)
	o.Logger = logger
	o.PreviousSecrets = []webhook.Secret{"old-" + testSecret}
	s := start(t, o)
	const pathToken = "tok-in-the-path-5f2a"
	for _, p := range []string{"/flaky/" + pathToken, "/no?t=" + pathToken, "/ok"} {
		_, err := s.Send(webhook.Delivery{URL: rc.URL + p, Payload: payload})
		require.NoError(t, err)
	}
	// Refused outright, and refused on resume.
	_, err := s.Send(webhook.Delivery{URL: "http://169.254.169.254/" + pathToken, Payload: payload})
	logger.Info("send refused", "err", err)
	require.NoError(t, s.Resume([]webhook.Record{{Delivery: webhook.Delivery{ID: "r", URL: "http://10.0.0.1/" + pathToken}}}))
	for range 4 {
		_, _ = r.final(t)
	}
	// An owner that logs its configuration and Verify's errors.
	logger.Info("configured", "options", o, "secret", o.Secret)
	logger.Info("verify", "err", webhook.Verify(testSecret, http.Header{}, []byte("x"), 0))

	out := logs.String()
	require.Contains(t, out, "webhook delivered")
	require.Contains(t, out, "webhook failed")
	require.Contains(t, out, "retrying")
	require.NotContains(t, out, testSecret)
	require.NotContains(t, out, pathToken, "paths and queries may hold tokens")
	require.NotContains(t, out, "169.254.169.254/")
}
