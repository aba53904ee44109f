package placement

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics keep the names they had when placement was part of the manager:
// dashboards and alerts use them, and they still describe the manager.
type metrics struct {
	queueLength   prometheus.Gauge
	spawns        *prometheus.CounterVec
	spawnSeconds  prometheus.Histogram
	instancesLost prometheus.Counter
	farmEvents    *prometheus.CounterVec
	storeUp       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		queueLength: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_manager_queue_length", Help: "Sessions waiting for an instance."}),
		spawns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_manager_spawns_total", Help: "Instance starts asked of farms, by pool and result."}, []string{"pool", "result"}),
		spawnSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "drover_manager_spawn_duration_seconds", Help: "Time from asking a farm for an instance to a connection to it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		instancesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_manager_instances_lost_total", Help: "Instances that died or became unreachable."}),
		farmEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_manager_farm_events_total",
			Help: "Farm registrations, deregistrations, drains, deaths, and farms found unreachable (suspect)."}, []string{"event"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_manager_store_up", Help: "1 while the shared state store answers, 0 while it cannot be reached."}),
	}
	m.storeUp.Set(1)
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.queueLength, m.spawns, m.spawnSeconds, m.instancesLost, m.farmEvents, m.storeUp} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) registerCapacity(reg prometheus.Registerer, capa func() Capacity) {
	if reg == nil {
		return
	}
	_ = reg.Register(&capacityCollector{capa: capa,
		slots: prometheus.NewDesc("drover_manager_capacity_slots", "Slots of live farms that take sessions.", nil, nil),
		busy:  prometheus.NewDesc("drover_manager_capacity_busy", "Busy slots: bound, or starting for a waiting session.", nil, nil),
	})
}

// capacityCollector reports the capacity gauges from one reading per
// scrape: with a shared store a reading is a round trip to it.
type capacityCollector struct {
	capa        func() Capacity
	slots, busy *prometheus.Desc
}

func (c *capacityCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.slots; ch <- c.busy }

func (c *capacityCollector) Collect(ch chan<- prometheus.Metric) {
	cp := c.capa()
	ch <- prometheus.MustNewConstMetric(c.slots, prometheus.GaugeValue, float64(cp.Slots))
	ch <- prometheus.MustNewConstMetric(c.busy, prometheus.GaugeValue, float64(cp.Busy))
}
