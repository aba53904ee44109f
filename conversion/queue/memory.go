package queue

import (
	"container/heap"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
)

var errClosed = fmt.Errorf("%w: queue closed", ErrUnavailable)

// Memory is a Queue in the process, for one manager (`drover up`). One
// mutex guards it; no call holds it while it waits. Its jobs do not
// survive the process.
type Memory struct {
	o  Options
	ws waiters

	mu      sync.Mutex
	closed  bool
	done    chan struct{} // closed by Close
	jobs    map[string]*memJob
	ready   []readyEntry // FIFO from head; entries of jobs since moved are skipped
	head    int
	delayed delayHeap
	leased  map[string]*memJob
	ended   []endEntry // in order of ending, for Retention
	seq     uint64     // tokens and queue entries
	stats   Stats      // Done and Failed; the rest is counted on demand
	pending int64      // jobs in StatePending
	ndelay  int64      // jobs in StateDelayed
}

var _ Queue = (*Memory)(nil)

type memJob struct {
	id, item string
	payload  []byte
	state    State
	entry    uint64 // the ready or delayed entry that stands for the job
	attempts int
	token    string // the current lease's
	consumer string
	expires  time.Time
	due      time.Time
	reason   string
	created  time.Time
	endedAt  time.Time
	// The last attempt that ended by Complete or Fail, to answer its
	// repeated calls.
	lastToken string
	lastCall  string // "complete" or "fail"
	last      Outcome
}

type readyEntry struct {
	job   *memJob
	entry uint64
}

type endEntry struct {
	job *memJob
	at  time.Time
}

type delayEntry struct {
	job   *memJob
	entry uint64
	due   time.Time
}

type delayHeap []delayEntry

func (h delayHeap) Len() int           { return len(h) }
func (h delayHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h delayHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *delayHeap) Push(x any)        { *h = append(*h, x.(delayEntry)) }
func (h *delayHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = delayEntry{}
	*h = old[:len(old)-1]
	return e
}

// NewMemory returns an empty queue, or an error for invalid options.
func NewMemory(o Options) (*Memory, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Memory{
		o:      o,
		done:   make(chan struct{}),
		jobs:   make(map[string]*memJob),
		leased: make(map[string]*memJob),
	}, nil
}

// lock locks m unless it is closed.
func (m *Memory) lock() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errClosed
	}
	return nil
}

func (m *Memory) next() uint64 {
	m.seq++
	return m.seq
}

// makeReady queues j at the tail. Locked.
func (m *Memory) makeReady(j *memJob) {
	j.state, j.entry, j.token = StatePending, m.next(), ""
	m.ready = append(m.ready, readyEntry{job: j, entry: j.entry})
	m.pending++
}

// delay queues j until due. Locked.
func (m *Memory) delay(j *memJob, due time.Time) {
	j.state, j.entry, j.token, j.due = StateDelayed, m.next(), "", due
	heap.Push(&m.delayed, delayEntry{job: j, entry: j.entry, due: due})
	m.ndelay++
}

// end records j's end. Locked.
func (m *Memory) end(j *memJob, s State, now time.Time) {
	delete(m.leased, j.id)
	j.state, j.token, j.payload, j.endedAt = s, "", nil, now
	m.ended = append(m.ended, endEntry{job: j, at: now})
	if s == StateDone {
		m.stats.Done++
	} else {
		m.stats.Failed++
	}
}

// promote moves due delayed jobs to ready and reports when the next one is
// due (zero: none delayed). Locked.
func (m *Memory) promote(now time.Time) (next time.Time, n int) {
	for len(m.delayed) > 0 {
		e := m.delayed[0]
		if e.job.state != StateDelayed || e.job.entry != e.entry {
			heap.Pop(&m.delayed)
			continue
		}
		if e.due.After(now) {
			return e.due, n
		}
		heap.Pop(&m.delayed)
		m.ndelay--
		m.makeReady(e.job)
		n++
	}
	return time.Time{}, n
}

// prune forgets ended jobs older than Retention. Locked.
func (m *Memory) prune(now time.Time) {
	i := 0
	for ; i < len(m.ended) && now.Sub(m.ended[i].at) >= m.o.Retention; i++ {
		e := m.ended[i]
		if m.jobs[e.job.id] == e.job && e.job.state.Ended() && e.job.endedAt.Equal(e.at) {
			delete(m.jobs, e.job.id)
		}
		m.ended[i] = endEntry{}
	}
	m.ended = m.ended[i:]
}

