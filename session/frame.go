package session

import (
	"errors"
	"strconv"
	"unicode/utf8"
)

// FrameType is the "type" of a protocol frame.
type FrameType uint8

// The frame types of client protocol v1 and of the native instance protocol,
// which shares the envelope.
const (
	FrameUnknown FrameType = iota
	FrameTask
	FrameResult
	FrameDone
	FrameError
	FrameEvent
	FrameLogout
	FrameWelcome
	FrameQueued
	FramePing
	FramePong
)

var frameTypeNames = [...]string{
	FrameUnknown: "unknown",
	FrameTask:    "task",
	FrameResult:  "result",
	FrameDone:    "done",
	FrameError:   "error",
	FrameEvent:   "event",
	FrameLogout:  "logout",
	FrameWelcome: "welcome",
	FrameQueued:  "queued",
	FramePing:    "ping",
	FramePong:    "pong",
}

func (t FrameType) String() string {
	if int(t) < len(frameTypeNames) {
		return frameTypeNames[t]
	}
	return "unknown"
}

// Frame is one decoded text frame. ID, Data and Error alias the buffer given
// to Decode: they are valid only as long as that buffer is.
type Frame struct {
	Type FrameType
	// ID is the raw JSON of the "id" member (a string or a number), nil when absent.
	ID []byte
	// Data is the raw JSON of the "data" member, nil when absent.
	Data []byte
	// Error is the raw JSON of the "error" member, nil when absent.
	Error []byte
	// TypeName is the raw "type" string when Type is FrameUnknown, for messages.
	TypeName []byte
}

// MaxIDLength bounds a task id: ids are echoed in every result frame.
const MaxIDLength = 256

// Decode errors. Each is a client error: the frame is answered with a
// bad_request error, the connection stays open.
var (
	ErrNotJSON     = errors.New("frame is not a JSON object")
	ErrNoType      = errors.New(`frame has no string "type"`)
	ErrBadID       = errors.New(`"id" must be a string or a number of at most 256 bytes`)
	ErrInvalidUTF8 = errors.New("frame is not valid UTF-8")
)

// Decode parses one frame: a JSON object whose members "type", "id", "data"
// and "error" are picked out; other members are checked for syntax and
// ignored. It does not allocate.
func Decode(b []byte, f *Frame) error {
	*f = Frame{}
	s := scanner{b: b}
	var nbuf [8]byte
	s.ws()
	if !s.byte('{') {
		return ErrNotJSON
	}
	s.ws()
	if !s.byte('}') {
		for {
			s.ws()
			ks := s.i
			if !s.str() {
				return ErrNotJSON
			}
			key := b[ks+1 : s.i-1]
			if s.esc {
				key = UnescapeASCII(key, nbuf[:])
			}
			s.ws()
			if !s.byte(':') {
				return ErrNotJSON
			}
			s.ws()
			vs := s.i
			if !s.value(0) {
				return ErrNotJSON
			}
			v := b[vs:s.i]
			switch string(key) {
			case "type":
				// The last "type" counts, as for the other members.
				f.Type, f.TypeName = FrameUnknown, nil
				if v[0] == '"' {
					name := v[1 : len(v)-1]
					if s.esc {
						name = UnescapeASCII(name, nbuf[:])
					}
					f.Type = lookupType(name)
					if f.Type == FrameUnknown {
						f.TypeName = v[1 : len(v)-1]
					}
				}
			case "id":
				f.ID = v
			case "data":
				f.Data = v
			case "error":
				f.Error = v
			}
			s.ws()
			if s.byte('}') {
				break
			}
			if !s.byte(',') {
				return ErrNotJSON
			}
		}
	}
	s.ws()
	if s.i != len(b) {
		return ErrNotJSON
	}
	if s.badUTF8 {
		return ErrInvalidUTF8
	}
	if f.Type == FrameUnknown && f.TypeName == nil {
		return ErrNoType
	}
	if string(f.ID) == "null" {
		// An explicit null id is the same as none: error frames about a
		// frame without a usable id carry it.
		f.ID = nil
	}
	if f.ID != nil {
		if len(f.ID) > MaxIDLength || (f.ID[0] != '"' && f.ID[0] != '-' && (f.ID[0] < '0' || f.ID[0] > '9')) {
			return ErrBadID
		}
	}
	return nil
}

