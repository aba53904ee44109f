package manager

import (
	"bufio"
	"context"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/wsframe"
	"github.com/drover-dev/drover/session"
)

// fdInstance is an instance at the far end of a socket pair, past the
// handshake, whose own reads are blocking system calls it counts: one
// call, one read.
type fdInstance struct {
	fd    int
	reads atomic.Int64
	rd    wsframe.Reader
}

func (fi *fdInstance) Read(p []byte) (int, error) {
	fi.reads.Add(1)
	n, err := syscall.Read(fi.fd, p)
	if n <= 0 && err == nil {
		return 0, os.ErrClosed
	}
	return n, err
}

func (fi *fdInstance) write(t *testing.T, b []byte) {
	t.Helper()
	_, err := syscall.Write(fi.fd, b)
	require.NoError(t, err)
}

// serve answers n tasks in a goroutine, each with one result, its data,
// and done, both in one write; the channel closes when it returns.
func (fi *fdInstance) serve(t *testing.T, n int) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fi.answer(t, n)
	}()
	return done
}

func (fi *fdInstance) answer(t *testing.T, n int) {
	var msg, out []byte
	for range n {
		op, m, err := fi.rd.Next(msg[:0])
		msg = m
		var f session.Frame
		if err == nil && op == wsframe.OpText {
			err = session.Decode(msg, &f)
		}
		seq, perr := strconv.ParseUint(string(f.ID), 10, 64)
		if err != nil || perr != nil {
			t.Errorf("instance: task %q: %v %v", msg, err, perr)
			return
		}
		out = wsframe.AppendFrame(out[:0], wsframe.OpText, session.AppendResultSeq(nil, seq, f.Data), nil)
		out = wsframe.AppendFrame(out, wsframe.OpText, session.AppendDoneSeq(nil, seq), nil)
		if _, err := syscall.Write(fi.fd, out); err != nil {
			t.Errorf("instance: write: %v", err)
			return
		}
	}
}

// newFDInstance connects an instConn to an fdInstance over a Unix socket
// pair; lost gets what the connection reports lost.
func newFDInstance(t *testing.T) (*instConn, *fdInstance, chan error) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	require.NoError(t, err)
	f := os.NewFile(uintptr(fds[0]), "manager end")
	conn, err := net.FileConn(f)
	require.NoError(t, err)
	require.NoError(t, f.Close())
	fi := &fdInstance{fd: fds[1]}
	fi.rd = wsframe.Reader{R: bufio.NewReader(fi), FromClient: true}
	lost := make(chan error, 1)
	c := newInstConn(conn, nil, 1<<20, func(err error) { lost <- err })
	t.Cleanup(func() {
		c.close()
		_ = syscall.Close(fi.fd)
	})
	return c, fi, lost
}

// readCalls is how many read system calls this process has made.
func readCalls(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/io")
	require.NoError(t, err)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "syscr: "); ok {
			n, err := strconv.Atoi(v)
			require.NoError(t, err)
			return n
		}
	}
	t.Fatal("no syscr in /proc/self/io")
	return 0
}

// The reader of an instance connection makes one read per answer: the
// answer comes whole and drains the socket, and the reader then waits for
// the next without the read that would find nothing (rawio's Poll). A
// reader that read until the socket said "nothing" made two.
func TestInstConnReadsEachAnswerOnce(t *testing.T) {
	c, fi, _ := newFDInstance(t)
	const tasks = 400
	served := fi.serve(t, tasks)
	var r results
	timer := time.NewTimer(time.Hour)
	task := []byte(`"x"`)
	run := func() {
		r = r[:0]
		require.NoError(t, c.call(context.Background(), task, &r, nil, timer, 10*time.Second))
		require.Equal(t, results{`"x"`}, r)
	}
	run() // the reader's first wait
	before, instReads := readCalls(t), fi.reads.Load()
	for range tasks - 1 {
		run()
	}
	mine := readCalls(t) - before - int(fi.reads.Load()-instReads)
	<-served
	t.Logf("%d reads by the manager for %d answers", mine, tasks-1)
	// Slack for the odd wake-up with nothing to read, and other reads of
	// this process; two reads an answer would be 798.
	require.Less(t, mine, (tasks-1)*5/4)
}

// Between tasks an instance may ping, and may go: the ping is answered,
// a task after it is served, and the end of an idle connection is
// reported at once.
func TestInstConnIdlePingAndEnd(t *testing.T) {
	c, fi, lost := newFDInstance(t)
	served := fi.serve(t, 1)
	var r results
	timer := time.NewTimer(time.Hour)
	require.NoError(t, c.call(context.Background(), []byte(`1`), &r, nil, timer, 10*time.Second))
	<-served

	fi.write(t, wsframe.AppendFrame(nil, wsframe.OpPing, []byte("idle?"), nil))
	// The pong comes back masked; the instance's reader takes it as a
	// control frame between messages.
	fi.rd.Controls = true
	op, _, err := fi.rd.Next(nil)
	require.NoError(t, err)
	require.Equal(t, wsframe.OpPong, op)
	fi.rd.Controls = false

	served = fi.serve(t, 1)
	r = r[:0]
	require.NoError(t, c.call(context.Background(), []byte(`2`), &r, nil, timer, 10*time.Second))
	<-served
	require.Equal(t, results{`2`}, r)

	require.NoError(t, syscall.Shutdown(fi.fd, syscall.SHUT_WR))
	select {
	case err := <-lost:
		require.Error(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("the end of an idle instance connection was not reported")
	}
	require.False(t, c.clean())
}