// Enqueue implements Queue.
func (m *Memory) Enqueue(ctx context.Context, job Job) error {
	if err := checkJob(job); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.lock(); err != nil {
		return err
	}
	if j, ok := m.jobs[job.ID]; ok && !j.state.Ended() {
		m.mu.Unlock()
		return fmt.Errorf("%w: %s", ErrExists, job.ID)
	}
	now := time.Now()
	j := &memJob{id: job.ID, item: job.Item, payload: clone(job.Payload), created: now}
	m.jobs[job.ID] = j
	ready := !job.NotBefore.After(now)
	if ready {
		m.makeReady(j)
	} else {
		m.delay(j, job.NotBefore)
	}
	m.mu.Unlock()
	if ready {
		m.ws.wake(1)
	}
	return nil
}

func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}

// Lease implements Queue.
func (m *Memory) Lease(ctx context.Context, req LeaseRequest) ([]Lease, error) {
	req, err := req.check(m.o)
	if err != nil {
		return nil, err
	}
	return m.ws.wait(ctx, req, m.done, 0, func(ctx context.Context) ([]Lease, time.Time, error) {
		return m.poll(ctx, req)
	})
}

func (m *Memory) poll(ctx context.Context, req LeaseRequest) ([]Lease, time.Time, error) {
	if err := ctx.Err(); err != nil {
		return nil, time.Time{}, err
	}
	if err := m.lock(); err != nil {
		return nil, time.Time{}, err
	}
	defer m.mu.Unlock()
	now := time.Now()
	next, _ := m.promote(now)
	var out []Lease
	for len(out) < req.Max && m.head < len(m.ready) {
		e := m.ready[m.head]
		m.ready[m.head] = readyEntry{}
		m.head++
		j := e.job
		if j.state != StatePending || j.entry != e.entry {
			continue
		}
		m.pending--
		j.state, j.attempts = StateLeased, j.attempts+1
		j.token = "m" + strconv.FormatUint(m.next(), 36)
		j.consumer, j.expires = req.Consumer, now.Add(req.Duration)
		m.leased[j.id] = j
		out = append(out, Lease{
			JobID: j.id, Item: j.item, Payload: clone(j.payload), Attempt: j.attempts,
			Token: j.token, Consumer: j.consumer, Expires: j.expires,
		})
	}
	// Reuse the ready slice once it is drained, or compact it when its
	// dead head is most of it.
	if m.head == len(m.ready) {
		m.ready, m.head = m.ready[:0], 0
	} else if m.head > 1024 && m.head > len(m.ready)/2 {
		m.ready = append(m.ready[:0], m.ready[m.head:]...)
		m.head = 0
	}
	return out, next, nil
}

// holder returns the job whose lease token is, or the error for a call by
// a token that does not hold it. Locked.
func (m *Memory) holder(jobID, token, call string) (*memJob, Outcome, error) {
	j, ok := m.jobs[jobID]
	if !ok {
		return nil, Outcome{}, fmt.Errorf("%w: %s", ErrNotFound, jobID)
	}
	if j.state == StateLeased && j.token == token {
		return j, Outcome{}, nil
	}
	if j.lastToken == token && j.lastCall == call {
		return nil, j.last, fmt.Errorf("%w: job %s attempt %d", ErrDuplicate, jobID, j.last.Attempt)
	}
	return nil, Outcome{}, fmt.Errorf("%w: job %s", ErrLeaseLost, jobID)
}

// Renew implements Queue.
func (m *Memory) Renew(ctx context.Context, jobID, token string, d time.Duration) (time.Time, error) {
	if err := ctx.Err(); err != nil {
		return time.Time{}, err
	}
	if err := m.lock(); err != nil {
		return time.Time{}, err
	}
	defer m.mu.Unlock()
	j, _, err := m.holder(jobID, token, "renew")
	if err != nil {
		return time.Time{}, err
	}
	j.expires = time.Now().Add(m.o.leaseFor(d))
	return j.expires, nil
}

// Complete implements Queue.
func (m *Memory) Complete(ctx context.Context, jobID, token string) (Outcome, error) {
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	if err := m.lock(); err != nil {
		return Outcome{}, err
	}
	defer m.mu.Unlock()
	j, dup, err := m.holder(jobID, token, "complete")
	if err != nil {
		return dup, err
	}
	out := Outcome{JobID: j.id, Item: j.item, State: StateDone, Attempt: j.attempts, Consumer: j.consumer}
	m.end(j, StateDone, time.Now())
	j.lastToken, j.lastCall, j.last = token, "complete", out
	return out, nil
}

