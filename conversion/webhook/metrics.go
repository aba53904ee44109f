package webhook

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the Sender's Prometheus metrics. A nil *metrics records
// nothing. Senders that share a registerer share the collectors.
type metrics struct {
	attempts   *prometheus.CounterVec
	deliveries *prometheus.CounterVec
	pending    prometheus.Gauge
	seconds    prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_webhook_attempts_total",
			Help: "Webhook attempts, by what they meant for their delivery (delivered, retry, failed).",
		}, []string{"result"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_webhook_deliveries_total",
			Help: "Webhook deliveries ended, by result (delivered, failed).",
		}, []string{"result"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_webhook_pending",
			Help: "Webhook deliveries not yet delivered or failed.",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "drover_webhook_attempt_seconds",
			Help:    "Time a webhook attempt took.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
	}
	var err error
	m.attempts, err = register(reg, m.attempts)
	if err == nil {
		m.deliveries, err = register(reg, m.deliveries)
	}
	if err == nil {
		m.pending, err = register(reg, m.pending)
	}
	if err == nil {
		m.seconds, err = register(reg, m.seconds)
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: register metrics: %w", err)
	}
	return m, nil
}

// register registers c, or returns the collector registered already.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if err == nil {
		return c, nil
	}
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

func (m *metrics) attempt(o outcome, d time.Duration) {
	if m == nil {
		return
	}
	m.attempts.WithLabelValues(o.String()).Inc()
	m.seconds.Observe(d.Seconds())
}

func (m *metrics) delivery(s State) {
	if m != nil {
		m.deliveries.WithLabelValues(string(s)).Inc()
	}
}

func (m *metrics) pendingAdd(n int) {
	if m != nil {
		m.pending.Add(float64(n))
	}
}
