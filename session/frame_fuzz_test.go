package session

import (
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// decodeSeeds are realistic frames of both directions and of the native
// protocol, plus the shapes that parsers tend to get wrong.
var decodeSeeds = []string{
	`{"type":"task","id":"c0ffee-17","data":{"op":"extrude","part":42,"depth":12.5,"sketch":"s-3"}}`,
	`{"type":"task","id":1,"data":{"command":"ping"}}`,
	`{"type":"task","id":"a","data":null}`,
	`{"type":"task","id":-1.5e3,"data":[1,"two",{"three":[true,false,null]}]}`,
	`{"type":"result","id":"c0ffee-17","data":{"ok":true,"mesh":"AAECAw=="}}`,
	`{"type":"result","id":18446744073709551615,"data":"\u00e9\ud83d\ude00\n"}`,
	`{"type":"done","id":"c0ffee-17"}`,
	`{"type":"error","id":"x","error":{"code":"timeout","message":"task took longer than 30s"}}`,
	`{"type":"error","id":null,"error":{"code":"bad_request","message":"frame is not a JSON object"}}`,
	`{"type":"event","event":"instance_lost","instance":"i-1"}`,
	`{"type":"welcome","session":"s-1","instance":"i-1","resume":"r-abc"}`,
	`{"type":"queued","position":3}`,
	`{"type":"logout"}`,
	`{"type":"ping"}`,
	`{"type":"pong"}`,
	`{"type":"frobnicate","id":1}`,
	` { "type" : "task" , "id" : 2 , "data" : { } } `,
	"{\"type\":\"task\",\n\t\"id\":\"multi\",\r\n\"data\":[ ]}",
	`{"data":{"type":"done"},"type":"task","id":"nested-type"}`,
	`{"type":"task","type":"done"}`,
	`{"type":1,"type":"task"}`,
	`{"\u0074ype":"t\u0061sk","i\u0064":"escaped"}`,
	`{"type":"task","id":{"a":1}}`,
	`{"type":"task","id":[1]}`,
	`{"type":"task","id":true}`,
	`{"type":"task","id":""}`,
	"{\"type\":\"task\",\"data\":\"\xff\"}",
	"{\"type\":\"task\",\"data\":\"\xed\xa0\x80\"}",
	`{"type":"task","data":[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]}`,
	`{"type":"task"}x`,
	`{"type":"task",}`,
	`{"type":"task","id":01}`,
	`{"type":"task","data":"\u12"}`,
	`{}`,
	`[]`,
	`null`,
	``,
}

func FuzzDecode(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var fr Frame
		err := Decode(in, &fr) // must not panic

		var m map[string]json.RawMessage
		object := json.Valid(in) && json.Unmarshal(in, &m) == nil && m != nil
		if err == nil {
			if !object {
				t.Fatalf("Decode accepted %q, which is not a JSON object", in)
			}
			checkLikeStd(t, in, &fr, m)
			return
		}

		switch {
		case !object:
			if !errors.Is(err, ErrNotJSON) {
				t.Fatalf("Decode(%q) = %v, want ErrNotJSON for what is not a JSON object", in, err)
			}
		case errors.Is(err, ErrInvalidUTF8):
			if utf8.Valid(in) {
				t.Fatalf("Decode(%q) = %v for valid UTF-8", in, err)
			}
		case errors.Is(err, ErrBadID):
			if id, ok := m["id"]; ok && goodID(id) {
				t.Fatalf("Decode(%q) = %v for id %s", in, err, id)
			}
		case errors.Is(err, ErrNoType):
			if _, ok := stringMember(m, "type"); ok {
				t.Fatalf("Decode(%q) = %v, yet it has a string type", in, err)
			}
		case errors.Is(err, ErrNotJSON):
			// The only valid objects Decode refuses as such are those
			// nested beyond its limit.
			if d := nesting(in); d <= maxDepth+1 {
				t.Fatalf("Decode(%q) = %v for a valid object nested %d deep", in, err, d)
			}
		default:
			t.Fatalf("Decode(%q) = unexpected error %v", in, err)
		}
	})
}