func lookupType(name []byte) FrameType {
	switch string(name) {
	case "task":
		return FrameTask
	case "result":
		return FrameResult
	case "done":
		return FrameDone
	case "error":
		return FrameError
	case "event":
		return FrameEvent
	case "logout":
		return FrameLogout
	case "welcome":
		return FrameWelcome
	case "queued":
		return FrameQueued
	case "ping":
		return FramePing
	case "pong":
		return FramePong
	}
	return FrameUnknown
}

// UnescapeASCII decodes the escapes of raw, the contents of a JSON string,
// into buf and returns the result, so that an escaped name (RFC 8259 allows
// "\u0074ype") matches like the plain one. It does not allocate: a result
// that is not ASCII or does not fit buf, and a malformed escape, come back
// nil. Decode uses it for member and type names, the reference worker for
// command names.
func UnescapeASCII(raw, buf []byte) []byte {
	n := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '\\' {
			if i++; i == len(raw) {
				return nil
			}
			switch c = raw[i]; c {
			case 'b':
				c = '\b'
			case 'f':
				c = '\f'
			case 'n':
				c = '\n'
			case 'r':
				c = '\r'
			case 't':
				c = '\t'
			case 'u':
				if len(raw)-i < 5 {
					return nil
				}
				var r rune
				for _, h := range raw[i+1 : i+5] {
					d, ok := unhex(h)
					if !ok {
						return nil
					}
					r = r<<4 | rune(d)
				}
				i += 4
				if r >= utf8.RuneSelf {
					return nil
				}
				c = byte(r)
			}
		}
		if c >= utf8.RuneSelf || n == len(buf) {
			return nil
		}
		buf[n] = c
		n++
	}
	return buf[:n]
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// maxDepth bounds nesting so that a hostile frame cannot exhaust the stack.
const maxDepth = 512

// scanner is a JSON syntax checker over a byte slice (RFC 8259).
type scanner struct {
	b       []byte
	i       int
	badUTF8 bool
	esc     bool // the last string scanned has an escape
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *scanner) byte(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

func (s *scanner) lit(l string) bool {
	if len(s.b)-s.i >= len(l) && string(s.b[s.i:s.i+len(l)]) == l {
		s.i += len(l)
		return true
	}
	return false
}

func (s *scanner) value(depth int) bool {
	if s.i >= len(s.b) || depth > maxDepth {
		return false
	}
	switch c := s.b[s.i]; {
	case c == '"':
		return s.str()
	case c == '{':
		s.i++
		s.ws()
		if s.byte('}') {
			return true
		}
		for {
			s.ws()
			if !s.str() {
				return false
			}
			s.ws()
			if !s.byte(':') {
				return false
			}
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.byte('}') {
				return true
			}
			if !s.byte(',') {
				return false
			}
		}
	case c == '[':
		s.i++
		s.ws()
		if s.byte(']') {
			return true
		}
		for {
			s.ws()
			if !s.value(depth + 1) {
				return false
			}
			s.ws()
			if s.byte(']') {
				return true
			}
			if !s.byte(',') {
				return false
			}
		}
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	}
	return false
}

func (s *scanner) str() bool {
	if !s.byte('"') {
		return false
	}
	s.esc = false
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return true
		case c == '\\':
			s.esc = true
			s.i++
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.i++
			case 'u':
				if len(s.b)-s.i < 5 {
					return false
				}
				for _, h := range s.b[s.i+1 : s.i+5] {
					if !isHex(h) {
						return false
					}
				}
				s.i += 5
			default:
				return false
			}
		case c < 0x20:
			return false
		case c < utf8.RuneSelf:
			s.i++
		default:
			r, n := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && n == 1 {
				s.badUTF8 = true
			}
			s.i += n
		}
	}
	return false
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

func (s *scanner) digits() bool {
	st := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > st
}

func (s *scanner) number() bool {
	s.byte('-')
	if s.byte('0') {
		// no leading zeros
	} else if !s.digits() {
		return false
	}
	if s.byte('.') && !s.digits() {
		return false
	}
	if s.i < len(s.b) && (s.b[s.i] == 'e' || s.b[s.i] == 'E') {
		s.i++
		if s.i < len(s.b) && (s.b[s.i] == '+' || s.b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			return false
		}
	}
	return true
}

