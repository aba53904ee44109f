package proxy

import (
	"encoding/binary"
	"math/rand/v2"
	"unicode/utf8"
)

// maxCloseReason is the longest close reason a frame can carry: a control
// frame payload holds at most 125 bytes, two of them the code.
const maxCloseReason = 123

// maxCloseFrame is the size of the largest frame appendCloseFrame writes.
const maxCloseFrame = 2 + 4 + 2 + maxCloseReason

// appendCloseFrame appends a WebSocket close frame (RFC 6455 §5.5.1) with code
// and reason to dst. A reason too long for a control frame is cut at a rune
// boundary, so valid UTF-8 stays valid. With masked the payload is masked with
// key, as every frame from a client must be; frames from a server never are.
func appendCloseFrame(dst []byte, code uint16, reason string, masked bool, key [4]byte) []byte {
	reason = truncateUTF8(reason, maxCloseReason)
	n := byte(2 + len(reason))
	if masked {
		dst = append(dst, 0x88, 0x80|n)
		dst = append(dst, key[:]...)
	} else {
		dst = append(dst, 0x88, n)
	}
	start := len(dst)
	dst = binary.BigEndian.AppendUint16(dst, code)
	dst = append(dst, reason...)
	if masked {
		payload := dst[start:]
		for i := range payload {
			payload[i] ^= key[i&3]
		}
	}
	return dst
}

// newMaskKey returns a masking key. The global source of math/rand/v2 is
// seeded unpredictably (ChaCha8), which is what RFC 6455 §5.3 asks of it.
func newMaskKey() [4]byte {
	var k [4]byte
	binary.LittleEndian.PutUint32(k[:], rand.Uint32())
	return k
}

// truncateUTF8 cuts s to at most n bytes without splitting a rune.
func truncateUTF8(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}
