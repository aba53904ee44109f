package farm

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Results of a start, the values of the "result" label.
const (
	resultReady    = "ready"
	resultNoSlot   = "no_slot"
	resultTimeout  = "timeout"
	resultExited   = "exited"   // the process exited before it was ready
	resultCanceled = "canceled" // the caller gave up, or a stop or Close took it
	resultError    = "error"    // no process: no port, bad template, exec failed
)

// metrics are the farm's Prometheus metrics. A nil *metrics records nothing.
type metrics struct {
	instances    *prometheus.GaugeVec
	starts       *prometheus.CounterVec
	exits        *prometheus.CounterVec
	startSeconds *prometheus.HistogramVec
	untracked    prometheus.Counter
	modelFiles   *prometheus.CounterVec
}

// newMetrics registers the farm's metrics with reg; nil reg means none.
// Farms that share a registerer share the collectors: the gauge moves by
// increments, so their counts add up.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		instances: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "drover_farm_instances",
			Help: "Live instances of the farm by pool and state.",
		}, []string{"pool", "state"}),
		starts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_farm_instance_starts_total",
			Help: "Instance starts by pool and result (ready, no_slot, timeout, exited, canceled, error).",
		}, []string{"pool", "result"}),
		exits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_farm_instance_exits_total",
			Help: "Instances that exited although nobody asked them to stop, by pool.",
		}, []string{"pool"}),
		startSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_farm_instance_start_seconds",
			Help:    "Time from a start request to a ready instance, by pool.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 15, 30},
		}, []string{"pool"}),
		untracked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_farm_untracked_containers_removed_total",
			Help: "Containers labelled with the farm's id that it did not track (left by a previous run, or by a failed removal) and removed.",
		}),
		modelFiles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_farm_session_files_total",
			Help: "Files fetched into streaming sessions' model directories, by result (ok, error).",
		}, []string{"result"}),
	}
	var err error
	if m.instances, err = register(reg, m.instances); err != nil {
		return nil, err
	}
	if m.starts, err = register(reg, m.starts); err != nil {
		return nil, err
	}
	if m.exits, err = register(reg, m.exits); err != nil {
		return nil, err
	}
	if m.startSeconds, err = register(reg, m.startSeconds); err != nil {
		return nil, err
	}
	if m.untracked, err = register(reg, m.untracked); err != nil {
		return nil, err
	}
	if m.modelFiles, err = register(reg, m.modelFiles); err != nil {
		return nil, err
	}
	return m, nil
}

func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing, nil
			}
		}
		return c, fmt.Errorf("farm: register metrics: %w", err)
	}
	return c, nil
}

// transition moves one instance of pool from state from to state to; an
// empty state means not counted (not yet spawned, or gone).
func (m *metrics) transition(pool string, from, to State) {
	if m == nil {
		return
	}
	if from != "" {
		m.instances.WithLabelValues(pool, string(from)).Dec()
	}
	if to != "" {
		m.instances.WithLabelValues(pool, string(to)).Inc()
	}
}

func (m *metrics) start(pool, result string) {
	if m == nil {
		return
	}
	m.starts.WithLabelValues(pool, result).Inc()
}

func (m *metrics) startDuration(pool string, d time.Duration) {
	if m == nil {
		return
	}
	m.startSeconds.WithLabelValues(pool).Observe(d.Seconds())
}

func (m *metrics) untrackedRemoved() {
	if m == nil {
		return
	}
	m.untracked.Inc()
}

func (m *metrics) exit(pool string) {
	if m == nil {
		return
	}
	m.exits.WithLabelValues(pool).Inc()
}

// startResult maps a failed start's error to its result label.
func startResult(err error) string {
	switch {
	case errors.Is(err, ErrStartTimeout):
		return resultTimeout
	case errors.Is(err, errStoppedEarly), errors.Is(err, ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return resultCanceled
	case errors.Is(err, errExitedEarly):
		return resultExited
	default:
		return resultError
	}
}

// modelFetch counts a session file's fetch.
func (m *metrics) modelFetch(ok bool) {
	if m == nil {
		return
	}
	result := "ok"
	if !ok {
		result = "error"
	}
	m.modelFiles.WithLabelValues(result).Inc()
}
