package placement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/store"
)

// FarmInfo describes a farm as the registry sees it.
type FarmInfo struct {
	ID   string
	Name string
	// URL is a remote farm's base URL; empty for a farm in this process.
	URL string
	// Slots are the farm's instance slots; Free those nobody reserved.
	Slots int
	Free  int
	// JobSlots are the conversion jobs it runs at once.
	JobSlots int
	Pools    []string
	Labels   map[string]string
	Priority int
	Remote   bool
	Draining bool
	// Suspect: a start found it unreachable, and it has not answered since.
	Suspect bool
	// Live: it takes placements now (not draining, suspect or found full).
	Live     bool
	LastSeen time.Time
}

// Farms lists the farms on the books, ordered by id.
func (p *Placer) Farms() []FarmInfo {
	now := p.now()
	p.mu.Lock()
	out := make([]FarmInfo, 0, len(p.farms))
	for _, fe := range p.farms {
		fi := FarmInfo{ID: fe.id, Name: fe.name, URL: fe.url, Slots: fe.slots, Free: max(0, fe.free()),
			JobSlots: fe.jobSlots, Labels: fe.labels, Priority: fe.priority, Remote: fe.remote,
			Draining: fe.draining, Suspect: fe.suspect, Live: fe.takes(now), LastSeen: fe.lastSeen}
		if !fe.remote {
			fi.LastSeen = now // an in-process farm is alive while it is added
		}
		for pool := range fe.pools {
			fi.Pools = append(fi.Pools, pool)
		}
		sort.Strings(fi.Pools)
		out = append(out, fi)
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// AddFarm makes the slots of a farm in this process available. Other
// managers sharing the store count its slots but cannot reach it.
func (p *Placer) AddFarm(f Farm) {
	// If the store is away, the farm monitor puts it there later.
	ctx, cancel := opCtx()
	_ = p.StoreErr(p.st.PutFarm(ctx, store.Farm{ID: f.ID(), Owner: p.id, Slots: f.Slots()}))
	cancel()
	p.addFarm(f, false, p.id, nil)
}

// addFarm makes a farm's slots available here; the caller has put it in
// the store. A farm already known by that id is replaced: it restarted,
// and whatever ran on it before is lost.
func (p *Placer) addFarm(f Farm, remote bool, owner string, spec []byte) *farmEntry {
	fe := newFarmEntry(f, remote, owner, spec, p.now())
	p.mu.Lock()
	old := p.farms[fe.id]
	p.ensurePoolsLocked(f.Pools())
	p.mu.Unlock()
	if old != nil {
		p.removeFarm(fe.id, errors.New("the farm registered again"))
	}
	p.mu.Lock()
	p.farms[fe.id] = fe
	delete(p.buried, fe.id)
	p.kickLocked()
	p.mu.Unlock()
	return fe
}

// removeFarm forgets a farm that died or left. Its instances are lost:
// their holders are told, and nothing is asked of the farm any more.
func (p *Placer) removeFarm(id string, cause error) bool {
	p.mu.Lock()
	fe := p.farms[id]
	if fe == nil {
		p.mu.Unlock()
		return false
	}
	delete(p.farms, id)
	fe.cancel()
	now := p.now()
	for fid, at := range p.buried {
		if now.Sub(at) > buriedFor {
			delete(p.buried, fid)
		}
	}
	p.buried[id] = now
	var gone []*Instance
	for _, inst := range p.instances {
		if inst.farm == fe {
			gone = append(gone, inst)
		}
	}
	p.mu.Unlock()
	for _, inst := range gone {
		p.lost(inst, cause, false)
	}
	p.mu.Lock()
	p.kickLocked()
	p.mu.Unlock()
	return true
}

// Register takes a remote farm's registration: it records the farm in the
// store and on the books. The answer tells the farm how often to send
// heartbeats, and which of the instances it listed nobody holds any more
// (the managers gave them up when they declared it dead): it stops those
// at once, so that its slots are free when the managers count them free.
func (p *Placer) Register(req farmapi.RegisterRequest) (farmapi.RegisterResponse, error) {
	if req.ID == "" || len(req.ID) > 128 || !printable(req.ID) || req.Slots < 0 || req.Slots > 100000 {
		return farmapi.RegisterResponse{}, fmt.Errorf(
			"%w: a farm needs a printable id of at most 128 characters and 0 to 100000 slots", ErrBadRegistration)
	}
	rf, err := newRemoteFarm(req, p.cfg.FarmToken, p.cfg.FarmClient)
	if err != nil {
		return farmapi.RegisterResponse{}, err
	}
	spec, err := json.Marshal(req)
	if err != nil {
		return farmapi.RegisterResponse{}, fmt.Errorf("%w: %w", ErrBadRegistration, err)
	}
	stop := p.givenUp(req)
	ctx, cancel := opCtx()
	err = p.StoreErr(p.st.PutFarm(ctx, store.Farm{ID: req.ID, Spec: spec, Slots: req.Slots}))
	cancel()
	if err != nil {
		// The farm tries again; registering it here only would hide it
		// from the other managers.
		return farmapi.RegisterResponse{}, err
	}
	if p.rejoin(req, spec) {
		// It registered again without restarting (a manager that did not
		// know it sent it away): its instances live on, and the
		// reconciler records them in the store again.
		p.poke()
	} else {
		p.addFarm(rf, true, "", spec)
	}
	p.publish(store.Event{Type: store.EventFarmAdded, Farm: req.ID})
	p.log.Info("farm registered", "farm", req.ID, "name", req.Name, "url", req.URL, "slots", req.Slots,
		"pools", req.Pools, "labels", req.Labels, "stop", len(stop))
	p.metrics.farmEvents.WithLabelValues("registered").Inc()
	return farmapi.RegisterResponse{HeartbeatIntervalMS: p.cfg.HeartbeatInterval.Milliseconds(), Stop: stop}, nil
}

// givenUp lists the instances a registering farm reports that nobody
// holds. A farm this manager saw leave is asked to stop those: every
// manager gives up a farm that left, and the store then holds no
// reservation of its. So is a farm this manager does not know whose only
// manager it is, when its store is private (store.Private): the manager
// restarted, and its sessions were lost with the store (found by killing a
// manager with three sessions just ended: the farm kept their instances,
// and the warm instances of the manager before, until its orphan sweep,
// 45 s later, and the restarted manager's starts found it full meanwhile).
// For any other farm it cannot tell whose they are (another manager's, a
// shared store that lost its records), and the farm's own orphan sweep
// stops them later.
func (p *Placer) givenUp(req farmapi.RegisterRequest) []string {
	if len(req.Instances) == 0 {
		return nil
	}
	private := false
	if ps, ok := p.st.(store.Private); ok {
		private = ps.Private()
	}
	p.mu.Lock()
	_, buried := p.buried[req.ID]
	_, known := p.farms[req.ID]
	sole := private && req.Managers == 1 && !known
	held := map[string]bool{}
	for _, inst := range p.instances {
		if inst.farm.id == req.ID {
			held[inst.info.ID] = true
		}
	}
	p.mu.Unlock()
	if !buried && !sole || p.down.Load() {
		return nil
	}
	ctx, cancel := opCtx()
	slots, err := p.st.Slots(ctx, req.ID)
	cancel()
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		_ = p.StoreErr(err)
		return nil
	}
	for _, sl := range slots {
		held[sl.Instance] = true
	}
	var stop []string
	for _, inst := range req.Instances {
		if !held[inst.ID] {
			stop = append(stop, inst.ID)
		}
	}
	return stop
}

// rejoin takes a registration of a known farm that still runs instances
// of this manager, for a farm that did not restart: the entry and its
// instances stay. It reports whether it did.
func (p *Placer) rejoin(req farmapi.RegisterRequest, spec []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	fe := p.farms[req.ID]
	if fe == nil || !fe.remote {
		return false
	}
	running := make(map[string]bool, len(req.Instances))
	for _, inst := range req.Instances {
		running[inst.ID] = true
	}
	for _, inst := range p.instances {
		if inst.farm == fe && running[inst.info.ID] {
			fe.lastSeen = p.now()
			fe.spec = spec
			p.clearSuspectLocked(fe)
			return true
		}
	}
	return false
}

// Heartbeat records a farm's heartbeat, here and in the store, where it
// counts for every manager. It returns whether the farm is known (here or
// in the store; unknown farms register again) and whether it should drain.
func (p *Placer) Heartbeat(id string, hb farmapi.Heartbeat) (known, drain bool, err error) {
	p.mu.Lock()
	fe := p.farms[id]
	var notify []*Holder
	if fe != nil {
		fe.lastSeen = p.now()
		p.clearSuspectLocked(fe)
		if hb.Free > 0 {
			fe.fullUntil = time.Time{}
		}
		if hb.Draining && !fe.draining {
			notify = p.drainLocked(fe)
		}
		p.kickLocked()
	}
	knownHere, drainHere := fe != nil, fe != nil && fe.draining
	p.mu.Unlock()
	tellDraining(id, notify)
	if p.down.Load() {
		if !knownHere {
			return false, false, ErrStoreUnavailable
		}
		return true, drainHere, nil
	}
	ctx, cancel := opCtx()
	f, err := p.st.TouchFarm(ctx, id, hb.Draining)
	cancel()
	switch {
	case errors.Is(err, store.ErrNotFound):
		if !knownHere {
			return false, false, nil
		}
		if p.putFarm(fe) == nil {
			p.lostRecords()
		}
		return true, drainHere, nil
	case p.StoreErr(err) != nil:
		if !knownHere {
			return false, false, ErrStoreUnavailable
		}
		return true, drainHere, nil
	}
	if !knownHere {
		p.adopt(f)
	}
	live := make(map[string]bool, len(hb.Instances))
	for _, inst := range hb.Instances {
		live[inst.ID] = true
	}
	p.lostUnseen(id, live)
	p.freeLeftovers(id, live)
	return true, drainHere || f.Draining, nil
}

// Deregister forgets a farm that stopped cleanly. It reports whether the
// farm was known, here or in the store.
func (p *Placer) Deregister(id string) bool {
	ctx, cancel := opCtx()
	inStore, err := p.st.RemoveFarm(ctx, id)
	cancel()
	if p.StoreErr(err) == nil && inStore {
		p.publish(store.Event{Type: store.EventFarmRemoved, Farm: id})
	}
	if !p.removeFarm(id, errors.New("the farm left")) && !inStore {
		return false
	}
	p.log.Info("farm deregistered", "farm", id)
	p.metrics.farmEvents.WithLabelValues("deregistered").Inc()
	return true
}

// DrainFarm stops placing on a farm and tells the holders on it; the farm
// learns it from its next heartbeat and exits once they have ended.
func (p *Placer) DrainFarm(id string) error {
	ctx, cancel := opCtx()
	err := p.StoreErr(p.st.DrainFarm(ctx, id))
	cancel()
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	holders, ok := p.drain(id)
	if !ok && err != nil {
		return fmt.Errorf("%w: %q", ErrFarmNotFound, id)
	}
	p.publish(store.Event{Type: store.EventFarmDraining, Farm: id})
	p.log.Info("farm draining", "farm", id, "holders", len(holders))
	p.metrics.farmEvents.WithLabelValues("draining").Inc()
	tellDraining(id, holders)
	return nil
}

// drain marks a farm draining here; it returns the holders to tell.
func (p *Placer) drain(id string) ([]*Holder, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fe := p.farms[id]
	if fe == nil {
		return nil, false
	}
	if fe.draining {
		return nil, true
	}
	return p.drainLocked(fe), true
}

func (p *Placer) drainLocked(fe *farmEntry) []*Holder {
	fe.draining = true
	var holders []*Holder
	for _, inst := range p.instances {
		if inst.farm != fe {
			continue
		}
		switch inst.state {
		case instIdle:
			inst.pool.idle = slices.DeleteFunc(inst.pool.idle, func(i *Instance) bool { return i == inst })
			p.stopAsyncLocked(inst)
		case instBound:
			holders = append(holders, inst.holder)
		}
	}
	p.kickLocked()
	return holders
}

func tellDraining(farm string, holders []*Holder) {
	for _, h := range holders {
		if h != nil && h.Draining != nil {
			h.Draining(farm)
		}
	}
}

// HandleEvent acts on an event another manager published (farms added,
// removed or draining, slots freed); the caller subscribes to the store
// and passes every event on. Events of this manager's own are ignored.
func (p *Placer) HandleEvent(e store.Event) {
	if e.Manager == p.id {
		return
	}
	switch e.Type {
	case store.EventFarmAdded:
		p.syncFarms()
	case store.EventFarmRemoved:
		p.removeFarm(e.Farm, fmt.Errorf("farm %s left", e.Farm))
	case store.EventFarmDraining:
		holders, _ := p.drain(e.Farm)
		tellDraining(e.Farm, holders)
	case store.EventSlotFreed:
		p.mu.Lock()
		if fe := p.farms[e.Farm]; fe != nil {
			if fe.others > 0 {
				fe.others--
			}
			fe.fullUntil = time.Time{}
		}
		p.kickLocked()
		p.mu.Unlock()
	}
}

// deadAfter is the silence after which a farm is dead.
func (p *Placer) deadAfter() time.Duration {
	return time.Duration(p.cfg.MissedHeartbeats)*p.cfg.HeartbeatInterval + p.cfg.HeartbeatInterval/10
}

// stallAfter: a gap this long between two looks at the farms means this
// manager was not running (stopped, its VM paused, starved).
func (p *Placer) stallAfter() time.Duration { return p.cfg.HeartbeatInterval }

// monitor runs every tenth of a heartbeat interval: it probes the store,
// adopts the farms other managers registered, declares dead the farms no
// manager has heard from, and keeps this manager's own records alive.
func (p *Placer) monitor() {
	t := time.NewTicker(p.cfg.HeartbeatInterval / 10)
	defer t.Stop()
	var lastAlive time.Time
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-t.C:
			// The tick's own time may be from before a stall: read the clock.
			now := p.now()
			if now.Sub(lastAlive) >= p.cfg.HeartbeatInterval {
				ctx, cancel := opCtx()
				err := p.StoreErr(p.st.Alive(ctx, p.id, time.Duration(p.cfg.MissedHeartbeats)*p.cfg.HeartbeatInterval))
				cancel()
				if err == nil {
					lastAlive = now
				}
			}
			p.syncFarms()
		}
	}
}