// Fail implements Queue.
func (m *Memory) Fail(ctx context.Context, jobID, token string, f Failure) (Outcome, error) {
	if err := ctx.Err(); err != nil {
		return Outcome{}, err
	}
	r := rand.Float64()
	if err := m.lock(); err != nil {
		return Outcome{}, err
	}
	j, dup, err := m.holder(jobID, token, "fail")
	if err != nil {
		m.mu.Unlock()
		return dup, err
	}
	now := time.Now()
	out := Outcome{JobID: j.id, Item: j.item, Attempt: j.attempts, Consumer: j.consumer, Reason: f.Reason}
	j.reason = f.Reason
	wake := false
	if f.Final || j.attempts >= m.o.MaxAttempts {
		out.State = StateFailed
		m.end(j, StateFailed, now)
	} else {
		delete(m.leased, j.id)
		out.State, out.RetryAt = StateDelayed, now.Add(m.o.Backoff.Delay(j.attempts, r))
		if out.RetryAt.After(now) {
			m.delay(j, out.RetryAt)
		} else {
			m.makeReady(j)
			wake = true
		}
	}
	j.lastToken, j.lastCall, j.last = token, "fail", out
	m.mu.Unlock()
	if wake {
		m.ws.wake(1)
	}
	return out, nil
}

// Reclaim implements Queue.
func (m *Memory) Reclaim(ctx context.Context) ([]Outcome, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := m.lock(); err != nil {
		return nil, err
	}
	now := time.Now()
	var out []Outcome
	wake := 0
	for _, j := range m.leased {
		if j.expires.After(now) {
			continue
		}
		o := Outcome{JobID: j.id, Item: j.item, Attempt: j.attempts, Consumer: j.consumer, Reason: ReasonLeaseExpired}
		j.reason = ReasonLeaseExpired
		if j.attempts >= m.o.MaxAttempts {
			o.State = StateFailed
			m.end(j, StateFailed, now)
		} else {
			o.State = StatePending
			delete(m.leased, j.id)
			m.makeReady(j)
			wake++
		}
		out = append(out, o)
	}
	_, n := m.promote(now)
	m.prune(now)
	m.mu.Unlock()
	m.ws.wake(wake + n)
	return out, nil
}

// Delete implements Queue.
func (m *Memory) Delete(ctx context.Context, jobID string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := m.lock(); err != nil {
		return err
	}
	defer m.mu.Unlock()
	j, ok := m.jobs[jobID]
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotFound, jobID)
	}
	switch j.state {
	case StatePending:
		m.pending--
	case StateDelayed:
		m.ndelay--
	}
	delete(m.jobs, jobID)
	delete(m.leased, jobID)
	// Its ready or delayed entry is skipped when reached; a job of the
	// same id enqueued later has a new entry.
	j.state, j.entry, j.token, j.payload = StateFailed, 0, "", nil
	return nil
}

// Get implements Queue.
func (m *Memory) Get(ctx context.Context, jobID string) (Info, error) {
	if err := ctx.Err(); err != nil {
		return Info{}, err
	}
	if err := m.lock(); err != nil {
		return Info{}, err
	}
	defer m.mu.Unlock()
	j, ok := m.jobs[jobID]
	if !ok || (j.state.Ended() && time.Since(j.endedAt) >= m.o.Retention) {
		return Info{}, fmt.Errorf("%w: %s", ErrNotFound, jobID)
	}
	in := Info{
		ID: j.id, Item: j.item, State: j.state, Attempts: j.attempts, Consumer: j.consumer,
		Reason: j.reason, Created: j.created, Ended: j.endedAt,
	}
	switch j.state {
	case StateLeased:
		in.Expires = j.expires
	case StateDelayed:
		in.Due = j.due
	}
	return in, nil
}

// Stats implements Queue.
func (m *Memory) Stats(ctx context.Context) (Stats, error) {
	if err := ctx.Err(); err != nil {
		return Stats{}, err
	}
	if err := m.lock(); err != nil {
		return Stats{}, err
	}
	defer m.mu.Unlock()
	s := m.stats
	s.Pending, s.Delayed, s.Leased = m.pending, m.ndelay, int64(len(m.leased))
	return s, nil
}

// Close implements Queue. Its jobs are gone with it.
func (m *Memory) Close() error {
	m.mu.Lock()
	if !m.closed {
		m.closed = true
		close(m.done)
	}
	m.mu.Unlock()
	return nil
}
