package placement

import (
	"sort"
	"time"
)

// Capacity is the input of the health rule.
type Capacity struct {
	Slots    int // slots of live farms that take sessions
	Busy     int // bound instances and starts a holder waits for
	Idle     int // ready instances nobody uses
	Starting int // all starts under way
	Queued   int // holders waiting
	// StoreDown: the shared state cannot be reached. Slots and Busy are
	// then this manager's own view, and nothing can be placed.
	StoreDown bool
}

// Ratio is Busy/Slots, or 1 when there are no slots.
func (c Capacity) Ratio() float64 {
	if c.Slots <= 0 {
		return 1
	}
	return float64(c.Busy) / float64(c.Slots)
}

// Capacity is the shared view of slots and busy ones (every manager's
// holders), with this manager's idle, starting and queued counts.
func (p *Placer) Capacity() Capacity {
	p.mu.Lock()
	c := p.capacityLocked()
	p.mu.Unlock()
	if p.StoreUsable() != nil {
		c.StoreDown = true
		return c
	}
	ctx, cancel := opCtx()
	defer cancel()
	sc, err := p.st.Capacity(ctx)
	if p.StoreErr(err) != nil {
		c.StoreDown = true
		return c
	}
	c.Slots, c.Busy = sc.Slots, sc.Busy
	return c
}

func (p *Placer) capacityLocked() Capacity {
	var c Capacity
	for _, fe := range p.farms {
		if !fe.draining {
			c.Slots += fe.slots
		}
	}
	for _, ps := range p.pools {
		c.Busy += ps.startingBound
		c.Starting += ps.startingBound + ps.startingWarm
		c.Idle += len(ps.idle)
	}
	for _, inst := range p.instances {
		if inst.state == instBound && !inst.farm.draining {
			c.Busy++
		}
	}
	c.Queued = p.queued
	return c
}

// Snapshot is placement's state at one moment, for /status.
type Snapshot struct {
	Farms     []FarmInfo
	Pools     []PoolInfo
	Instances []InstanceInfo
	Queue     []WaiterInfo
}

// PoolInfo describes one pool.
type PoolInfo struct {
	Name      string
	Warm      int
	Reuse     bool
	Instances int
	Idle      int
	Busy      int
	Starting  int
}

// InstanceInfo describes one instance on the books.
type InstanceInfo struct {
	ID        string
	Pool      string
	Farm      string
	State     string // idle, bound, resetting, stopping
	PID       int
	Container string
	Holder    string // the holder's id, when bound
	Started   time.Time
}

// WaiterInfo describes one queued holder.
type WaiterInfo struct {
	Holder   string
	Pool     string
	Position int
	Since    time.Time
}

// Snapshot copies the books: farms by id, pools by name, instances by
// start, the queue in order.
func (p *Placer) Snapshot() Snapshot {
	farms := p.Farms()
	p.mu.Lock()
	s := Snapshot{Farms: farms, Pools: make([]PoolInfo, 0, len(p.pools)),
		Instances: make([]InstanceInfo, 0, len(p.instances)), Queue: make([]WaiterInfo, 0, len(p.queue))}
	byPool := map[string]*PoolInfo{}
	for _, ps := range p.pools {
		s.Pools = append(s.Pools, PoolInfo{Name: ps.cfg.Name, Warm: ps.cfg.Warm, Reuse: ps.cfg.Reuse,
			Idle: len(ps.idle), Starting: ps.startingBound + ps.startingWarm})
	}
	for i := range s.Pools {
		byPool[s.Pools[i].Name] = &s.Pools[i]
	}
	for _, inst := range p.instances {
		ii := InstanceInfo{ID: inst.info.ID, Pool: inst.pool.cfg.Name, Farm: inst.farm.id, State: inst.state.String(),
			PID: inst.info.PID, Container: inst.info.Container, Started: inst.info.Started}
		if inst.holder != nil {
			ii.Holder = inst.holder.ID
		}
		if pi := byPool[ii.Pool]; pi != nil {
			pi.Instances++
			if inst.state == instBound {
				pi.Busy++
			}
		}
		s.Instances = append(s.Instances, ii)
	}
	for _, w := range p.queue {
		if !w.left {
			s.Queue = append(s.Queue, WaiterInfo{Holder: w.h.ID, Pool: w.pool.cfg.Name, Position: len(s.Queue) + 1, Since: w.since})
		}
	}
	p.mu.Unlock()
	sort.Slice(s.Pools, func(i, j int) bool { return s.Pools[i].Name < s.Pools[j].Name })
	sort.Slice(s.Instances, func(i, j int) bool { return s.Instances[i].Started.Before(s.Instances[j].Started) })
	return s
}
