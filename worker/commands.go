package worker

import (
	"encoding/json"
	"math"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/drover-dev/drover/session"
)

const (
	maxStream    = 1 << 30
	defaultChunk = 64 << 10
	// maxChunk keeps a binary frame within the read limit the manager
	// applies, which is the worker's own.
	maxChunk = maxMessageSize
	maxSleep = math.MaxInt64 / int64(time.Millisecond)
)

// task runs one task to its end.
func (c *conn) task(id, data []byte) error {
	var nbuf [16]byte
	name, ok := command(data, &nbuf)
	if !ok {
		return c.fail(id, session.CodeBadRequest, `task data must be a JSON object with a "command" string`)
	}
	switch string(name) {
	case "echo":
		// The benchmark path: the data goes back as it came, unparsed.
		if err := c.result(id, data); err != nil {
			return err
		}
		return c.done(id)
	case "sleep":
		return c.sleep(id, data)
	case "set":
		return c.set(id, data)
	case "get":
		return c.get(id, data)
	case "reset":
		return c.reset(id)
	case "pid":
		c.scratch = append(c.scratch[:0], `{"pid":`...)
		c.scratch = strconv.AppendInt(c.scratch, int64(c.w.pid), 10)
		c.scratch = append(c.scratch, `,"instance":`...)
		c.scratch = session.AppendString(c.scratch, c.w.instanceID)
		c.scratch = append(c.scratch, '}')
		return c.resultDone(id, c.scratch)
	case "model":
		return c.model(id)
	case "stream":
		return c.stream(id, data)
	case "results":
		return c.results(id, data)
	case "fail":
		return c.fail(id, session.CodeTaskFailed, "failed on request")
	case "crash":
		return c.crash(id, data)
	}
	return c.fail(id, session.CodeBadRequest, "unknown command "+strconv.Quote(string(name)))
}

// maxModelFiles caps the listing of the model command.
const maxModelFiles = 1000

// model lists the model directory the worker was started with, the way a
// CAD kernel or a streaming server would load its model: the files'
// names and sizes, not their contents.
func (c *conn) model(id []byte) error {
	dir := c.w.modelDir
	if dir == "" {
		return c.fail(id, session.CodeTaskFailed, "the worker was started without a model directory")
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return c.fail(id, session.CodeTaskFailed, "read the model directory: "+err.Error())
	}
	type file struct {
		Name string `json:"name"`
		Size int64  `json:"size"`
	}
	out := struct {
		Dir   string `json:"dir"`
		Files []file `json:"files"`
	}{Dir: dir, Files: []file{}}
	for _, e := range ents[:min(len(ents), maxModelFiles)] {
		fi, err := e.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		out.Files = append(out.Files, file{Name: e.Name(), Size: fi.Size()})
	}
	b, err := json.Marshal(out)
	if err != nil {
		return c.fail(id, session.CodeTaskFailed, err.Error())
	}
	return c.resultDone(id, b)
}

func (c *conn) resultDone(id, data []byte) error {
	if err := c.result(id, data); err != nil {
		return err
	}
	return c.done(id)
}

// args decodes the arguments of a command, answering bad data itself. It
// reports whether the command should go on; err is a connection error.
func (c *conn) args(id, data []byte, v any) (bool, error) {
	if err := json.Unmarshal(data, v); err != nil {
		return false, c.fail(id, session.CodeBadRequest, "bad arguments: "+err.Error())
	}
	return true, nil
}

func (c *conn) sleep(id, data []byte) error {
	var a struct {
		MS int64 `json:"ms"`
	}
	if ok, err := c.args(id, data, &a); !ok {
		return err
	}
	if a.MS < 0 || a.MS > maxSleep {
		return c.fail(id, session.CodeBadRequest, `"ms" must be a duration in milliseconds`)
	}
	if err := c.wait(time.Duration(a.MS) * time.Millisecond); err != nil {
		return err
	}
	c.scratch = append(c.scratch[:0], `{"slept":`...)
	c.scratch = strconv.AppendInt(c.scratch, a.MS, 10)
	c.scratch = append(c.scratch, '}')
	return c.resultDone(id, c.scratch)
}

