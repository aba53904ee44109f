package farm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/drover-dev/drover/internal/lib/httpguard"
	"github.com/drover-dev/drover/session"
)

// The dial adapter (ClassCAD style). The farm listens on one private
// loopback port; each dial instance is started with that port
// ({{.PrivatePort}}) and its id ({{.ID}}), as ClassCAD's are with
// "EXE socketclient --port P --ccwss --binary --id GUID", and connects
// back. The farm speaks first, as ClassCAD's own manager does: a real
// instance says nothing until its configuration arrives.
//
//	farm → instance  {"command":"configuration","farm":F}
//	instance → farm  {"response":"Handshake","id":ID}
//	instance → farm  {"response":"Ready"}
//
// An instance that sends its Handshake before the configuration reached
// it is served the same way: the farm sends the configuration as soon as
// the connection opens, whatever the instance does. The configuration goes
// out before the farm knows which instance connected, so it carries nothing
// per instance: an instance learns its id, model and model directory from
// its command line ({{.ID}}, {{.Model}}, {{.ModelDirs}}). The instance's
// first message must be its Handshake, naming the id it was started with;
// what it sends between the Handshake and Ready is logged and skipped, and
// one with an "error" member fails the start.
//
// A native task then becomes a frame of commands:
//
//	{"command":"BeginFrame","transactionID":T}
//	the task's data: one JSON object is one command, an array several
//	{"command":"EndFrame","transactionID":T}
//
// The instance answers every command with a JSON object whose "from" names
// the command, {"command":"Result","from":CMD,"transactionID":T,"result":R}.
// Replies between the frame's ends become native results (the whole object
// is the data); the reply from BeginFrame is framing and is not passed on;
// the reply from EndFrame ends the task (done). A reply with an "error"
// member ends the task with a task_failed error, and the frame's remaining
// replies are dropped. Binary messages are binary results. Replies are
// attributed by order: the instance is serial, so the n-th EndFrame reply
// closes the n-th frame; an EndFrame reply that names its transactionID
// also closes any older frame still open.
//
// A dial instance whose connection drops is dead: the farm kills its
// process and reports the exit like a crash.

// dialHandshakeTimeout bounds the wait for the first message on the private
// port; the rest of a handshake is bounded by the pool's start timeout.
const dialHandshakeTimeout = 10 * time.Second

// ErrHandshake means a dial instance connected but did not complete its
// handshake.
var ErrHandshake = errors.New("farm: dial handshake failed")

// dialServer is the farm's private listener that dial instances connect
// back to.
type dialServer struct {
	f    *Farm
	ln   net.Listener
	srv  *http.Server
	port int
	// configuration is the first message on every connection.
	configuration []byte

	mu     sync.Mutex
	closed bool
	conns  map[*websocket.Conn]struct{}
	wg     sync.WaitGroup // Serve and every handler
}

func newDialServer(f *Farm) (*dialServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("farm: private listener for dial instances: %w", err)
	}
	cfg, err := json.Marshal(struct {
		Command string `json:"command"`
		Farm    string `json:"farm"`
	}{"configuration", f.id})
	if err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("farm: dial configuration: %w", err)
	}
	ds := &dialServer{
		f:             f,
		ln:            ln,
		port:          ln.Addr().(*net.TCPAddr).Port,
		configuration: cfg,
		conns:         make(map[*websocket.Conn]struct{}),
	}
	ds.srv = &http.Server{Handler: ds}
	httpguard.Timeouts{ReadHeader: dialHandshakeTimeout}.Apply(ds.srv)
	ds.wg.Go(func() { _ = ds.srv.Serve(ln) })
	f.log.Debug("private listener for dial instances", "addr", ln.Addr())
	return ds, nil
}

// close stops the listener, closes the connections still open and waits
// for their handlers.
func (ds *dialServer) close() {
	ds.mu.Lock()
	ds.closed = true
	conns := ds.conns
	ds.conns = nil
	ds.mu.Unlock()
	_ = ds.srv.Close()
	for ws := range conns {
		_ = ws.Close()
	}
	ds.wg.Wait()
}

func (ds *dialServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ds.mu.Lock()
	if ds.closed {
		ds.mu.Unlock()
		http.Error(w, "farm closed", http.StatusServiceUnavailable)
		return
	}
	ds.wg.Add(1)
	ds.mu.Unlock()
	defer ds.wg.Done()

	ws, err := hostUpgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	ds.mu.Lock()
	if ds.closed {
		ds.mu.Unlock()
		_ = ws.Close()
		return
	}
	ds.conns[ws] = struct{}{}
	ds.mu.Unlock()
	defer func() {
		ds.mu.Lock()
		delete(ds.conns, ws)
		ds.mu.Unlock()
		_ = ws.Close()
	}()
	ds.f.serveDial(ws, ds.configuration)
}

