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
	badFrames      prometheus.Counter
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
		badFrames: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "drover_manager_bad_frames_total", Help: "Client frames answered with bad_request."}),
	}
	m.eventsDropped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "drover_manager_events_dropped_total", Help: "Events not published because the queue to the store was full."})
	m.resets = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "drover_manager_instance_resets_total",
		Help: "Reset tasks run on instances of reuse pools between sessions, by pool and result (ok, or error: the instance is stopped)."},
		[]string{"pool", "result"})
	for _, c := range []prometheus.Collector{m.sessions, m.detached, m.sessionsOpened, m.tasks, m.taskSeconds,
		m.badFrames, m.eventsDropped} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	if err := reg.Register(m.resets); err != nil {
		return nil, err
	}
	return m, nil
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
