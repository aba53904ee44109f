package farm

import (
	"bytes"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzDialMessages feeds what a dial instance sends, one message per line,
// to the farm's parser and its side of the handshake. The seeds in
// testdata/fuzz/FuzzDialMessages are conversations in ClassCAD's order
// (the instance answers the farm's configuration with Handshake, then
// Ready, then Results), the early order (the same messages, sent before
// the configuration arrived) and broken ones.
//
// It checks that any JSON object parses and nothing else does; that the
// handshake is over only after a Handshake naming an id came first and a
// Ready came after it; that a message with an error, or a first message
// that is no Handshake, fails it; and that no input panics.
func FuzzDialMessages(f *testing.F) {
	f.Add([]byte(`{"response":"Handshake","id":"5f0c"}` + "\n" + `{"response":"Ready"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		var (
			h       dialHello
			failed  bool
			readyAt = -1
		)
		for i, msg := range bytes.Split(in, []byte("\n")) {
			m, err := parseDialMsg(msg)
			start := bytes.TrimLeft(msg, " \t\r\n")
			object := json.Valid(msg) && len(start) > 0 && start[0] == '{'
			require.Equal(t, object, err == nil, "message %q: %v", msg, err)
			if err != nil {
				// During the handshake a bad message fails it, as
				// readDialMsg's error does.
				failed = failed || !h.ready
				continue
			}
			if isError(m.Error) {
				require.NotEmpty(t, errorText(m.Error), "an error has a text")
			}
			if failed || h.ready {
				continue
			}
			wasShook := h.shook
			err = h.next(m)
			switch {
			case isError(m.Error):
				require.Error(t, err, "message %q carries an error", msg)
			case !wasShook && (m.Response != "Handshake" || m.ID == ""):
				require.Error(t, err, "the first message %q is no Handshake with an id", msg)
			default:
				require.NoError(t, err, "message %q", msg)
			}
			if err != nil {
				failed = true
				continue
			}
			if !wasShook {
				require.True(t, h.shook)
				require.Zero(t, i, "only the first message is the Handshake")
				require.Equal(t, m.ID, h.id)
			}
			if h.ready {
				require.True(t, wasShook, "Ready after the Handshake only")
				require.Equal(t, "Ready", m.Response)
				readyAt = i
			}
		}
		if h.ready {
			require.True(t, h.shook)
			require.NotEmpty(t, h.id)
			require.Positive(t, readyAt)
		}
	})
}

// FuzzDialReplyFields builds replies as an instance's JSON library would
// and checks that the parser reads their members back as encoding/json
// does: the shortcut for plain strings must not change what they say.
func FuzzDialReplyFields(f *testing.F) {
	f.Add("EndFrame", "Handshake", "5f0c-41", uint64(7))
	f.Add("a\"b\\c", "<Ready>", "\xff", uint64(0))
	f.Fuzz(func(t *testing.T, from, response, id string, tx uint64) {
		msg, err := json.Marshal(map[string]any{"command": "Result", "from": from, "response": response,
			"id": id, "transactionID": tx, "result": []int{1}})
		require.NoError(t, err)
		var want struct{ From, Response, ID string }
		require.NoError(t, json.Unmarshal(msg, &want))
		m, err := parseDialMsg(msg)
		require.NoError(t, err)
		require.Equal(t, want.From, m.From)
		require.Equal(t, want.Response, m.Response)
		require.Equal(t, want.ID, m.ID)
		require.Equal(t, strconv.FormatUint(tx, 10), rawString(m.TransactionID))
		require.False(t, isError(m.Error))
	})
}
