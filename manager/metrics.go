package manager

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	sessions       prometheus.Gauge
	detached       prometheus.Gauge
	sessionsOpened *prometheus.CounterVec
	tasks          *prometheus.CounterVec
	taskSeconds    *prometheus.HistogramVec
	queueLength    prometheus.Gauge
	spawns         *prometheus.CounterVec
	spawnSeconds   prometheus.Histogram
	instancesLost  prometheus.Counter
	badFrames      prometheus.Counter
	farmEvents     *prometheus.CounterVec
	storeUp        prometheus.Gauge
	eventsDropped  prometheus.Counter
	resets         *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_manager_sessions", Help: "Sessions open on this manager, placed or waiting."}),
		detached: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_manager_sessions_detached", Help: "Sessions whose client dropped and may resume."}),
		sessionsOpened: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_manager_sessions_opened_total", Help: "Sessions bound to an instance."}, []string{"pool"}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_manager_tasks_total", Help: "Tasks served, by pool and outcome code."}, []string{"pool", "code"}),
		taskSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "drover_manager_task_duration_seconds", Help: "Time from a task's arrival to its last result.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}, []string{"pool"}),
		queueLength: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_manager_queue_length", Help: "Sessions waiting for an instance."}),
		spawns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_manager_spawns_total", Help: "Instance starts asked of farms, by pool and result."}, []string{"pool", "result"}),
		spawnSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "drover_manager_spawn_duration_seconds", Help: "Time from asking a farm for an instance to a connection to it.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 12)}),
		instancesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_manager_instances_lost_total", Help: "Instances that died or became unreachable."}),
		badFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_manager_bad_frames_total", Help: "Client frames answered with bad_request."}),
		farmEvents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "drover_manager_farm_events_total", Help: "Farm registrations, deregistrations, drains and deaths."}, []string{"event"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "drover_manager_store_up", Help: "1 while the shared state store answers, 0 while it cannot be reached."}),
	}
	m.storeUp.Set(1)
	m.eventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "drover_manager_events_dropped_total", Help: "Events not published because the queue to the store was full."})
	m.resets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_manager_instance_resets_total",
		Help: "Reset tasks run on instances of reuse pools between sessions, by pool and result (ok, or error: the instance is stopped)."},
		[]string{"pool", "result"})
	for _, c := range []prometheus.Collector{m.sessions, m.detached, m.sessionsOpened, m.tasks, m.taskSeconds,
		m.queueLength, m.spawns, m.spawnSeconds, m.instancesLost, m.badFrames, m.farmEvents, m.storeUp, m.eventsDropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if err := reg.Register(m.resets); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *metrics) registerCapacity(reg prometheus.Registerer, capa func() Capacity) {
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

// poolMetrics are one pool's task metrics, resolved once: looking a vector
// child up per task would hash labels and take the vector's lock, a lock
// shared by every session.
type poolMetrics struct {
	ok      prometheus.Counter
	seconds prometheus.Observer
}

func (m *metrics) forPool(pool string) poolMetrics {
	return poolMetrics{ok: m.tasks.WithLabelValues(pool, "ok"), seconds: m.taskSeconds.WithLabelValues(pool)}
}

func (m *metrics) observeTask(p *poolState, err error, d time.Duration) {
	if err == nil {
		p.metrics.ok.Inc()
	} else {
		code, _ := errorOf(err)
		m.tasks.WithLabelValues(p.cfg.Name, code).Inc() // failures are rare
	}
	p.metrics.seconds.Observe(d.Seconds())
}
