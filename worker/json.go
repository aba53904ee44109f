package worker

import (
	"bytes"

	"github.com/drover-dev/drover/session"
)

// The task data was checked by session.Decode, so these scanners only find
// boundaries: they trust the syntax, yet stay in bounds and end on any input.

// command returns the name in the string member "command" of the JSON object
// obj, without parsing the rest of it. Like encoding/json and session.Decode,
// it matches escaped names ("comm\u0061nd") and lets the last member win. buf
// holds an unescaped name; a name too long for it or not ASCII comes back raw,
// which is no command's name.
func command(obj []byte, buf *[16]byte) ([]byte, bool) {
	var val []byte
	m := members{b: obj}
	for {
		key, v, ok := m.next()
		if !ok {
			break
		}
		if string(unescape(key, buf)) == "command" {
			val = v
		}
	}
	if len(val) < 2 || val[0] != '"' {
		return nil, false
	}
	raw := val[1 : len(val)-1]
	if name := unescape(raw, buf); name != nil {
		return name, true
	}
	return raw, true
}

// unescape returns the contents raw of a JSON string with its escapes decoded
// into buf, or raw itself when it has none. It returns nil when the result
// does not fit buf or is not ASCII.
func unescape(raw []byte, buf *[16]byte) []byte {
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	return session.UnescapeASCII(raw, buf[:])
}

// members iterates over the members of a JSON object.
type members struct {
	b    []byte
	i    int
	open bool
}

// next returns the raw key (without its quotes) and the raw value of the next
// member; ok is false at the end of the object or when obj is not one.
func (m *members) next() (key, val []byte, ok bool) {
	b := m.b
	i := skipSpace(b, m.i)
	if !m.open {
		if i >= len(b) || b[i] != '{' {
			return nil, nil, false
		}
		m.open = true
		i = skipSpace(b, i+1)
	} else if i < len(b) && b[i] == ',' {
		i = skipSpace(b, i+1)
	}
	if i >= len(b) || b[i] != '"' {
		m.i = len(b)
		return nil, nil, false
	}
	ks := i
	i = skipString(b, i)
	if i < 0 {
		m.i = len(b)
		return nil, nil, false
	}
	key = b[ks+1 : i-1]
	i = skipSpace(b, i)
	if i >= len(b) || b[i] != ':' {
		m.i = len(b)
		return nil, nil, false
	}
	vs := skipSpace(b, i+1)
	i = skipValue(b, vs)
	if i < 0 {
		m.i = len(b)
		return nil, nil, false
	}
	m.i = i
	return key, b[vs:i], true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the string that starts at b[i], or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i + 1
		case '\\':
			i++
		}
	}
	return -1
}

// skipValue returns the index after the value that starts at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	// A number or a literal ends at the first delimiter.
	s := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == s {
				return -1
			}
			return i
		}
		i++
	}
	return i
}