// dialLink is the farm's side of one dial instance: the connection it
// dialled, the task in flight, and the manager connections to it.
type dialLink struct {
	f     *Farm
	inst  *instance
	hosts hostSet

	ready chan struct{} // closed once the instance reported Ready
	dead  chan struct{} // closed once the connection failed
	err   error         // why; set before dead is closed

	wmu  sync.Mutex // serialises writes to ws
	ws   *websocket.Conn
	wbuf []byte

	mu      sync.Mutex
	claimed bool     // a connection handshakes as this instance
	failed  bool     // dead is closed
	open    []uint64 // transactions sent whose EndFrame reply has not come, oldest first
	nextTx  uint64
	cur     dialTask // the task in flight, if cur.active
}

type dialTask struct {
	active bool
	c      *hostConn
	id     []byte
	tx     uint64
	done   chan struct{} // buffered 1; reused by every task
}

var _ taskRunner = (*dialLink)(nil)

func newDialLink(f *Farm, inst *instance) *dialLink {
	l := &dialLink{
		f:     f,
		inst:  inst,
		ready: make(chan struct{}),
		dead:  make(chan struct{}),
	}
	l.hosts = hostSet{run: l, log: f.log.With("instance", inst.id)}
	l.cur.done = make(chan struct{}, 1)
	return l
}

// serveDial runs one connection on the private port: the configuration,
// the handshake, then the instance's replies until the connection ends.
func (f *Farm) serveDial(ws *websocket.Conn, configuration []byte) {
	ws.SetReadLimit(maxHostMessage)
	// The farm speaks first; nothing else writes to ws before the claim.
	_ = ws.SetWriteDeadline(time.Now().Add(hostWriteTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, configuration); err != nil {
		f.log.Debug("dial connection closed before its configuration", "remote", ws.RemoteAddr(), "err", err)
		return
	}
	_ = ws.SetReadDeadline(time.Now().Add(dialHandshakeTimeout))
	var h dialHello
	m, err := readDialMsg(ws)
	if err == nil {
		err = h.next(m)
	}
	if err != nil {
		f.log.Warn("dial connection without a handshake", "remote", ws.RemoteAddr(), "err", err)
		refuse(ws, websocket.ClosePolicyViolation, "expected a Handshake")
		return
	}
	f.mu.Lock()
	l := f.dialWait[h.id]
	if l != nil && !l.claimed {
		l.claimed = true // l.mu is not needed: claims happen under f.mu only
		l.ws = ws
	} else {
		l = nil
	}
	f.mu.Unlock()
	if l == nil {
		f.log.Warn("dial handshake for an unknown instance", "id", h.id, "remote", ws.RemoteAddr())
		refuse(ws, websocket.ClosePolicyViolation, "unknown instance id")
		return
	}
	defer ws.Close()
	if err := l.awaitReady(&h); err != nil {
		l.fail(err)
		return
	}
	l.readLoop()
}

func refuse(ws *websocket.Conn, code int, text string) {
	_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, text), time.Now().Add(time.Second))
}

// rawString returns a JSON string's text, or other raw JSON as it is.
func rawString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	return string(bytes.TrimSpace(raw))
}

// dialMsg is a text message from a dial instance, as far as the farm reads
// it: a step of the handshake ("response"), or a reply ("from").
type dialMsg struct {
	Response      string
	ID            string
	From          string
	TransactionID json.RawMessage
	Error         json.RawMessage
}

// parseDialMsg reads a message from a dial instance: any JSON object.
// Members of an unexpected type are taken as their JSON text ("from":12 is
// from "12") rather than failing the instance, which ClassCAD builds do
// not promise to avoid.
func parseDialMsg(msg []byte) (dialMsg, error) {
	var raw struct {
		Response      json.RawMessage `json:"response"`
		ID            json.RawMessage `json:"id"`
		From          json.RawMessage `json:"from"`
		TransactionID json.RawMessage `json:"transactionID"`
		Error         json.RawMessage `json:"error"`
	}
	if start := bytes.TrimLeft(msg, " \t\r\n"); len(start) == 0 || start[0] != '{' {
		return dialMsg{}, fmt.Errorf("bad message from the instance: not a JSON object: %.100q", msg)
	}
	if err := json.Unmarshal(msg, &raw); err != nil {
		return dialMsg{}, fmt.Errorf("bad message from the instance: %w", err)
	}
	return dialMsg{
		Response:      rawText(raw.Response),
		ID:            rawText(raw.ID),
		From:          rawText(raw.From),
		TransactionID: raw.TransactionID,
		Error:         raw.Error,
	}, nil
}