// noteGap notices this manager's own stalls; syncMu is held. The monitor
// looks at the farms ten times an interval: a gap between two looks, or a
// look that took this long, was time the manager did not run. Farms
// heard from before it get a fresh deadline counted from the wake-up, so
// that the silence the stall caused is not counted against them.
func (p *Placer) noteGap(now time.Time) {
	if !p.lastSync.IsZero() {
		if gap := now.Sub(p.lastSync); gap > p.stallAfter() {
			p.wokeAt = now
			p.log.Warn("this manager stalled: every farm gets a fresh deadline", "gap", gap.Round(time.Millisecond))
		}
	}
	p.lastSync = now
}

// lastHeard is when a farm last counted as heard from: its last heartbeat
// here or (seen) through any manager, and at the latest this manager's
// wake-up from a stall.
func (p *Placer) lastHeard(seen time.Time) time.Time {
	if p.wokeAt.After(seen) {
		return p.wokeAt
	}
	return seen
}

// syncFarms merges the store's farms into the books and judges which are
// dead.
func (p *Placer) syncFarms() {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	p.noteGap(p.now())
	ctx, cancel := opCtx()
	farms, err := p.st.Farms(ctx)
	cancel()
	now := p.now()
	p.noteGap(now)
	if p.StoreErr(err) != nil {
		return
	}
	p.markUp()
	deadAfter := p.deadAfter()
	settled := p.healthyFor(now) > deadAfter
	stored := make(map[string]store.Farm, len(farms))
	var dead, adopt []store.Farm
	var drained []string
	var touch, reput []*farmEntry
	var gone []string

	p.mu.Lock()
	for _, f := range farms {
		stored[f.ID] = f
		fe := p.farms[f.ID]
		if fe == nil {
			if f.Owner == "" && now.Sub(f.Seen) <= deadAfter && len(f.Spec) > 0 {
				adopt = append(adopt, f)
			} else if settled && now.Sub(p.lastHeard(f.Seen)) > deadAfter {
				dead = append(dead, f)
			}
			continue
		}
		if fe.owner == p.id {
			touch = append(touch, fe)
			fe.lastSeen = now
		} else if f.Seen.After(fe.lastSeen) {
			// A heartbeat through another manager counts here too.
			fe.lastSeen = f.Seen
		}
		if fe.suspect && f.Seen.After(fe.suspectAt) {
			p.clearSuspectLocked(fe)
		}
		fe.others = max(0, f.Used-fe.used)
		if f.Draining && !fe.draining {
			drained = append(drained, f.ID)
		}
		if fe.owner != p.id && settled && now.Sub(p.lastHeard(fe.lastSeen)) > deadAfter {
			dead = append(dead, f)
		}
	}
	for id, fe := range p.farms {
		if _, ok := stored[id]; ok {
			continue
		}
		switch {
		case fe.owner == p.id:
			// The store lost it (a restarted Redis): put it back. A remote
			// farm is put back by its next heartbeat, if it still sends
			// them; one that left is not.
			reput = append(reput, fe)
		case settled && now.Sub(p.lastHeard(fe.lastSeen)) > deadAfter:
			gone = append(gone, id)
		}
	}
	p.kickLocked() // others' counts may have dropped
	p.mu.Unlock()

	for _, fe := range touch {
		if now.Sub(fe.added) >= p.cfg.HeartbeatInterval/2 {
			ctx, cancel := opCtx()
			_, err := p.st.TouchFarm(ctx, fe.id, false)
			cancel()
			_ = p.StoreErr(err)
		}
	}
	for _, fe := range reput {
		if p.putFarm(fe) == nil {
			p.log.Info("farm put back into the shared state", "farm", fe.id)
			p.lostRecords()
		}
	}
	for _, f := range dead {
		ctx, cancel := opCtx()
		removed, err := p.st.RemoveFarm(ctx, f.ID)
		cancel()
		if p.StoreErr(err) != nil {
			continue
		}
		cause := fmt.Errorf("farm %s missed %d heartbeats", f.ID, p.cfg.MissedHeartbeats)
		if removed {
			p.log.Warn("farm dead", "farm", f.ID, "silent_for", now.Sub(f.Seen).Round(time.Millisecond))
			p.metrics.farmEvents.WithLabelValues("dead").Inc()
			p.publish(store.Event{Type: store.EventFarmRemoved, Farm: f.ID})
		}
		p.removeFarm(f.ID, cause)
	}
	for _, id := range gone {
		p.removeFarm(id, fmt.Errorf("farm %s left the shared state", id))
	}
	for _, f := range adopt {
		p.adopt(f)
	}
	for _, id := range drained {
		holders, _ := p.drain(id)
		tellDraining(id, holders)
	}
}

