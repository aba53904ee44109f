package session

import (
	"bytes"
	"encoding/json"
	"math"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// wantFrame is a Frame with its raw members as strings; "" means absent.
type wantFrame struct {
	Type     FrameType
	ID       string
	Data     string
	Error    string
	TypeName string
}

func requireFrame(t *testing.T, want wantFrame, got *Frame) {
	t.Helper()
	require.Equal(t, want.Type, got.Type, "type")
	for _, m := range []struct {
		name string
		want string
		got  []byte
	}{
		{"id", want.ID, got.ID},
		{"data", want.Data, got.Data},
		{"error", want.Error, got.Error},
	} {
		if m.want == "" {
			require.Nil(t, m.got, m.name)
		} else {
			require.Equal(t, m.want, string(m.got), m.name)
		}
	}
	require.Equal(t, want.TypeName, string(got.TypeName), "type name")
}

func nested(open, inner, closing string, n int) string {
	return strings.Repeat(open, n) + inner + strings.Repeat(closing, n)
}

func TestDecode(t *testing.T) {
	longID := `"` + strings.Repeat("x", MaxIDLength-2) + `"` // exactly MaxIDLength raw bytes
	tests := []struct {
		name string
		in   string
		want wantFrame
	}{
		// every frame type
		{"task", `{"type":"task","id":"a1","data":{"op":"x"}}`,
			wantFrame{Type: FrameTask, ID: `"a1"`, Data: `{"op":"x"}`}},
		{"result", `{"type":"result","id":7,"data":[1,2,3]}`,
			wantFrame{Type: FrameResult, ID: `7`, Data: `[1,2,3]`}},
		{"done", `{"type":"done","id":"a1"}`,
			wantFrame{Type: FrameDone, ID: `"a1"`}},
		{"error", `{"type":"error","id":"a1","error":{"code":"timeout","message":"slow"}}`,
			wantFrame{Type: FrameError, ID: `"a1"`, Error: `{"code":"timeout","message":"slow"}`}},
		{"event", `{"type":"event","event":"draining","farm":"f1"}`,
			wantFrame{Type: FrameEvent}},
		{"logout", `{"type":"logout"}`, wantFrame{Type: FrameLogout}},
		{"welcome", `{"type":"welcome","session":"s","instance":"i","resume":"r"}`,
			wantFrame{Type: FrameWelcome}},
		{"queued", `{"type":"queued","position":3}`, wantFrame{Type: FrameQueued}},
		{"ping", `{"type":"ping"}`, wantFrame{Type: FramePing}},
		{"pong", `{"type":"pong","id":1}`, wantFrame{Type: FramePong, ID: `1`}},
		{"id null is no id", `{"type":"error","id":null,"error":{"code":"bad_request","message":"m"}}`,
			wantFrame{Type: FrameError, Error: `{"code":"bad_request","message":"m"}`}},

		// ids
		{"id string", `{"type":"task","id":"abc-123","data":1}`,
			wantFrame{Type: FrameTask, ID: `"abc-123"`, Data: `1`}},
		{"id empty string", `{"type":"task","id":"","data":1}`,
			wantFrame{Type: FrameTask, ID: `""`, Data: `1`}},
		{"id escaped string", `{"type":"task","id":"a\"b\u00e9","data":1}`,
			wantFrame{Type: FrameTask, ID: `"a\"b\u00e9"`, Data: `1`}},
		{"id zero", `{"type":"task","id":0,"data":1}`,
			wantFrame{Type: FrameTask, ID: `0`, Data: `1`}},
		{"id negative float exponent", `{"type":"task","id":-12.5e+3,"data":1}`,
			wantFrame{Type: FrameTask, ID: `-12.5e+3`, Data: `1`}},
		{"id max uint64", `{"type":"task","id":18446744073709551615}`,
			wantFrame{Type: FrameTask, ID: `18446744073709551615`}},
		{"id at max length", `{"type":"task","id":` + longID + `}`,
			wantFrame{Type: FrameTask, ID: longID}},

		// missing members
		{"no id", `{"type":"task","data":{"a":1}}`, wantFrame{Type: FrameTask, Data: `{"a":1}`}},
		{"no data", `{"type":"task","id":1}`, wantFrame{Type: FrameTask, ID: `1`}},
		{"type only", `{"type":"task"}`, wantFrame{Type: FrameTask}},
		{"data null is present", `{"type":"task","id":1,"data":null}`,
			wantFrame{Type: FrameTask, ID: `1`, Data: `null`}},

		// layout
		{"member order", `{"data":true,"id":"x","type":"result"}`,
			wantFrame{Type: FrameResult, ID: `"x"`, Data: `true`}},
		{"whitespace everywhere", " \t\r\n{ \"type\" :\t\"task\" ,\n\"id\"\r: 1 , \"data\" : [ 1 , { } , [ ] ] }\n ",
			wantFrame{Type: FrameTask, ID: `1`, Data: `[ 1 , { } , [ ] ]`}},
		{"extra members ignored", `{"x":{"type":"done","id":2},"type":"task","y":[null,false],"id":1}`,
			wantFrame{Type: FrameTask, ID: `1`}},
		{"duplicate members last wins", `{"type":"done","id":1,"data":1,"type":"task","id":2,"data":2}`,
			wantFrame{Type: FrameTask, ID: `2`, Data: `2`}},
		{"duplicate type non-string first", `{"type":1,"type":"task"}`, wantFrame{Type: FrameTask}},

		// data
		{"nested data", `{"type":"task","id":1,"data":{"a":[{"b":{"c":[[[1,-2.5e-3,true,false,null,"}]"]]]}}],"d":{}}}`,
			wantFrame{Type: FrameTask, ID: `1`, Data: `{"a":[{"b":{"c":[[[1,-2.5e-3,true,false,null,"}]"]]]}}],"d":{}}`}},
		{"escapes in data", `{"type":"task","id":1,"data":"q\"b\\s\/b\bf\fn\nr\rt\t\u0000\u00e9\uD83D\uDE00\ud800"}`,
			wantFrame{Type: FrameTask, ID: `1`, Data: `"q\"b\\s\/b\bf\fn\nr\rt\t\u0000\u00e9\uD83D\uDE00\ud800"`}},
		{"raw unicode in data", `{"type":"task","id":1,"data":"héllo 世界 😀 ` + "\u2028\x7f" + `"}`,
			wantFrame{Type: FrameTask, ID: `1`, Data: `"héllo 世界 😀 ` + "\u2028\x7f" + `"`}},
		{"numbers in data", `{"type":"task","data":[0,-0,1.0,1e5,1E-5,-0.0e+0,123456789012345678901234567890]}`,
			wantFrame{Type: FrameTask, Data: `[0,-0,1.0,1e5,1E-5,-0.0e+0,123456789012345678901234567890]`}},
		{"data nested to the limit", `{"type":"task","data":` + nested("[", "1", "]", maxDepth) + `}`,
			wantFrame{Type: FrameTask, Data: nested("[", "1", "]", maxDepth)}},

		// escaped names mean the same as plain ones (RFC 8259 section 7)
		{"escaped member names", `{"\u0074ype":"task","i\u0064":1,"d\u0061ta":2,"\u0065rror":3}`,
			wantFrame{Type: FrameTask, ID: `1`, Data: `2`, Error: `3`}},
		{"escaped type value", `{"type":"t\u0061sk","id":1}`, wantFrame{Type: FrameTask, ID: `1`}},
		{"escaped solidus in type value", `{"type":"\/\u0070ing"}`, wantFrame{TypeName: `\/\u0070ing`}},
		{"long escaped key ignored", `{"\u0074ypeeeeeeeeeeeeeee":"x","type":"done"}`, wantFrame{Type: FrameDone}},

		// unknown types decode, with their name
		{"unknown type", `{"type":"frobnicate","id":1}`, wantFrame{ID: `1`, TypeName: "frobnicate"}},
		{"unknown type case", `{"type":"Task"}`, wantFrame{TypeName: "Task"}},
		{"empty type", `{"type":""}`, wantFrame{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.True(t, json.Valid([]byte(tt.in)), "test input must be valid JSON")
			var f Frame
			require.NoError(t, Decode([]byte(tt.in), &f))
			requireFrame(t, tt.want, &f)
		})
	}
}

func TestDecodeEmptyTypeName(t *testing.T) {
	var f Frame
	require.NoError(t, Decode([]byte(`{"type":""}`), &f))
	require.Equal(t, FrameUnknown, f.Type)
	require.NotNil(t, f.TypeName, "an empty type name is present, not absent")
	require.Empty(t, f.TypeName)
}

func TestDecodeResetsFrame(t *testing.T) {
	var f Frame
	require.NoError(t, Decode([]byte(`{"type":"error","id":1,"data":2,"error":3}`), &f))
	require.NoError(t, Decode([]byte(`{"type":"logout"}`), &f))
	requireFrame(t, wantFrame{Type: FrameLogout}, &f)
	require.Error(t, Decode([]byte(`nope`), &f))
	requireFrame(t, wantFrame{}, &f)
}

func TestDecodeErrors(t *testing.T) {
	tooLongID := `"` + strings.Repeat("x", MaxIDLength-1) + `"`
	tests := []struct {
		name string
		in   string
		want error
	}{
		// not a JSON object
		{"empty", ``, ErrNotJSON},
		{"whitespace", " \n", ErrNotJSON},
		{"array", `[{"type":"task"}]`, ErrNotJSON},
		{"string", `"task"`, ErrNotJSON},
		{"null", `null`, ErrNotJSON},
		{"number", `1`, ErrNotJSON},
		{"open brace", `{`, ErrNotJSON},
		{"unclosed", `{"type":"task"`, ErrNotJSON},
		{"unclosed after comma", `{"type":"task",`, ErrNotJSON},
		{"trailing comma", `{"type":"task",}`, ErrNotJSON},
		{"leading comma", `{,"type":"task"}`, ErrNotJSON},
		{"missing colon", `{"type" "task"}`, ErrNotJSON},
		{"missing value", `{"type":}`, ErrNotJSON},
		{"missing comma", `{"type":"task" "id":1}`, ErrNotJSON},
		{"bare key", `{type:"task"}`, ErrNotJSON},
		{"single quotes", `{'type':'task'}`, ErrNotJSON},
		{"number key", `{1:"task"}`, ErrNotJSON},
		{"comment", `{"type":"task"/* c */}`, ErrNotJSON},
		{"trailing garbage", `{"type":"task"}x`, ErrNotJSON},
		{"two objects", `{"type":"task"}{"type":"task"}`, ErrNotJSON},
		{"trailing comma after object", `{"type":"task"},`, ErrNotJSON},
		{"trailing NUL", "{\"type\":\"task\"}\x00", ErrNotJSON},
		{"BOM", "\ufeff{\"type\":\"task\"}", ErrNotJSON},
		{"vertical tab whitespace", "{\v\"type\":\"task\"}", ErrNotJSON},
		{"NBSP whitespace", "{\u00a0\"type\":\"task\"}", ErrNotJSON},
		{"unclosed data array", `{"type":"task","data":[1,2}`, ErrNotJSON},
		{"unclosed data object", `{"type":"task","data":{"a":1]}`, ErrNotJSON},
		{"array trailing comma", `{"type":"task","data":[1,]}`, ErrNotJSON},
		{"object trailing comma", `{"type":"task","data":{"a":1,}}`, ErrNotJSON},
		{"nested missing colon", `{"type":"task","data":{"a" 1}}`, ErrNotJSON},
		{"nested bare key", `{"type":"task","data":{a:1}}`, ErrNotJSON},
		// numbers
		{"leading zero", `{"type":"task","id":01}`, ErrNotJSON},
		{"negative leading zero", `{"type":"task","id":-01}`, ErrNotJSON},
		{"lone minus", `{"type":"task","id":-}`, ErrNotJSON},
		{"plus sign", `{"type":"task","id":+1}`, ErrNotJSON},
		{"leading dot", `{"type":"task","id":.5}`, ErrNotJSON},
		{"trailing dot", `{"type":"task","id":1.}`, ErrNotJSON},
		{"empty exponent", `{"type":"task","id":1e}`, ErrNotJSON},
		{"signed empty exponent", `{"type":"task","id":1e+}`, ErrNotJSON},
		{"hex", `{"type":"task","id":0x10}`, ErrNotJSON},
		{"NaN", `{"type":"task","data":NaN}`, ErrNotJSON},
		{"Infinity", `{"type":"task","data":-Infinity}`, ErrNotJSON},
		// literals
		{"short true", `{"type":"task","data":tru}`, ErrNotJSON},
		{"short null at end", `{"type":"task","data":nul`, ErrNotJSON},
		{"capital literal", `{"type":"task","data":True}`, ErrNotJSON},
		{"literal with suffix", `{"type":"task","data":nullx}`, ErrNotJSON},
		// strings
		{"unterminated string", `{"type":"task`, ErrNotJSON},
		{"unterminated escape", `{"type":"task\`, ErrNotJSON},
		{"raw newline in string", "{\"type\":\"ta\nsk\"}", ErrNotJSON},
		{"raw NUL in string", "{\"type\":\"ta\x00sk\"}", ErrNotJSON},
		{"raw control in key", "{\"ty\x1fpe\":\"task\"}", ErrNotJSON},
		{"bad escape", `{"type":"task","data":"\x41"}`, ErrNotJSON},
		{"escaped single quote", `{"type":"task","data":"\'"}`, ErrNotJSON},
		{"short unicode escape", `{"type":"task","data":"\u12"}`, ErrNotJSON},
		{"short unicode escape at end", `{"type":"task","data":"\u12`, ErrNotJSON},
		{"non-hex unicode escape", `{"type":"task","data":"\u12g4"}`, ErrNotJSON},
		{"invalid UTF-8 outside string", "{\"type\":\"task\",\xff}", ErrNotJSON},

		// no type
		{"empty object", `{}`, ErrNoType},
		{"no type member", `{"id":1,"data":2}`, ErrNoType},
		{"type number", `{"type":1}`, ErrNoType},
		{"type null", `{"type":null}`, ErrNoType},
		{"type array", `{"type":["task"]}`, ErrNoType},
		{"type object", `{"type":{"type":"task"}}`, ErrNoType},
		{"type only nested", `{"data":{"type":"task"}}`, ErrNoType},
		{"duplicate type non-string last", `{"type":"task","type":false}`, ErrNoType},
		{"key differs by case", `{"Type":"task"}`, ErrNoType},

		// bad ids
		{"id object", `{"type":"task","id":{"a":1}}`, ErrBadID},
		{"id array", `{"type":"task","id":[1]}`, ErrBadID},
		{"id true", `{"type":"task","id":true}`, ErrBadID},
		{"id false", `{"type":"task","id":false}`, ErrBadID},
		{"id string too long", `{"type":"task","id":` + tooLongID + `}`, ErrBadID},
		{"id number too long", `{"type":"task","id":` + strings.Repeat("9", MaxIDLength+1) + `}`, ErrBadID},

		// invalid UTF-8 inside strings
		{"invalid byte in data", "{\"type\":\"task\",\"data\":\"a\xffb\"}", ErrInvalidUTF8},
		{"invalid byte in key", "{\"type\":\"task\",\"\xfe\":1}", ErrInvalidUTF8},
		{"invalid byte in id", "{\"type\":\"task\",\"id\":\"\xc3\"}", ErrInvalidUTF8},
		{"invalid byte in type", "{\"type\":\"ta\x80sk\"}", ErrInvalidUTF8},
		{"UTF-8 encoded surrogate", "{\"type\":\"task\",\"data\":\"\xed\xa0\x80\"}", ErrInvalidUTF8},
		{"overlong encoding", "{\"type\":\"task\",\"data\":\"\xc0\xaf\"}", ErrInvalidUTF8},
		{"truncated sequence", "{\"type\":\"task\",\"data\":\"\xe2\x82\"}", ErrInvalidUTF8},
		{"beyond U+10FFFF", "{\"type\":\"task\",\"data\":\"\xf4\x90\x80\x80\"}", ErrInvalidUTF8},

		// nesting
		{"arrays beyond the limit", `{"type":"task","data":` + nested("[", "1", "]", maxDepth+1) + `}`, ErrNotJSON},
		{"objects beyond the limit", `{"type":"task","data":` + nested(`{"a":`, "1", "}", maxDepth+1) + `}`, ErrNotJSON},
		{"very deep arrays", `{"type":"task","data":` + nested("[", "", "]", 1<<20) + `}`, ErrNotJSON},
		{"very deep unclosed", `{"type":"task","data":` + strings.Repeat(`[{"a":`, 1<<19), ErrNotJSON},
		{"deep in an ignored member", `{"x":` + nested("[", "", "]", 10000) + `,"type":"task"}`, ErrNotJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f Frame
			err := Decode([]byte(tt.in), &f)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

// mustUnmarshal decodes b with encoding/json, numbers kept exact.
func mustUnmarshal(t testing.TB, b []byte) map[string]any {
	t.Helper()
	require.True(t, json.Valid(b), "not valid JSON: %s", b)
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	require.NoError(t, d.Decode(&m), "%s", b)
	return m
}

func TestAppendFrames(t *testing.T) {
	const tricky = "a\"b\\c\n\t\x00\x1f<>&\u2028 é 😀"
	tests := []struct {
		name string
		out  []byte
		// want is what encoding/json makes of out.
		want map[string]any
		// decoded is what Decode makes of out; nil when Decode must reject it.
		decoded *wantFrame
	}{
		{"task", AppendTask(nil, []byte(`"t-1"`), []byte(`{"op":"extrude","d":[1,2.5]}`)),
			map[string]any{"type": "task", "id": "t-1", "data": map[string]any{"op": "extrude", "d": []any{json.Number("1"), json.Number("2.5")}}},
			&wantFrame{Type: FrameTask, ID: `"t-1"`, Data: `{"op":"extrude","d":[1,2.5]}`}},
		{"task numeric id, no data", AppendTask(nil, []byte(`42`), nil),
			map[string]any{"type": "task", "id": json.Number("42"), "data": nil},
			&wantFrame{Type: FrameTask, ID: `42`, Data: `null`}},
		{"task nil id", AppendTask(nil, nil, []byte(`1`)),
			map[string]any{"type": "task", "id": nil, "data": json.Number("1")},
			&wantFrame{Type: FrameTask, Data: `1`}},
		{"task seq", AppendTaskSeq(nil, 7, []byte(`"x"`)),
			map[string]any{"type": "task", "id": json.Number("7"), "data": "x"},
			&wantFrame{Type: FrameTask, ID: `7`, Data: `"x"`}},
		{"task seq max", AppendTaskSeq(nil, math.MaxUint64, nil),
			map[string]any{"type": "task", "id": json.Number("18446744073709551615"), "data": nil},
			&wantFrame{Type: FrameTask, ID: `18446744073709551615`, Data: `null`}},
		{"result", AppendResult(nil, []byte(`"r\"1"`), []byte(`[true,null]`)),
			map[string]any{"type": "result", "id": `r"1`, "data": []any{true, nil}},
			&wantFrame{Type: FrameResult, ID: `"r\"1"`, Data: `[true,null]`}},
		{"result no data", AppendResult(nil, []byte(`1`), nil),
			map[string]any{"type": "result", "id": json.Number("1"), "data": nil},
			&wantFrame{Type: FrameResult, ID: `1`, Data: `null`}},
		{"result nil id", AppendResult(nil, nil, []byte(`1`)),
			map[string]any{"type": "result", "id": nil, "data": json.Number("1")},
			&wantFrame{Type: FrameResult, Data: `1`}},
		{"result seq", AppendResultSeq(nil, 0, []byte(`{}`)),
			map[string]any{"type": "result", "id": json.Number("0"), "data": map[string]any{}},
			&wantFrame{Type: FrameResult, ID: `0`, Data: `{}`}},
		{"done", AppendDone(nil, []byte(`"d"`)),
			map[string]any{"type": "done", "id": "d"},
			&wantFrame{Type: FrameDone, ID: `"d"`}},
		{"done nil id", AppendDone(nil, nil),
			map[string]any{"type": "done", "id": nil},
			&wantFrame{Type: FrameDone}},
		{"done seq", AppendDoneSeq(nil, 99),
			map[string]any{"type": "done", "id": json.Number("99")},
			&wantFrame{Type: FrameDone, ID: `99`}},
		{"error", AppendError(nil, []byte(`"e"`), CodeTimeout, tricky),
			map[string]any{"type": "error", "id": "e", "error": map[string]any{"code": "timeout", "message": tricky}},
			&wantFrame{Type: FrameError, ID: `"e"`, Error: `{"code":"timeout","message":` + string(AppendString(nil, tricky)) + `}`}},
		{"error nil id", AppendError(nil, nil, CodeBadRequest, "no id"),
			map[string]any{"type": "error", "id": nil, "error": map[string]any{"code": "bad_request", "message": "no id"}},
			&wantFrame{Type: FrameError, Error: `{"code":"bad_request","message":"no id"}`}},
		{"error seq", AppendErrorSeq(nil, 12, CodeInstanceLost, ""),
			map[string]any{"type": "error", "id": json.Number("12"), "error": map[string]any{"code": "instance_lost", "message": ""}},
			&wantFrame{Type: FrameError, ID: `12`, Error: `{"code":"instance_lost","message":""}`}},
		{"welcome", AppendWelcome(nil, "s-1", "i<1>", "tok&en"),
			map[string]any{"type": "welcome", "session": "s-1", "instance": "i<1>", "resume": "tok&en"},
			&wantFrame{Type: FrameWelcome}},
		{"queued", AppendQueued(nil, 3),
			map[string]any{"type": "queued", "position": json.Number("3")},
			&wantFrame{Type: FrameQueued}},
		{"queued large", AppendQueued(nil, math.MaxInt64),
			map[string]any{"type": "queued", "position": json.Number(strconv.FormatInt(math.MaxInt64, 10))},
			&wantFrame{Type: FrameQueued}},
		{"event", AppendEvent(nil, "instance_lost"),
			map[string]any{"type": "event", "event": "instance_lost"},
			&wantFrame{Type: FrameEvent}},
		{"event with members", AppendEvent(nil, "draining", "farm", "f\"1", "in", tricky),
			map[string]any{"type": "event", "event": "draining", "farm": `f"1`, "in": tricky},
			&wantFrame{Type: FrameEvent}},
		{"event odd members", AppendEvent(nil, "x", "a", "1", "dangling"),
			map[string]any{"type": "event", "event": "x", "a": "1"},
			&wantFrame{Type: FrameEvent}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, mustUnmarshal(t, tt.out))

			// A null id is how the server says "no id": it decodes as none.
			var f Frame
			require.NoError(t, Decode(tt.out, &f))
			requireFrame(t, *tt.decoded, &f)
		})
	}
}

func TestAppendKeepsPrefixAndDoesNotAllocate(t *testing.T) {
	id, data := []byte(`"id"`), []byte(`{"k":[1,2,3]}`)
	encoders := map[string]func(dst []byte) []byte{
		"task":       func(dst []byte) []byte { return AppendTask(dst, id, data) },
		"task seq":   func(dst []byte) []byte { return AppendTaskSeq(dst, 1<<40, data) },
		"result":     func(dst []byte) []byte { return AppendResult(dst, id, data) },
		"result seq": func(dst []byte) []byte { return AppendResultSeq(dst, 1, data) },
		"done":       func(dst []byte) []byte { return AppendDone(dst, id) },
		"done seq":   func(dst []byte) []byte { return AppendDoneSeq(dst, 1) },
		"error":      func(dst []byte) []byte { return AppendError(dst, id, CodeTimeout, "too <slow>") },
		"error seq":  func(dst []byte) []byte { return AppendErrorSeq(dst, 1, CodeTimeout, "too slow") },
		"welcome":    func(dst []byte) []byte { return AppendWelcome(dst, "s", "i", "r") },
		"queued":     func(dst []byte) []byte { return AppendQueued(dst, 1) },
		"event":      func(dst []byte) []byte { return AppendEvent(dst, "draining", "farm", "f1") },
		"string":     func(dst []byte) []byte { return AppendString(dst, "a\x00\xff<") },
	}
	for name, enc := range encoders {
		t.Run(name, func(t *testing.T) {
			out := enc([]byte("prefix"))
			require.True(t, bytes.HasPrefix(out, []byte("prefix")))
			require.True(t, json.Valid(out[len("prefix"):]), "%s", out)

			buf := make([]byte, 0, 256)
			allocs := testing.AllocsPerRun(100, func() { buf = enc(buf[:0]) })
			require.Zero(t, allocs)
		})
	}
}

// trickyStrings are strings whose JSON encoding is easy to get wrong.
var trickyStrings = []string{
	"",
	"plain",
	`"`, `\`, `/`, `\"`, `\\u0041`,
	"\b\f\n\r\t",
	"\x00", "\x01\x02\x1e\x1f", "\x7f",
	"<script>&amp;</script>",
	"\u2028\u2029",
	"é", "世界", "😀", "\U0010FFFF", "\ufffd", "\ufeff",
	"\xff", "a\xffb", "\xfe\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf4\x90\x80\x80",
	"é\xe9", "😀\xf0\x9f\x98",
	strings.Repeat("a\"\\\n<\u00e9\x80", 100),
}

func TestAppendString(t *testing.T) {
	for _, s := range trickyStrings {
		t.Run(strconv.Quote(s), func(t *testing.T) {
			checkAppendString(t, s)
		})
	}
}

func TestAppendStringAllBytePairs(t *testing.T) {
	b := make([]byte, 2)
	for i := range 1 << 16 {
		b[0], b[1] = byte(i>>8), byte(i)
		checkAppendString(t, string(b))
	}
	for i := range 256 {
		checkAppendString(t, "x"+string(rune(i))+"x")
	}
}

// checkAppendString checks that AppendString(s) decodes, with encoding/json,
// to what encoding/json's own encoding of s decodes to: s itself when s is
// valid UTF-8, else s with each invalid byte replaced by U+FFFD. It also
// checks that the output is safe to embed in HTML, as encoding/json's is.
func checkAppendString(t *testing.T, s string) {
	t.Helper()
	out := AppendString(nil, s)
	if !json.Valid(out) {
		t.Fatalf("AppendString(%q) = %s: not valid JSON", s, out)
	}
	var got string
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("AppendString(%q) = %s: %v", s, out, err)
	}
	ref, err := json.Marshal(s)
	require.NoError(t, err)
	var want string
	require.NoError(t, json.Unmarshal(ref, &want))
	if got != want {
		t.Fatalf("AppendString(%q) = %s decodes to %q, encoding/json's %s to %q", s, out, got, ref, want)
	}
	if utf8.ValidString(s) && got != s {
		t.Fatalf("AppendString(%q) = %s decodes to %q", s, out, got)
	}
	if !utf8.Valid(out) {
		t.Fatalf("AppendString(%q) = %q: not valid UTF-8", s, out)
	}
	if bytes.ContainsAny(out[1:len(out)-1], "<>&") {
		t.Fatalf("AppendString(%q) = %s: not HTML safe", s, out)
	}
}

func TestFrameTypeString(t *testing.T) {
	for ft := FrameUnknown; ft <= FramePong; ft++ {
		name := ft.String()
		if ft == FrameUnknown {
			require.Equal(t, "unknown", name)
			continue
		}
		require.Equal(t, ft, lookupType([]byte(name)), "String and Decode disagree on %d", ft)
	}
	require.Equal(t, "unknown", FrameType(200).String())
}
