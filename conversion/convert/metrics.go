package convert

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the converters' Prometheus metrics. A nil *metrics records
// nothing.
type metrics struct {
	stepSeconds *prometheus.HistogramVec
}

// newMetrics registers the metrics with reg; nil reg means none. Converters
// that share a registerer share the collectors.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &metrics{
		stepSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "drover_conversion_step_seconds",
			Help:    "Time a converter step took, by output type (glb, png, stl, obj, shattered) and result (ok, error, timeout, limit: killed for its memory or CPU time limit).",
			Buckets: []float64{.05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600},
		}, []string{"type", "result"}),
	}
	if err := reg.Register(m.stepSeconds); err != nil {
		var are prometheus.AlreadyRegisteredError
		if !errors.As(err, &are) {
			return nil, fmt.Errorf("convert: register metrics: %w", err)
		}
		existing, ok := are.ExistingCollector.(*prometheus.HistogramVec)
		if !ok {
			return nil, fmt.Errorf("convert: register metrics: %w", err)
		}
		m.stepSeconds = existing
	}
	return m, nil
}

func (m *metrics) step(typ string, err error, d time.Duration) {
	if m == nil {
		return
	}
	result := "ok"
	switch {
	case errors.Is(err, ErrTimeout):
		result = "timeout"
	case errors.Is(err, ErrLimit):
		result = "limit"
	case err != nil:
		result = "error"
	}
	m.stepSeconds.WithLabelValues(typ, result).Observe(d.Seconds())
}