// rawText is rawString for a member that may be absent or null. A string
// with no escapes, such as every "from" and "response", is taken as it is,
// without decoding it again.
func rawText(raw json.RawMessage) string {
	switch n := len(raw); {
	case n == 0 || bytes.Equal(raw, []byte("null")):
		return ""
	case n >= 2 && raw[0] == '"' && raw[n-1] == '"' && bytes.IndexByte(raw, '\\') < 0 && utf8.Valid(raw):
		return string(raw[1 : n-1])
	}
	return rawString(raw)
}

// readDialMsg reads the instance's next message of the handshake. ClassCAD
// runs with --binary, so a handshake step may come in a binary message:
// both kinds are read as JSON here. After Ready, binary messages are
// results (readLoop).
func readDialMsg(ws *websocket.Conn) (dialMsg, error) {
	_, msg, err := ws.ReadMessage()
	if err != nil {
		return dialMsg{}, err
	}
	return parseDialMsg(msg)
}

// dialHello follows the instance's side of a handshake: its first message
// must be its Handshake, naming an id; what follows up to Ready is skipped;
// any message with an "error" member fails it. The farm's configuration
// has gone out before the first message is read, so an instance that
// waited for it and one that did not look the same here.
type dialHello struct {
	id    string // named by the Handshake
	shook bool   // the Handshake came
	ready bool   // Ready came after it
	// skipped counts the messages between Handshake and Ready.
	skipped int
}

var (
	errNoHandshake = errors.New("expected a Handshake")
	errNoID        = errors.New("a Handshake without an id")
)

// next takes the instance's next message until ready.
func (h *dialHello) next(m dialMsg) error {
	switch {
	case h.ready:
		return errors.New("the handshake is over")
	case isError(m.Error):
		return fmt.Errorf("the instance reported %s", errorText(m.Error))
	case !h.shook && m.Response != "Handshake":
		return errNoHandshake
	case !h.shook:
		if m.ID == "" {
			return errNoID
		}
		h.id, h.shook = m.ID, true
	case m.Response == "Ready":
		h.ready = true
	default:
		h.skipped++
	}
	return nil
}

// awaitReady reads the rest of a claimed handshake, up to Ready, within the
// pool's start timeout.
func (l *dialLink) awaitReady(h *dialHello) error {
	inst := l.inst
	_ = l.ws.SetReadDeadline(time.Now().Add(inst.pool.startTimeout))
	for !h.ready {
		m, err := readDialMsg(l.ws)
		if err != nil {
			return fmt.Errorf("%w: waiting for Ready: %w", ErrHandshake, err)
		}
		if err := h.next(m); err != nil {
			return fmt.Errorf("%w: %w", ErrHandshake, err)
		}
		if !h.ready {
			l.f.log.Debug("dial instance message before Ready", "instance", inst.id, "response", m.Response)
		}
	}
	_ = l.ws.SetReadDeadline(time.Time{})
	close(l.ready)
	return nil
}

// runTask sends the task as one frame of commands and waits until the
// reader ends it.
func (l *dialLink) runTask(c *hostConn, id, data []byte) {
	cmds, err := splitCommands(data)
	if err != nil {
		c.fail(id, session.CodeBadRequest, err.Error())
		return
	}
	l.mu.Lock()
	if l.failed {
		l.mu.Unlock()
		c.fail(id, session.CodeInstanceLost, "the instance is gone")
		return
	}
	l.nextTx++
	tx := l.nextTx
	l.open = append(l.open, tx)
	t := &l.cur
	t.active, t.c, t.id, t.tx = true, c, id, tx
	l.mu.Unlock()

	l.wmu.Lock()
	err = l.writeFrameLocked(tx, cmds)
	l.wmu.Unlock()
	if err != nil {
		l.fail(fmt.Errorf("send task: %w", err))
	}
	<-t.done
}

// writeFrameLocked writes BeginFrame, the commands and EndFrame; l.wmu is
// held.
func (l *dialLink) writeFrameLocked(tx uint64, cmds [][]byte) error {
	_ = l.ws.SetWriteDeadline(time.Now().Add(hostWriteTimeout))
	l.wbuf = appendFrameCommand(l.wbuf[:0], "BeginFrame", tx)
	if err := l.ws.WriteMessage(websocket.TextMessage, l.wbuf); err != nil {
		return err
	}
	for _, cmd := range cmds {
		if err := l.ws.WriteMessage(websocket.TextMessage, cmd); err != nil {
			return err
		}
	}
	l.wbuf = appendFrameCommand(l.wbuf[:0], "EndFrame", tx)
	return l.ws.WriteMessage(websocket.TextMessage, l.wbuf)
}

func appendFrameCommand(dst []byte, name string, tx uint64) []byte {
	dst = append(dst, `{"command":"`...)
	dst = append(dst, name...)
	dst = append(dst, `","transactionID":`...)
	dst = strconv.AppendUint(dst, tx, 10)
	return append(dst, '}')
}

