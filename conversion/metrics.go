package conversion

import (
	"context"
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's own: uploads, ends, reclaimed leases, purged
// items, and, at every scrape, the queue's depth and the farms' job slots.
type metrics struct {
	uploaded  prometheus.Counter
	finished  *prometheus.CounterVec
	reclaimed prometheus.Counter
	purged    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, s *Service) (*metrics, error) {
	m := &metrics{
		uploaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_conversion_upload_bytes_total",
			Help: "Bytes of files uploaded for conversion.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_conversion_items_finished_total",
			Help: "Conversions ended, by result (success, error).",
		}, []string{"result"}),
		reclaimed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_conversion_leases_reclaimed_total",
			Help: "Job leases that expired and were taken back from their farm.",
		}),
		purged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_conversion_items_purged_total",
			Help: "Items removed by retention, by reason (age, unfinished).",
		}, []string{"reason"}),
	}
	for _, r := range []string{purgeAge, purgeUnfinished} {
		m.purged.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	var err error
	if m.uploaded, err = register(reg, m.uploaded); err != nil {
		return nil, err
	}
	if m.finished, err = register(reg, m.finished); err != nil {
		return nil, err
	}
	if m.reclaimed, err = register(reg, m.reclaimed); err != nil {
		return nil, err
	}
	if m.purged, err = register(reg, m.purged); err != nil {
		return nil, err
	}
	if _, err := register(reg, prometheus.Collector(&statusCollector{s: s})); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector registered already
// (services sharing a registry share their metrics).
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	if are := (prometheus.AlreadyRegisteredError{}); errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("conversion: register metrics: %w", err)
	}
	return c, nil
}

var (
	descJobs = prometheus.NewDesc("drover_conversion_jobs",
		"Conversion jobs in the queue, by state (pending, delayed, leased).", []string{"state"}, nil)
	descEnded = prometheus.NewDesc("drover_conversion_jobs_ended",
		"Conversion jobs ended since the queue began, by state (done, failed).", []string{"state"}, nil)
	descSlots = prometheus.NewDesc("drover_conversion_job_slots",
		"Job slots of the farms that lease from this manager.", nil, nil)
	descFree = prometheus.NewDesc("drover_conversion_job_slots_free",
		"Free job slots of the farms that lease from this manager.", nil, nil)
)

// statusCollector reads the queue's stats and the job slots at scrape
// time.
type statusCollector struct{ s *Service }

func (c *statusCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descJobs
	ch <- descEnded
	ch <- descSlots
	ch <- descFree
}

func (c *statusCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Status(context.Background())
	if st.QueueError == "" {
		for state, n := range map[string]int64{"pending": st.Queue.Pending, "delayed": st.Queue.Delayed, "leased": st.Queue.Leased} {
			ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), state)
		}
		ch <- prometheus.MustNewConstMetric(descEnded, prometheus.CounterValue, float64(st.Queue.Done), "done")
		ch <- prometheus.MustNewConstMetric(descEnded, prometheus.CounterValue, float64(st.Queue.Failed), "failed")
	}
	ch <- prometheus.MustNewConstMetric(descSlots, prometheus.GaugeValue, float64(st.JobSlots))
	ch <- prometheus.MustNewConstMetric(descFree, prometheus.GaugeValue, float64(st.FreeJobSlots))
}