// Encoders append one frame to dst and return the extended slice, so that a
// caller can reuse a pooled buffer and encode without allocating. id and data
// must be valid JSON values (as Decode returns them); a nil id is written as
// null, a nil data as null.

// AppendTask appends {"type":"task","id":ID,"data":DATA}.
func AppendTask(dst, id, data []byte) []byte {
	dst = append(dst, `{"type":"task","id":`...)
	dst = appendID(dst, id)
	return appendData(dst, data)
}

// AppendTaskSeq appends a task frame whose id is the number seq: the form the
// manager uses towards instances.
func AppendTaskSeq(dst []byte, seq uint64, data []byte) []byte {
	dst = append(dst, `{"type":"task","id":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return appendData(dst, data)
}

// AppendResult appends {"type":"result","id":ID,"data":DATA}.
func AppendResult(dst, id, data []byte) []byte {
	dst = append(dst, `{"type":"result","id":`...)
	dst = appendID(dst, id)
	return appendData(dst, data)
}

// AppendResultSeq appends a result frame with a numeric id.
func AppendResultSeq(dst []byte, seq uint64, data []byte) []byte {
	dst = append(dst, `{"type":"result","id":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return appendData(dst, data)
}

func appendData(dst, data []byte) []byte {
	dst = append(dst, `,"data":`...)
	if len(data) == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = append(dst, data...)
	}
	return append(dst, '}')
}

// AppendDone appends {"type":"done","id":ID}.
func AppendDone(dst, id []byte) []byte {
	dst = append(dst, `{"type":"done","id":`...)
	dst = appendID(dst, id)
	return append(dst, '}')
}

// AppendDoneSeq appends a done frame with a numeric id.
func AppendDoneSeq(dst []byte, seq uint64) []byte {
	dst = append(dst, `{"type":"done","id":`...)
	dst = strconv.AppendUint(dst, seq, 10)
	return append(dst, '}')
}

// AppendError appends {"type":"error","id":ID,"error":{"code":C,"message":M}}.
// A nil id is written as null: the error is about a frame without a usable id.
func AppendError(dst, id []byte, code, message string) []byte {
	dst = append(dst, `{"type":"error","id":`...)
	dst = appendID(dst, id)
	dst = append(dst, `,"error":{"code":`...)
	dst = AppendString(dst, code)
	dst = append(dst, `,"message":`...)
	dst = AppendString(dst, message)
	return append(dst, "}}"...)
}

// AppendErrorSeq appends an error frame with a numeric id.
func AppendErrorSeq(dst []byte, seq uint64, code, message string) []byte {
	return AppendError(dst, strconv.AppendUint(make([]byte, 0, 20), seq, 10), code, message)
}

func appendID(dst, id []byte) []byte {
	if len(id) == 0 {
		return append(dst, "null"...)
	}
	return append(dst, id...)
}

// AppendWelcome appends the welcome frame sent once a session is bound.
func AppendWelcome(dst []byte, sessionID, instanceID, resume string) []byte {
	dst = append(dst, `{"type":"welcome","session":`...)
	dst = AppendString(dst, sessionID)
	dst = append(dst, `,"instance":`...)
	dst = AppendString(dst, instanceID)
	dst = append(dst, `,"resume":`...)
	dst = AppendString(dst, resume)
	return append(dst, '}')
}

// AppendQueued appends {"type":"queued","position":N}.
func AppendQueued(dst []byte, position int) []byte {
	dst = append(dst, `{"type":"queued","position":`...)
	dst = strconv.AppendInt(dst, int64(position), 10)
	return append(dst, '}')
}

// AppendEvent appends {"type":"event","event":NAME,KEY:VALUE...}; kv holds
// pairs of member name and string value.
func AppendEvent(dst []byte, name string, kv ...string) []byte {
	dst = append(dst, `{"type":"event","event":`...)
	dst = AppendString(dst, name)
	for i := 0; i+1 < len(kv); i += 2 {
		dst = append(dst, ',')
		dst = AppendString(dst, kv[i])
		dst = append(dst, ':')
		dst = AppendString(dst, kv[i+1])
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// AppendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD.
func AppendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += n
			start = i
			continue
		}
		i += n
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
