package farm

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"time"
	"unicode/utf8"

	"golang.org/x/sys/unix"

	"github.com/drover-dev/drover/session"
)

// The stdio adapter (websocketd style): any program. A task's data goes to
// the program's stdin as one line of compact JSON; every line the program
// writes to stdout is a result, whose data is the line when the line is
// valid JSON and the line as a JSON string otherwise. The task ends at a
// line equal to the pool's Delimiter or, for pools without one, once the
// program wrote nothing for IdleGap (counted from the moment the task was
// written). stderr goes to the farm's log. Lines written while no task runs
// are logged and dropped. The program is ready as soon as it runs.

const (
	defaultIdleGap = 100 * time.Millisecond
	// maxStdioLine caps one stdout line; the rest of a longer line is
	// dropped.
	maxStdioLine = 16 << 20
	// stdoutGrace is how long a program that closed its stdout may take to
	// exit before the farm kills it.
	stdoutGrace = 500 * time.Millisecond
)

type stdioLink struct {
	f     *Farm
	inst  *instance
	hosts hostSet
	delim string
	gap   time.Duration

	stdin, stdout     *os.File // the farm's ends
	childIn, childOut *os.File // the program's ends, closed once it runs
	inbuf             bytes.Buffer
	idle              *time.Timer
	scratch           []byte
	// held is the connection whose results wait while more output is at
	// hand, to go out with the lines after them (mostly the delimiter: the
	// task's done) in one write; only the reader goroutine uses it.
	held *hostConn

	mu      sync.Mutex
	closed  bool
	active  bool
	writing bool // the task is still being written to stdin
	c       *hostConn
	id      []byte // the task's id, a copy in idbuf
	idbuf   []byte
	last    time.Time // the task's last line, or the end of its write
	// end is the task lock of the task in flight (hostSet.task), unlocked
	// once the task has ended and its line is written.
	end *sync.Mutex
}

var (
	_ taskRunner  = (*stdioLink)(nil)
	_ asyncRunner = (*stdioLink)(nil)
)

// newStdioLink makes the program's pipes and hands its ends to cmd.
func newStdioLink(f *Farm, inst *instance, cmd *exec.Cmd) (*stdioLink, error) {
	inW, inR, err := childPipe(true)
	if err != nil {
		return nil, err
	}
	outR, outW, err := childPipe(false)
	if err != nil {
		_ = inR.Close()
		_ = inW.Close()
		return nil, err
	}
	p := inst.pool
	l := &stdioLink{
		f:        f,
		inst:     inst,
		delim:    p.spec.Delimiter,
		gap:      p.idleGap,
		stdin:    inW,
		stdout:   outR,
		childIn:  inR,
		childOut: outW,
	}
	l.hosts = hostSet{run: l, log: f.log.With("instance", inst.id)}
	l.idle = time.AfterFunc(time.Hour, l.idleFired)
	l.idle.Stop()
	cmd.Stdin = inR
	cmd.Stdout = outW
	return l, nil
}

// childPipe makes a pipe to a child process (toChild: the child reads)
// or from one. The farm's end is non-blocking, on Go's netpoller; the
// child's stays blocking and off the poller, as the child gets it.
// os.Pipe would put both ends on the poller, and starting the child would
// take its end back to blocking: six system calls more a pipe, and a
// session of a stdio pool starts a process.
func childPipe(toChild bool) (ours, theirs *os.File, err error) {
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		return nil, nil, os.NewSyscallError("pipe2", err)
	}
	o, t := p[0], p[1] // read end, write end
	if toChild {
		o, t = t, o
	}
	if err := unix.SetNonblock(o, true); err != nil {
		_ = unix.Close(o)
		_ = unix.Close(t)
		return nil, nil, os.NewSyscallError("fcntl", err)
	}
	// NewFile puts a non-blocking descriptor on the poller.
	return os.NewFile(uintptr(o), "|farm"), os.NewFile(uintptr(t), "|child"), nil
}

// started closes the program's ends in the farm, once the program has them
// (or failed to start), and starts reading its output when it runs.
func (l *stdioLink) started(running bool) {
	_ = l.childIn.Close()
	_ = l.childOut.Close()
	if !running || !l.f.goTracked(l.readLoop) {
		l.close()
	}
}

// stdioSource is the program's stdout as the reader's buffer sees it:
// before a read that may block, the results held so far go out.
type stdioSource struct{ l *stdioLink }

func (s stdioSource) Read(p []byte) (int, error) {
	s.l.releaseHeld()
	return s.l.stdout.Read(p)
}

func (l *stdioLink) releaseHeld() {
	if l.held != nil {
		l.held.release()
		l.held = nil
	}
}

