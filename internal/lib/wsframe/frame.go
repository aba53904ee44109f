// Package wsframe reads and writes WebSocket frames (RFC 6455) on a
// connection whose opening handshake is done. It carries drover's hot
// paths: the manager's client and instance connections and the reference
// worker.
//
// gorilla/websocket still answers the handshakes (Upgrader); Dial opens
// client connections. After that drover frames messages itself because
// gorilla writes one frame per syscall and allocates per message read,
// while a task round trip is a handful of small frames: a Writer gathers
// frames into one write, a Reader parses frames out of a buffer and tells
// whether more input is buffered, and neither allocates per message.
package wsframe

import (
	"encoding/binary"
	"strings"
)

// Opcodes.
const (
	OpContinuation byte = 0x0
	OpText         byte = 0x1
	OpBinary       byte = 0x2
	OpClose        byte = 0x8
	OpPing         byte = 0x9
	OpPong         byte = 0xA
)

// Close codes used here; the others pass through as plain numbers.
const (
	CloseGoingAway     = 1001
	CloseProtocolError = 1002
	CloseNoStatus      = 1005
	CloseMessageTooBig = 1009
)

const (
	finBit  = 0x80
	rsvBits = 0x70
	maskBit = 0x80
	// MaxHeader is the longest frame header: two bytes, a 64-bit length
	// and a masking key.
	MaxHeader = 14
	// maxControl is the largest payload of a control frame.
	maxControl = 125
)

// AppendHeader appends the header of a final frame of opcode op with an
// n-byte payload. Frames from a client must be masked: key is their
// masking key; a server passes nil.
func AppendHeader(b []byte, op byte, n int, key *[4]byte) []byte {
	var m byte
	if key != nil {
		m = maskBit
	}
	switch {
	case n < 126:
		b = append(b, finBit|op, m|byte(n))
	case n <= 0xffff:
		b = append(b, finBit|op, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, finBit|op, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if key != nil {
		b = append(b, key[:]...)
	}
	return b
}

// AppendFrame appends a final frame carrying payload, masked with key
// unless key is nil.
func AppendFrame(b []byte, op byte, payload []byte, key *[4]byte) []byte {
	b = AppendHeader(b, op, len(payload), key)
	start := len(b)
	b = append(b, payload...)
	if key != nil {
		Mask(*key, b[start:])
	}
	return b
}

// Begin reserves room for a frame header at the end of b and returns where
// the frame starts. Append the payload to the result, then call End: a
// frame is built in place without knowing its length first.
func Begin(b []byte) ([]byte, int) {
	var room [MaxHeader]byte
	return append(b, room[:]...), len(b)
}

// End finishes the frame begun at start: it writes the header, moves the
// payload up against it and masks it with key unless key is nil.
func End(b []byte, start int, op byte, key *[4]byte) []byte {
	n := len(b) - start - MaxHeader
	var h [MaxHeader]byte
	hdr := AppendHeader(h[:0], op, n, key)
	copy(b[start+len(hdr):], b[start+MaxHeader:])
	copy(b[start:], hdr)
	b = b[:start+len(hdr)+n]
	if key != nil {
		Mask(*key, b[start+len(hdr):])
	}
	return b
}

// Mask XORs b with the masking key, key[0] applying to b[0]; masking twice
// unmasks.
func Mask(key [4]byte, b []byte) {
	k := uint64(binary.LittleEndian.Uint32(key[:]))
	k |= k << 32
	for len(b) >= 8 {
		binary.LittleEndian.PutUint64(b, binary.LittleEndian.Uint64(b)^k)
		b = b[8:]
	}
	// A multiple of 8 bytes is done, so the key starts over at b[0].
	for i := range b {
		b[i] ^= key[i&3]
	}
}

// ClosePayload appends the payload of a close frame: the code and a reason,
// or nothing for CloseNoStatus, which must not be sent.
func ClosePayload(b []byte, code int, reason string) []byte {
	if code == CloseNoStatus {
		return b
	}
	if len(reason) > maxControl-2 {
		// Cut on a character boundary: the reason must be UTF-8.
		reason = strings.ToValidUTF8(reason[:maxControl-2], "")
	}
	b = binary.BigEndian.AppendUint16(b, uint16(code))
	return append(b, reason...)
}