// checkLikeStd checks a decoded frame against what encoding/json makes of
// the same input.
func checkLikeStd(t *testing.T, in []byte, fr *Frame, m map[string]json.RawMessage) {
	t.Helper()
	if !utf8.Valid(in) {
		t.Fatalf("Decode accepted %q, which is not valid UTF-8", in)
	}
	typ, ok := stringMember(m, "type")
	if !ok {
		t.Fatalf("Decode accepted %q, which has no string type", in)
	}
	if want := lookupType([]byte(typ)); fr.Type != want {
		t.Fatalf("Decode(%q).Type = %v, want %v", in, fr.Type, want)
	}
	if fr.Type == FrameUnknown {
		var name string
		if fr.TypeName == nil || json.Unmarshal([]byte(`"`+string(fr.TypeName)+`"`), &name) != nil || name != typ {
			t.Fatalf("Decode(%q).TypeName = %q, want %q", in, fr.TypeName, typ)
		}
	}
	for _, mem := range []struct {
		name string
		got  []byte
	}{{"id", fr.ID}, {"data", fr.Data}, {"error", fr.Error}} {
		want, ok := m[mem.name]
		if mem.name == "id" && string(want) == "null" {
			want, ok = nil, false // an explicit null id decodes as none
		}
		if !ok && mem.got != nil || ok && string(want) != string(mem.got) {
			t.Fatalf("Decode(%q): %s = %q, encoding/json says %q", in, mem.name, mem.got, want)
		}
	}
	if fr.ID != nil && !goodID(fr.ID) {
		t.Fatalf("Decode(%q) accepted id %s", in, fr.ID)
	}
}

// stringMember returns the member name of m if it is a JSON string.
func stringMember(m map[string]json.RawMessage, name string) (string, bool) {
	raw, ok := m[name]
	if !ok || len(raw) == 0 || raw[0] != '"' {
		return "", false
	}
	var s string
	return s, json.Unmarshal(raw, &s) == nil
}

// goodID reports whether a valid JSON value is an id Decode must accept.
func goodID(id []byte) bool {
	if len(id) == 0 || len(id) > MaxIDLength {
		return false
	}
	c := id[0]
	return c == '"' || c == '-' || c >= '0' && c <= '9'
}

// nesting returns how deeply arrays and objects nest in valid JSON b; a
// top-level object counts as 1.
func nesting(b []byte) int {
	depth, maxd, inStr := 0, 0, false
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case inStr && c == '\\':
			i++
		case c == '"':
			inStr = !inStr
		case inStr:
		case c == '[' || c == '{':
			depth++
			maxd = max(maxd, depth)
		case c == ']' || c == '}':
			depth--
		}
	}
	return maxd
}

func FuzzAppendString(f *testing.F) {
	for _, s := range trickyStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		checkAppendString(t, s)

		// Whatever the strings, the frames built from them decode.
		var fr Frame
		out := AppendError(nil, []byte(`"id"`), s, s)
		if err := Decode(out, &fr); err != nil || fr.Type != FrameError {
			t.Fatalf("Decode(AppendError(%q)) = %s, %v", s, out, err)
		}
		var e struct{ Code, Message string }
		if err := json.Unmarshal(fr.Error, &e); err != nil || e.Code != e.Message {
			t.Fatalf("AppendError(%q) = %s: error member %s: %v", s, out, fr.Error, err)
		}
		out = AppendEvent(nil, s, "k", s)
		if err := Decode(out, &fr); err != nil || fr.Type != FrameEvent {
			t.Fatalf("Decode(AppendEvent(%q)) = %s, %v", s, out, err)
		}
		out = AppendWelcome(nil, s, s, s)
		if err := Decode(out, &fr); err != nil || fr.Type != FrameWelcome {
			t.Fatalf("Decode(AppendWelcome(%q)) = %s, %v", s, out, err)
		}
	})
}
