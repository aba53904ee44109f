package wsframe

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"unicode/utf8"

	"github.com/stretchr/testify/require"
)

// refMessage is a message as the reference parser sees it.
type refMessage struct {
	op      byte
	payload []byte
}

// refParse is a second, deliberately plain reading of RFC 6455 over a
// whole input: the oracle for FuzzReader. It returns the messages, the
// payloads of the pings, and how the input ends: "limit", "protocol",
// "close" or "eof".
func refParse(in []byte, fromClient bool, limit int) (msgs []refMessage, pings [][]byte, end string) {
	var cur *refMessage
	for {
		if len(in) < 2 {
			return msgs, pings, "eof"
		}
		b0, b1 := in[0], in[1]
		fin, op, masked := b0&0x80 != 0, b0&0xf, b1&0x80 != 0
		if b0&0x70 != 0 || (op >= 3 && op <= 7) || op > 10 || masked != fromClient {
			return msgs, pings, "protocol"
		}
		pos, n := 2, uint64(b1&0x7f)
		switch n {
		case 126:
			if len(in) < 4 {
				return msgs, pings, "eof"
			}
			n, pos = uint64(binary.BigEndian.Uint16(in[2:])), 4
		case 127:
			if len(in) < 10 {
				return msgs, pings, "eof"
			}
			n, pos = binary.BigEndian.Uint64(in[2:]), 10
			if n>>63 != 0 {
				return msgs, pings, "protocol"
			}
		}
		var key []byte
		if masked {
			if len(in) < pos+4 {
				return msgs, pings, "eof"
			}
			key, pos = in[pos:pos+4], pos+4
		}
		control := op >= 8
		if control && (!fin || n > 125) {
			return msgs, pings, "protocol"
		}
		if !control {
			if op == 0 && cur == nil || op != 0 && cur != nil {
				return msgs, pings, "protocol"
			}
			have := 0
			if cur != nil {
				have = len(cur.payload)
			}
			if limit > 0 && uint64(have)+n > uint64(limit) {
				return msgs, pings, "limit"
			}
		}
		if uint64(len(in)-pos) < n {
			return msgs, pings, "eof"
		}
		p := bytes.Clone(in[pos : pos+int(n)])
		for i := range p {
			if key != nil {
				p[i] ^= key[i%4]
			}
		}
		in = in[pos+int(n):]
		switch op {
		case 9:
			pings = append(pings, p)
		case 10:
		case 8:
			if len(p) >= 2 {
				code := int(binary.BigEndian.Uint16(p))
				valid := code >= 1000 && code <= 1003 || code >= 1007 && code <= 1013 || code >= 3000 && code <= 4999
				if !valid || !utf8.Valid(p[2:]) {
					return msgs, pings, "protocol"
				}
			}
			return msgs, pings, "close"
		case 0:
			cur.payload = append(cur.payload, p...)
		default:
			cur = &refMessage{op: op, payload: p}
		}
		if !control && fin {
			msgs = append(msgs, *cur)
			cur = nil
		}
	}
}

// FuzzReader checks the Reader, which parses what instances and clients
// send, against refParse: the same messages, pings and ending, and no
// panic or message over the limit on any input.
func FuzzReader(f *testing.F) {
	key := &[4]byte{1, 2, 3, 4}
	f.Add(AppendFrame(nil, OpText, []byte(`{"type":"done","id":1}`), nil), false)
	f.Add(AppendFrame(nil, OpText, []byte(`{"type":"task","id":1}`), key), true)
	f.Add(append(frame(OpBinary, []byte("ab"), false), frame(finBit|OpContinuation, []byte("cd"), false)...), false)
	f.Add(append(frame(finBit|OpPing, []byte("p"), false), frame(finBit|OpClose, ClosePayload(nil, 1000, "x"), false)...), false)
	f.Add(AppendFrame(nil, OpBinary, make([]byte, 300), nil), false)
	f.Add([]byte{0x82, 0x7f, 0, 0, 0, 0, 0, 0, 1, 0}, false)
	f.Fuzz(func(t *testing.T, in []byte, fromClient bool) {
		const limit = 256
		wantMsgs, wantPings, wantEnd := refParse(in, fromClient, limit)
		r := reader(in, fromClient, limit)
		// Half the inputs are read with Controls: the same messages and
		// pings come out, with the control frames between them returned.
		r.Controls = len(in)%2 == 1
		var pings [][]byte
		r.Ping = func(p []byte) { pings = append(pings, bytes.Clone(p)) }
		var msgs []refMessage
		var err error
		for {
			var op byte
			var msg []byte
			op, msg, err = r.Next(nil)
			if err != nil {
				break
			}
			if op >= OpClose {
				require.True(t, r.Controls, "a control frame returned without Controls")
				require.Empty(t, msg)
				continue
			}
			require.LessOrEqual(t, len(msg), limit)
			msgs = append(msgs, refMessage{op: op, payload: msg})
		}
		require.Equal(t, len(wantMsgs), len(msgs))
		for i := range msgs {
			require.Equal(t, wantMsgs[i].op, msgs[i].op)
			require.Equal(t, string(wantMsgs[i].payload), string(msgs[i].payload))
		}
		require.Equal(t, len(wantPings), len(pings))
		for i := range pings {
			require.Equal(t, string(wantPings[i]), string(pings[i]))
		}
		var (
			pe *ProtocolError
			ce *CloseError
		)
		switch wantEnd {
		case "protocol":
			require.ErrorAs(t, err, &pe)
		case "close":
			require.ErrorAs(t, err, &ce)
		case "limit":
			require.ErrorIs(t, err, ErrReadLimit)
		case "eof":
			require.True(t, errors.Is(err, io.ErrUnexpectedEOF), "err %v", err)
		}
	})
}

// FuzzRoundTrip writes a payload as frames built both ways and reads it
// back.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("hello"), true, uint8(3))
	f.Add(make([]byte, 70_000), false, uint8(0))
	f.Fuzz(func(t *testing.T, p []byte, masked bool, parts uint8) {
		var key *[4]byte
		if masked {
			key = &[4]byte{0xde, 0xad, 0xbe, 0xef}
		}
		// Fragment p into parts+1 frames.
		var in []byte
		n := int(parts) + 1
		for i := range n {
			chunk := p[i*len(p)/n : (i+1)*len(p)/n]
			b, start := Begin(in)
			in = End(append(b, chunk...), start, OpBinary, key)
			b0 := byte(OpContinuation)
			if i == 0 {
				b0 = OpBinary
			}
			if i == n-1 {
				b0 |= finBit
			}
			in[start] = b0
		}
		op, msg, err := reader(in, masked, 0).Next(nil)
		require.NoError(t, err)
		require.Equal(t, OpBinary, op)
		require.Equal(t, string(p), string(msg))
	})
}