func (c *conn) set(id, data []byte) error {
	var a struct {
		Key   *string         `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	if ok, err := c.args(id, data, &a); !ok {
		return err
	}
	if a.Key == nil || a.Value == nil {
		return c.fail(id, session.CodeBadRequest, `set needs a string "key" and a "value"`)
	}
	w := c.w
	w.mu.Lock()
	if string(a.Value) == "null" {
		delete(w.state, *a.Key)
	} else {
		// Unmarshal copied the value out of the read buffer.
		w.state[*a.Key] = a.Value
	}
	w.mu.Unlock()
	return c.resultDone(id, []byte(`{"ok":true}`))
}

func (c *conn) get(id, data []byte) error {
	var a struct {
		Key *string `json:"key"`
	}
	if ok, err := c.args(id, data, &a); !ok {
		return err
	}
	if a.Key == nil {
		return c.fail(id, session.CodeBadRequest, `get needs a string "key"`)
	}
	w := c.w
	w.mu.RLock()
	v, ok := w.state[*a.Key]
	w.mu.RUnlock()
	if !ok {
		v = []byte("null")
	}
	c.scratch = append(c.scratch[:0], `{"key":`...)
	c.scratch = session.AppendString(c.scratch, *a.Key)
	c.scratch = append(c.scratch, `,"value":`...)
	c.scratch = append(c.scratch, v...)
	c.scratch = append(c.scratch, '}')
	return c.resultDone(id, c.scratch)
}

// reset empties the state, as a manager asks between the sessions of a pool
// that reuses instances, and answers once it is empty: the next session
// finds nothing the previous one set. The answer says how many keys went.
func (c *conn) reset(id []byte) error {
	w := c.w
	w.mu.Lock()
	n := len(w.state)
	// A new map rather than clear: the old one keeps its buckets, sized
	// for the largest state any session left.
	w.state = make(map[string][]byte)
	w.mu.Unlock()
	c.scratch = append(c.scratch[:0], `{"cleared":`...)
	c.scratch = strconv.AppendInt(c.scratch, int64(n), 10)
	c.scratch = append(c.scratch, '}')
	return c.resultDone(id, c.scratch)
}

func (c *conn) results(id, data []byte) error {
	var a struct {
		N int64 `json:"n"`
	}
	if ok, err := c.args(id, data, &a); !ok {
		return err
	}
	if a.N < 0 {
		return c.fail(id, session.CodeBadRequest, `"n" must not be negative`)
	}
	for i := range a.N {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		c.scratch = append(c.scratch[:0], `{"i":`...)
		c.scratch = strconv.AppendInt(c.scratch, i, 10)
		c.scratch = append(c.scratch, '}')
		if err := c.result(id, c.scratch); err != nil {
			return err
		}
	}
	return c.done(id)
}

func (c *conn) stream(id, data []byte) error {
	var a struct {
		Bytes int64 `json:"bytes"`
		Chunk int64 `json:"chunk"`
	}
	if ok, err := c.args(id, data, &a); !ok {
		return err
	}
	n, chunk, ok := streamSize(a.Bytes, a.Chunk)
	if !ok {
		return c.fail(id, session.CodeBadRequest, `"bytes" and "chunk" must not be negative`)
	}
	for off := int64(0); off < n; off += chunk {
		if err := c.ctx.Err(); err != nil {
			return err
		}
		if err := c.writeChunk(off, min(chunk, n-off)); err != nil {
			return err
		}
	}
	return c.done(id)
}

// streamSize applies the defaults and caps of the stream command.
func streamSize(n, chunk int64) (int64, int64, bool) {
	if n < 0 || chunk < 0 {
		return 0, 0, false
	}
	if chunk == 0 {
		chunk = defaultChunk
	}
	return min(n, maxStream), min(chunk, maxChunk), true
}

// pattern returns a table whose byte at index i is byte(i), one period longer
// than a default chunk: any chunk of stream content up to that size is one
// slice of it, so the content is deterministic without a per-task buffer.
var pattern = sync.OnceValue(func() []byte {
	p := make([]byte, defaultChunk+256)
	for i := range p {
		p[i] = byte(i)
	}
	return p
})

// patternAt returns up to n bytes of the stream content at offset off.
func patternAt(off, n int64) []byte {
	p := pattern()
	start := off % 256
	return p[start : start+min(n, defaultChunk)]
}

// writeChunk sends the size bytes of stream content at off as one binary
// frame, from the pattern table itself: out writes large frames with
// writev, without copying.
func (c *conn) writeChunk(off, size int64) error {
	c.parts = c.parts[:0]
	for end := off + size; off < end; {
		p := patternAt(off, end-off)
		c.parts = append(c.parts, p)
		off += int64(len(p))
	}
	return c.out.Binary(false, c.parts...)
}

func (c *conn) crash(id, data []byte) error {
	var a struct {
		Code *int `json:"code"`
	}
	if ok, err := c.args(id, data, &a); !ok {
		return err
	}
	code := 1
	if a.Code != nil {
		code = *a.Code
	}
	c.w.log.Warn("crash requested", "code", code)
	c.w.exit(code)
	return errCrashed
}
