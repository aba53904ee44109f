package farm

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// A farm that dies by SIGKILL takes its instance processes with it through
// their parent-death signal, but only them: a grandchild in an instance's
// process group outlives it, and so does everything when the signal is lost
// (a thread quirk, a ptrace, a container runtime that reparents). The state
// file makes the cleanup certain: the farm records every instance's process
// group, and the next farm started with the same state directory kills what
// is left of those groups before it starts anything.
//
// A pid alone is not enough to kill safely after a restart, since pids are
// reused; the process start time (field 22 of /proc/PID/stat, in clock ticks
// since boot) tells a recorded process from a newcomer with the same pid.
//
// Containers are not in the file: they carry the farm's id as a label, and
// the docker runtime removes what a previous run left by that (docker.go).

// StateFileName is the file in the state directory that lists the farm's
// instance processes.
const StateFileName = "instances.json"

// leftoverWait bounds how long New waits for killed leftovers to go.
const leftoverWait = killWait

// stateRecord is one instance process as the state file keeps it.
type stateRecord struct {
	ID   string `json:"id"`
	PID  int    `json:"pid"`
	PGID int    `json:"pgid"`
	// Start is the process start time in clock ticks since boot.
	Start uint64 `json:"start"`
}

type stateDoc struct {
	Farm      string        `json:"farm"`
	Instances []stateRecord `json:"instances"`
}

// stateFile keeps <dir>/instances.json in step with the farm's instances.
// A nil *stateFile records nothing.
type stateFile struct {
	path   string
	farmID string
	log    *slog.Logger

	mu    sync.Mutex
	known map[string]stateRecord // by instance id: /proc is read once per process

	// The writes happen off the spawn and exit paths: record counts a
	// change in want and makes sure a writer runs; the writer writes until
	// done has caught up, one write covering every change made before it
	// took its snapshot. flush waits for that.
	wmu     sync.Mutex
	wdone   sync.Cond // on wmu: done moved
	want    uint64
	done    uint64
	writing bool
}

// openStateFile creates dir if needed, kills the leftovers the file lists
// and empties it.
func openStateFile(dir, farmID string, log *slog.Logger) (*stateFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("farm: state dir: %w", err)
	}
	s := &stateFile{path: filepath.Join(dir, StateFileName), farmID: farmID, log: log,
		known: map[string]stateRecord{}}
	s.wdone.L = &s.wmu
	killed, err := killLeftovers(s.path, log)
	if err != nil {
		return nil, err
	}
	if killed > 0 {
		log.Warn("killed instance processes left by the farm's previous run", "processes", killed, "state", s.path)
	}
	if err := s.write(nil); err != nil {
		return nil, err
	}
	return s, nil
}

// record has the farm's current instances written soon, by a writer
// goroutine the farm tracks (Close waits for it), so that neither a spawn
// nor an exit waits for the file: under concurrent starts the writes
// coalesce instead of queueing one per event. It runs whenever an instance
// process appears or goes, after the change and without farm locks held.
// An instance is on disk a moment after it is handed out; a farm killed in
// that moment still takes the process with it through its parent-death
// signal.
func (s *stateFile) record(f *Farm) {
	if s == nil {
		return
	}
	s.wmu.Lock()
	s.want++
	if s.writing {
		s.wmu.Unlock()
		return
	}
	s.writing = true
	s.wmu.Unlock()
	if !f.goTracked(func() { s.drain(f) }) {
		s.drain(f) // the farm is done: nothing runs, write here
	}
}

// drain writes until every recorded change is on disk.
func (s *stateFile) drain(f *Farm) {
	s.wmu.Lock()
	for s.done < s.want {
		g := s.want
		s.wmu.Unlock()
		s.writeNow(f) // its snapshot is taken after every change up to g
		s.wmu.Lock()
		s.done = g
		s.wdone.Broadcast()
	}
	s.writing = false
	s.wmu.Unlock()
}

// flush waits until every change recorded so far is written.
func (s *stateFile) flush() {
	if s == nil {
		return
	}
	s.wmu.Lock()
	for g := s.want; s.done < g; {
		s.wdone.Wait()
	}
	s.wmu.Unlock()
}

// writeNow writes the farm's current instances; the snapshot is taken
// under s.mu, so the last write always holds the latest state.
func (s *stateFile) writeNow(f *Farm) {
	s.mu.Lock()
	defer s.mu.Unlock()
	insts := f.Instances()
	recs := make([]stateRecord, 0, len(insts))
	known := make(map[string]stateRecord, len(insts))
	for _, inst := range insts {
		if inst.PID == 0 {
			continue // a container: the docker runtime finds those by label
		}
		rec, ok := s.known[inst.ID]
		if !ok || rec.PID != inst.PID {
			st, alive := readProcStat(inst.PID)
			if !alive {
				continue // already gone
			}
			rec = stateRecord{ID: inst.ID, PID: inst.PID, PGID: st.pgrp, Start: st.start}
		}
		known[inst.ID] = rec
		recs = append(recs, rec)
	}
	s.known = known
	if err := s.write(recs); err != nil {
		s.log.Warn("cannot record instance processes", "state", s.path, "err", err)
	}
}