func (l *stdioLink) readLoop() {
	defer l.releaseHeld()
	br := bufio.NewReaderSize(stdioSource{l}, 64<<10)
	var line []byte
	for {
		line = line[:0]
		cut := false
		var err error
		for {
			var part []byte
			part, err = br.ReadSlice('\n')
			if room := maxStdioLine - len(line); len(part) > room {
				part, cut = part[:room], true
			}
			line = append(line, part...)
			if !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		if len(line) > 0 {
			if cut {
				l.f.log.Warn("stdout line too long, cut", "instance", l.inst.id, "max_bytes", maxStdioLine)
			}
			l.line(bytes.TrimRight(line, "\r\n"), br.Buffered() > 0)
		}
		if err != nil {
			if errors.Is(err, os.ErrClosed) {
				return // the instance exited: close closed our end
			}
			// The program closed its stdout: it can answer no task any
			// more. Mostly it is exiting; if it lingers, it is killed.
			t := time.NewTimer(stdoutGrace)
			defer t.Stop()
			select {
			case <-l.inst.exited:
			case <-t.C:
				l.f.kill(l.inst, fmt.Errorf("stdout closed: %w", err))
			}
			return
		}
		if cap(line) > keepBuffer {
			line = nil
		}
	}
}

// line handles one line of the program's output; more says that more
// output is at hand already.
func (l *stdioLink) line(b []byte, more bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.active {
		l.f.log.Info(string(truncate(b, maxLineBytes)), "instance", l.inst.id, "stream", "stdout", "task", false)
		return
	}
	if l.delim != "" && string(b) == l.delim {
		l.c.done(l.id) // with the results held
		if l.held == l.c {
			l.held.release()
			l.held = nil
		}
		l.endLocked()
		return
	}
	if more && l.held == nil {
		l.held = l.c
		l.held.hold()
	}
	if json.Valid(b) && utf8.Valid(b) {
		l.c.result(l.id, b)
	} else {
		l.scratch = session.AppendString(l.scratch[:0], string(b))
		l.c.result(l.id, l.scratch)
		if cap(l.scratch) > keepBuffer {
			l.scratch = nil
		}
	}
	l.last = time.Now()
}

// idleFired ends the task once the program has been quiet for the gap.
func (l *stdioLink) idleFired() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.active || l.writing {
		return
	}
	if quiet := time.Since(l.last); quiet < l.gap {
		l.idle.Reset(l.gap - quiet)
		return
	}
	l.c.done(l.id)
	l.endLocked()
}

func (l *stdioLink) endLocked() {
	l.active, l.c, l.id = false, nil, nil
	l.idle.Stop()
	if !l.writing {
		l.unlockTaskLocked()
	}
}

// unlockTaskLocked lets the next task begin: the last one has ended and
// its line is written.
func (l *stdioLink) unlockTaskLocked() {
	end := l.end
	l.end = nil
	end.Unlock()
}

// runTask writes the task as one line and waits until it ends.
func (l *stdioLink) runTask(c *hostConn, id, data []byte) {
	var end sync.Mutex
	end.Lock()
	l.startTask(c, id, data, &end)
	end.Lock() // unlocked once the task has ended
}

// startTask writes the task as one line and returns; the reader (or the
// idle timer, or the end of the instance) ends the task and unlocks end.
// The connection's reader need not wait for the task: the reader of the
// program's output answers it, one goroutine switch fewer per task.
func (l *stdioLink) startTask(c *hostConn, id, data []byte, end *sync.Mutex) {
	l.inbuf.Reset()
	if len(data) == 0 {
		l.inbuf.WriteString("null")
	} else if err := json.Compact(&l.inbuf, data); err != nil {
		c.fail(id, session.CodeBadRequest, fmt.Sprintf("task data: %v", err))
		end.Unlock()
		return
	}
	l.inbuf.WriteByte('\n')

	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		c.fail(id, session.CodeInstanceLost, "the instance is gone")
		end.Unlock()
		return
	}
	l.idbuf = append(l.idbuf[:0], id...) // id is the caller's buffer, reused once startTask returns
	l.active, l.writing, l.c, l.id, l.end = true, true, c, l.idbuf, end
	l.mu.Unlock()

	_, err := l.stdin.Write(l.inbuf.Bytes())
	if l.inbuf.Cap() > keepBuffer {
		l.inbuf = bytes.Buffer{}
	}

	l.mu.Lock()
	l.writing = false
	switch {
	case !l.active: // it ended while its line was being written
		l.unlockTaskLocked()
	case err != nil:
		l.c.fail(l.id, session.CodeInstanceLost, "the instance does not take input: "+err.Error())
		l.endLocked()
	case l.delim == "":
		l.last = time.Now()
		l.idle.Reset(l.gap)
	}
	l.mu.Unlock()
}

// close is called once the instance exited: the task in flight is lost,
// the pipes close, and so do the manager connections.
func (l *stdioLink) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	if l.active {
		l.c.fail(l.id, session.CodeInstanceLost, "the instance exited")
		l.endLocked()
	}
	l.idle.Stop()
	l.mu.Unlock()
	_ = l.stdin.Close()
	_ = l.stdout.Close()
	l.hosts.closeAll()
}
