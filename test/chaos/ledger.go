//go:build chaos

package chaos

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// ledger records what the chaos run's clients did and saw: every task
// and the answers it got, the instances sessions were bound to, resumes,
// conversion jobs, operations and faults by kind. The invariant checks
// read it at the end.
type ledger struct {
	mu      sync.Mutex
	tasks   map[string]*taskRec // session/task id
	order   []*taskRec
	ops     map[string]int
	faults  map[string]int
	answers map[string]int // error answers clients got, by code
	// internal: messages of internal errors.
	internal []string
	obs      []binding
	resumes  []resumeRec
	jobs     []*jobRec
	notes    []string // violations seen as they happened
}

func newLedger() *ledger {
	return &ledger{tasks: map[string]*taskRec{}, ops: map[string]int{}, faults: map[string]int{}, answers: map[string]int{}}
}

// taskRec is one task: the terminal answers it got (done, or an error
// code), and whether its connection was cut (closed under it, or dropped
// by the client after the manager stopped answering pings) before one
// came.
type taskRec struct {
	key, what string
	sent      time.Time
	answers   []string
	cut       bool
}

// binding is one observation of a session bound to an instance: the pid
// the worker reported, on a farm in its epoch (restarts of its container,
// which start pids over).
type binding struct {
	session, instance, farm string
	epoch, pid              int
	at                      time.Time
}

// resumeRec is one resume that got a welcome: whether it found its own
// session, instance, pid and state.
type resumeRec struct {
	session string
	ok      bool
	why     string
}

// jobRec is one conversion job: the item, the states its polls saw, its
// end.
type jobRec struct {
	item, name string
	broken     bool
	states     []string
	final      map[string]any
	glbOK      string // "" or why the GLB is not the item's outputs
}

func (l *ledger) op(kind string) {
	l.mu.Lock()
	l.ops[kind]++
	l.mu.Unlock()
}

func (l *ledger) fault(kind string) {
	l.mu.Lock()
	l.faults[kind]++
	l.mu.Unlock()
}

// answer counts an error answer; the messages of internal errors are
// kept too (the first few), since one is worth a look.
func (l *ledger) answer(code, message string) {
	l.mu.Lock()
	l.answers[code]++
	if code == "internal" && len(l.internal) < 5 {
		l.internal = append(l.internal, message)
	}
	l.mu.Unlock()
}

func (l *ledger) note(format string, args ...any) {
	l.mu.Lock()
	l.notes = append(l.notes, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

// sent records a new task.
func (l *ledger) sent(key, what string) *taskRec {
	r := &taskRec{key: key, what: what, sent: time.Now()}
	l.mu.Lock()
	l.tasks[key] = r
	l.order = append(l.order, r)
	l.ops["task "+what]++
	l.mu.Unlock()
	return r
}

// answered records a terminal answer of the task key and reports how many
// it has now (0: no such task).
func (l *ledger) answered(key, answer string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.tasks[key]
	if r == nil {
		return 0
	}
	r.answers = append(r.answers, answer)
	return len(r.answers)
}

func (l *ledger) cutTask(r *taskRec) {
	l.mu.Lock()
	if len(r.answers) == 0 {
		r.cut = true
	}
	l.mu.Unlock()
}

func (l *ledger) bound(b binding) {
	l.mu.Lock()
	l.obs = append(l.obs, b)
	l.mu.Unlock()
}

func (l *ledger) resumed(r resumeRec) {
	l.mu.Lock()
	l.resumes = append(l.resumes, r)
	l.mu.Unlock()
}

func (l *ledger) job(j *jobRec) {
	l.mu.Lock()
	l.jobs = append(l.jobs, j)
	l.mu.Unlock()
}

// counts formats a map of counts as "a 3, b 1", sorted by name.
func counts(m map[string]int) string {
	var keys []string
	total := 0
	for k, v := range m {
		keys = append(keys, k)
		total += v
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	if len(parts) == 0 {
		return "none"
	}
	return fmt.Sprintf("%d: %s", total, strings.Join(parts, ", "))
}