// write replaces the file atomically: a farm killed mid-write leaves the old
// list or the new one, never half of one.
func (s *stateFile) write(recs []stateRecord) error {
	b, err := json.Marshal(stateDoc{Farm: s.farmID, Instances: recs})
	if err != nil {
		return err
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("farm: write state: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("farm: write state: %w", err)
	}
	return nil
}

// killLeftovers SIGKILLs what is left of the process groups the state file
// at path lists and waits (bounded) until they are gone. It returns how many
// processes it signalled. A missing or unreadable file means nothing to do.
func killLeftovers(path string, log *slog.Logger) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("farm: read state: %w", err)
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		log.Warn("ignoring unreadable state file", "state", path, "err", err)
		return 0, nil
	}
	var recs []stateRecord
	self := syscall.Getpgrp()
	for _, r := range doc.Instances {
		// Never the farm itself, init, or everyone (kill(-1)).
		if r.PID > 1 && r.PGID > 1 && r.PGID != self && r.PID != os.Getpid() {
			recs = append(recs, r)
		}
	}
	if len(recs) == 0 {
		return 0, nil
	}
	signalled := map[int]bool{}
	deadline := time.Now().Add(leftoverWait)
	for {
		procs, err := listProcs()
		if err != nil {
			return len(signalled), fmt.Errorf("farm: list processes: %w", err)
		}
		left := leftoverProcs(recs, procs)
		if len(left) == 0 {
			return len(signalled), nil
		}
		if time.Now().After(deadline) {
			log.Error("leftover instance processes survive SIGKILL", "pids", left)
			return len(signalled), nil
		}
		for _, r := range recs {
			// The group as a whole only while its leader is provably ours:
			// an empty group's id may be a newcomer's.
			if st, ok := procs[r.PID]; ok && st.start == r.Start && st.pgrp == r.PGID {
				_ = syscall.Kill(-r.PGID, syscall.SIGKILL)
			}
		}
		for _, pid := range left {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			signalled[pid] = true
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leftoverProcs returns the live processes that belong to a recorded
// instance: the recorded process itself when its start time matches, and
// the members of its process group started no earlier than it. While any
// member lives, the kernel hands out neither the group id nor the leader's
// pid again, so a member of a recorded group is the instance's descendant.
func leftoverProcs(recs []stateRecord, procs map[int]procInfo) []int {
	var out []int
	for pid, st := range procs {
		if st.zombie {
			continue // dead; its parent (init by now) reaps it
		}
		for _, r := range recs {
			if pid == r.PID && st.start == r.Start ||
				st.pgrp == r.PGID && st.start >= r.Start {
				out = append(out, pid)
				break
			}
		}
	}
	return out
}

// procInfo is what the farm reads from /proc/PID/stat.
type procInfo struct {
	pgrp   int
	start  uint64 // clock ticks after boot
	zombie bool
}

// readProcStat reads /proc/PID/stat; ok is false when there is no such
// process.
func readProcStat(pid int) (procInfo, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procInfo{}, false
	}
	return parseProcStat(b)
}

// parseProcStat parses "pid (comm) state ppid pgrp ... starttime ...". The
// command name may hold spaces and parentheses: fields count from the last
// ')'. starttime is field 22, the 20th after the name.
func parseProcStat(b []byte) (procInfo, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procInfo{}, false
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return procInfo{}, false
	}
	pgrp, err1 := strconv.Atoi(fields[2])
	start, err2 := strconv.ParseUint(fields[19], 10, 64)
	if err1 != nil || err2 != nil {
		return procInfo{}, false
	}
	return procInfo{pgrp: pgrp, start: start, zombie: fields[0] == "Z" || fields[0] == "X"}, true
}

// listProcs reads the stat of every process on the host.
func listProcs() (map[int]procInfo, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := make(map[int]procInfo, len(ents))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, ok := readProcStat(pid); ok {
			out[pid] = st
		}
	}
	return out, nil
}

// StableID derives a farm id that stays the same across restarts of a farm
// listening on addr on this host: the host name's first label reduced to
// [a-z0-9-], and a hash of the full host name and addr. A farm's state
// directory is named after its id, so a restarted farm finds its leftovers.
func StableID(addr string) string {
	full, _ := os.Hostname()
	sum := sha256.Sum256([]byte(full + "\x00" + addr))
	return hostLabel(full) + "-" + hex.EncodeToString(sum[:4])
}

// hostLabel is the first label of host reduced to [a-z0-9-], at most 32
// characters, "farm" when nothing is left.
func hostLabel(host string) string {
	host, _, _ = strings.Cut(strings.ToLower(host), ".")
	host = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' {
			return r
		}
		return '-'
	}, host)
	host = strings.Trim(host, "-")
	if len(host) > 32 {
		host = host[:32]
	}
	if host == "" {
		return "farm"
	}
	return host
}

// DefaultStateDir is where a farm of this id keeps its state:
// $XDG_STATE_HOME/drover/farm-<id>, or /tmp/drover-farm-<id> when
// XDG_STATE_HOME is not set.
func DefaultStateDir(id string) string {
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.' {
			return r
		}
		return '_'
	}, id)
	if base := os.Getenv("XDG_STATE_HOME"); base != "" {
		return filepath.Join(base, "drover", "farm-"+safe)
	}
	return filepath.Join(os.TempDir(), "drover-farm-"+safe)
}
