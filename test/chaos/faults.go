//go:build chaos

package chaos

import (
	"math/rand"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/internal/testkit/clustertest"
)

// A fault breaks one container and heals it.
type fault struct {
	kind string
	// targets: "farm", "manager" or "redis".
	targets string
	apply   func(c *clustertest.Cluster, name string)
	heal    func(c *clustertest.Cluster, name string)
}

var faults = []fault{
	{"kill -9 farm", "farm", (*clustertest.Cluster).Kill, (*clustertest.Cluster).Restart},
	{"kill -9 manager", "manager", (*clustertest.Cluster).Kill, (*clustertest.Cluster).Restart},
	{"pause farm", "farm", (*clustertest.Cluster).Pause, (*clustertest.Cluster).Unpause},
	{"pause manager", "manager", (*clustertest.Cluster).Pause, (*clustertest.Cluster).Unpause},
	{"partition farm", "farm", (*clustertest.Cluster).Disconnect, (*clustertest.Cluster).Connect},
	{"partition manager", "manager", (*clustertest.Cluster).Disconnect, (*clustertest.Cluster).Connect},
	{"restart redis", "redis", (*clustertest.Cluster).Restart, nil},
}

// injector breaks the cluster at random until the deadline: a fault every
// few seconds, held a few seconds, healed, and the cluster awaited ready
// again before the next. The kinds come in rounds, each kind once a round
// in a random order, so that a short run sees every kind. Its random
// numbers come from the run's seed.
type injector struct {
	t      *testing.T
	c      *clustertest.Cluster
	l      *ledger
	epochs *epochs
	rng    *rand.Rand
	// restarted: containers killed and started again (not survivors).
	restarted map[string]bool
	bag       []fault // what is left of this round
}

// next draws the next fault of the round, starting a new round when the
// last one is used up.
func (in *injector) next() fault {
	if len(in.bag) == 0 {
		in.bag = append([]fault(nil), faults...)
		in.rng.Shuffle(len(in.bag), func(i, j int) { in.bag[i], in.bag[j] = in.bag[j], in.bag[i] })
	}
	f := in.bag[0]
	in.bag = in.bag[1:]
	return f
}

func (in *injector) run(until time.Time) {
	for {
		gap := time.Duration(3000+in.rng.Intn(5000)) * time.Millisecond
		if time.Now().Add(gap).After(until) {
			return
		}
		time.Sleep(gap) // the load runs meanwhile: a pace, not a synchronisation
		f := in.next()
		name := in.pick(f)
		hold := time.Duration(1500+in.rng.Intn(4500)) * time.Millisecond
		in.t.Logf("%s fault: %s %s, held %.1f s", time.Now().Format("15:04:05.000"), f.kind, name, hold.Seconds())
		in.l.fault(f.kind)
		f.apply(in.c, name)
		if f.kind == "kill -9 farm" {
			in.epochs.next(name) // its pids start over
		}
		if f.heal != nil {
			time.Sleep(hold)
			f.heal(in.c, name)
		}
		if f.kind == "kill -9 farm" || f.kind == "kill -9 manager" || f.kind == "restart redis" {
			in.restarted[name] = true
		}
		began := time.Now()
		in.c.WaitReady(2 * time.Minute)
		in.t.Logf("%s healed: %s %s; the cluster was ready again after %.1f s", time.Now().Format("15:04:05.000"), f.kind, name,
			time.Since(began).Seconds())
	}
}

// pick chooses the container of a fault. Kills spare the last farm and
// the last manager (which are still paused and cut off), so that the run
// has survivors whose goroutines and memory are checked against their
// baseline; the issue kills "one manager".
func (in *injector) pick(f fault) string {
	farms, managers := in.c.Farms, in.c.Managers
	if strings.HasPrefix(f.kind, "kill") {
		farms, managers = farms[:len(farms)-1], managers[:len(managers)-1]
	}
	switch f.targets {
	case "farm":
		return farms[in.rng.Intn(len(farms))]
	case "manager":
		return managers[in.rng.Intn(len(managers))]
	}
	return f.targets
}