// splitCommands turns a task's data into the commands it sends: an object
// is one command, an array of objects several.
func splitCommands(data []byte) ([][]byte, error) {
	data = bytes.TrimSpace(data)
	switch {
	case len(data) > 0 && data[0] == '{':
		return [][]byte{data}, nil
	case len(data) > 0 && data[0] == '[':
		var raw []json.RawMessage
		if err := json.Unmarshal(data, &raw); err != nil {
			return nil, fmt.Errorf("bad command array: %w", err)
		}
		cmds := make([][]byte, len(raw))
		for i, r := range raw {
			r = bytes.TrimSpace(r)
			if len(r) == 0 || r[0] != '{' {
				return nil, fmt.Errorf("command %d is not a JSON object", i)
			}
			cmds[i] = r
		}
		return cmds, nil
	}
	return nil, errors.New("a task for this instance is a JSON object (one command) or an array of objects")
}

// endLocked ends the task in flight; l.mu is held.
func (l *dialLink) endLocked() {
	t := &l.cur
	t.active, t.c, t.id = false, nil, nil
	t.done <- struct{}{}
}

// readLoop handles the instance's replies until the connection ends.
func (l *dialLink) readLoop() {
	var buf []byte
	for {
		typ, msg, err := readInto(l.ws, buf)
		if err != nil {
			l.fail(fmt.Errorf("dial connection dropped: %w", err))
			return
		}
		buf = msg
		if typ == websocket.BinaryMessage {
			l.mu.Lock()
			if t := &l.cur; t.active && len(l.open) > 0 && l.open[0] == t.tx {
				t.c.binary(msg)
			}
			l.mu.Unlock()
		} else if err := l.reply(msg); err != nil {
			l.fail(err)
			return
		}
		if cap(buf) > keepBuffer {
			buf = nil
		}
	}
}

// reply handles one text message from the instance.
func (l *dialLink) reply(msg []byte) error {
	r, err := parseDialMsg(msg)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.open) == 0 {
		l.f.log.Debug("dial instance message outside a frame", "instance", l.inst.id, "message", string(truncate(msg, 200)))
		return nil
	}
	t := &l.cur
	ours := t.active && l.open[0] == t.tx
	switch {
	case isError(r.Error):
		if ours {
			t.c.fail(t.id, session.CodeTaskFailed, errorText(r.Error))
			l.endLocked()
		}
	case r.From == "BeginFrame" || r.From == "EndFrame":
	default:
		if ours {
			t.c.result(t.id, msg)
		}
	}
	if r.From != "EndFrame" {
		return nil
	}
	// Close the oldest frame, or every frame up to the one named.
	n := 1
	if tx, err := strconv.ParseUint(rawString(r.TransactionID), 10, 64); err == nil {
		for i, open := range l.open {
			if open == tx {
				n = i + 1
				break
			}
		}
	}
	closes := t.active && slices.Contains(l.open[:n], t.tx)
	l.open = append(l.open[:0], l.open[n:]...)
	if closes {
		t.c.done(t.id)
		l.endLocked()
	}
	return nil
}

// isError reports whether an "error" member says there was one.
func isError(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	return len(raw) > 0 && !bytes.Equal(raw, []byte("null")) && !bytes.Equal(raw, []byte("false")) &&
		!bytes.Equal(raw, []byte(`""`))
}

// errorText makes a message of an "error" member: a string as it is, an
// object's "message", anything else as JSON.
func errorText(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var o struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(raw, &o) == nil && o.Message != "" {
		return o.Message
	}
	return string(truncate(bytes.TrimSpace(raw), 500))
}

func truncate(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

// fail marks the link dead once: the task in flight ends with
// instance_lost, the manager connections close, and a live process is
// killed; its exit is reported like a crash.
func (l *dialLink) fail(err error) {
	l.mu.Lock()
	if l.failed {
		l.mu.Unlock()
		return
	}
	l.failed = true
	l.err = err
	close(l.dead)
	if l.cur.active {
		l.cur.c.fail(l.cur.id, session.CodeInstanceLost, "the instance was lost")
		l.endLocked()
	}
	l.open = nil
	l.mu.Unlock()
	l.f.mu.Lock()
	ws := l.ws
	l.f.mu.Unlock()
	if ws != nil {
		_ = ws.Close()
	}
	l.hosts.closeAll()
	l.f.kill(l.inst, err)
}

// close is called once the instance exited.
func (l *dialLink) close() {
	l.fail(errors.New("the instance exited"))
}

// awaitDial waits until a dial instance completed its handshake.
func (f *Farm) awaitDial(ctx context.Context, inst *instance) error {
	l := inst.dial
	select {
	case <-l.ready:
		select {
		case <-l.dead:
			return l.err
		default:
			return nil
		}
	case <-l.dead:
		return l.err
	case <-inst.exited:
		return f.earlyExitError(inst)
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}
