package modelcache

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are a cache's Prometheus metrics. Without a registerer they
// are made but not registered. The gauges move by increments, so caches
// sharing a registerer add up.
type metrics struct {
	hits, misses, evictions prometheus.Counter
	bytes, entries          prometheus.Gauge
	capacity                prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_farm_cache_hits_total",
			Help: "Gets of the farm's model cache served without a download of their own.",
		}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_farm_cache_misses_total",
			Help: "Gets of the farm's model cache that downloaded the file.",
		}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_farm_cache_evictions_total",
			Help: "Entries of the farm's model cache evicted to make room.",
		}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_farm_cache_bytes",
			Help: "Bytes held in the farm's model cache.",
		}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_farm_cache_entries",
			Help: "Files held in the farm's model cache.",
		}),
		capacity: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_farm_cache_capacity_bytes",
			Help: "The farm's model cache's cap (localCache.maxSize).",
		}),
	}
	if reg == nil {
		return m, nil
	}
	var err error
	for _, p := range []*prometheus.Counter{&m.hits, &m.misses, &m.evictions} {
		if *p, err = register(reg, *p); err != nil {
			return nil, err
		}
	}
	for _, p := range []*prometheus.Gauge{&m.bytes, &m.entries, &m.capacity} {
		if *p, err = register(reg, *p); err != nil {
			return nil, err
		}
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
		return c, fmt.Errorf("modelcache: register metrics: %w", err)
	}
	return c, nil
}

// add moves the entry and byte gauges.
func (m *metrics) add(entries int, bytes int64) {
	m.entries.Add(float64(entries))
	m.bytes.Add(float64(bytes))
}