// adopt makes a farm another manager registered usable here.
func (p *Placer) adopt(f store.Farm) {
	var req farmapi.RegisterRequest
	if err := json.Unmarshal(f.Spec, &req); err != nil {
		p.log.Error("stored farm registration unreadable", "farm", f.ID, "err", err)
		return
	}
	rf, err := newRemoteFarm(req, p.cfg.FarmToken, p.cfg.FarmClient)
	if err != nil {
		p.log.Error("stored farm registration unusable", "farm", f.ID, "err", err)
		return
	}
	p.mu.Lock()
	known := p.farms[f.ID] != nil
	p.mu.Unlock()
	if known {
		return
	}
	p.addFarm(rf, true, "", f.Spec)
	p.mu.Lock()
	if fe := p.farms[f.ID]; fe != nil {
		fe.lastSeen = f.Seen
		fe.others = f.Used
		if f.Draining {
			p.drainLocked(fe)
		}
	}
	p.mu.Unlock()
	p.log.Info("farm adopted from the shared state", "farm", f.ID, "url", req.URL, "slots", req.Slots)
}

// freeLeftovers frees the reservations of a farm whose instances the farm
// no longer runs (their manager died, or stopped them while the store was
// away), and those a dead manager left starting; live are the instances
// the farm's heartbeat lists.
func (p *Placer) freeLeftovers(farmID string, live map[string]bool) {
	now := time.Now()
	ctx, cancel := opCtx()
	defer cancel()
	slots, err := p.st.Slots(ctx, farmID)
	if p.StoreErr(err) != nil {
		return
	}
	for _, sl := range slots {
		if now.Sub(sl.Since) < slotSettle {
			continue
		}
		stale := sl.Instance != "" && !live[sl.Instance]
		if !stale && sl.Instance == "" && sl.Owner != p.id && now.Sub(sl.Since) > startStale {
			alive, err := p.st.ManagerAlive(ctx, sl.Owner)
			stale = err == nil && !alive
		}
		if stale {
			p.log.Info("freeing a leftover reservation", "farm", farmID, "instance", sl.Instance, "owner", sl.Owner)
			p.freeSlot(farmID, sl.ID)
		}
	}
}

// lostUnseen handles this manager's instances on farm farmID that the
// farm's heartbeat no longer lists, live being the ones it does: they
// died without this manager seeing it. A stream instance has no
// connection of the manager's to break, so an idle one the farm stopped
// (a crash, a liveliness timeout) would otherwise stay
// on the books and be handed to the next viewer. An instance booked less
// than slotSettle ago may not be in the heartbeat yet.
func (p *Placer) lostUnseen(farmID string, live map[string]bool) {
	now := p.now()
	var gone []*Instance
	p.mu.Lock()
	for _, inst := range p.instances {
		if inst.farm.id == farmID && !live[inst.info.ID] && now.Sub(inst.booked) >= slotSettle &&
			(inst.state == instIdle || inst.state == instBound) {
			gone = append(gone, inst)
		}
	}
	p.mu.Unlock()
	for _, inst := range gone {
		p.lost(inst, fmt.Errorf("farm %s no longer runs it", farmID), false)
	}
}

// suspectLocked makes a farm that did not answer a start suspect: it gets
// no placements until it answers again, by a heartbeat or a probe.
func (p *Placer) suspectLocked(fe *farmEntry, cause error) {
	if p.farms[fe.id] != fe || !fe.mayBeSuspect() {
		return
	}
	fe.suspectAt = p.now()
	if !fe.suspect {
		fe.suspect = true
		p.log.Warn("farm unreachable: no placements on it until it answers", "farm", fe.id, "err", cause)
		p.metrics.farmEvents.WithLabelValues("suspect").Inc()
	}
	if pr, ok := fe.f.(Prober); ok && !fe.probing {
		fe.probing = true
		p.goTracked(func() { p.probe(fe, pr) })
	}
}

func (p *Placer) clearSuspectLocked(fe *farmEntry) {
	if fe.suspect {
		fe.suspect = false
		p.log.Info("farm answers again", "farm", fe.id)
	}
}

// probe asks a suspect farm once an interval whether it answers, until it
// does, it is cleared otherwise, or it leaves.
func (p *Placer) probe(fe *farmEntry, pr Prober) {
	t := time.NewTicker(p.cfg.HeartbeatInterval)
	defer t.Stop()
	defer func() {
		p.mu.Lock()
		fe.probing = false
		p.mu.Unlock()
	}()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-fe.ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		suspect := fe.suspect
		p.mu.Unlock()
		if !suspect {
			return
		}
		ctx, cancel := context.WithTimeout(fe.ctx, p.cfg.HeartbeatInterval)
		err := pr.Probe(ctx)
		cancel()
		if err == nil {
			p.mu.Lock()
			p.clearSuspectLocked(fe)
			p.kickLocked()
			p.mu.Unlock()
			return
		}
	}
}

func printable(s string) bool {
	for _, r := range s {
		if r < 0x21 || r > 0x7e {
			return false
		}
	}
	return true
}
