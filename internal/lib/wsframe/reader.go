package wsframe

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"slices"
	"strconv"
	"unicode/utf8"
)

// ErrReadLimit is returned by Next for a message longer than the limit;
// answer it with a close frame of code 1009.
var ErrReadLimit = errors.New("wsframe: message exceeds the read limit")

// CloseError is the close frame that ended the peer's stream. Code is
// CloseNoStatus when the frame carried none.
type CloseError struct {
	Code int
	Text string
}

func (e *CloseError) Error() string {
	return "wsframe: close " + strconv.Itoa(e.Code) + " " + e.Text
}

// ProtocolError is a frame that breaks RFC 6455; answer it with a close
// frame of code CloseProtocolError and Reason.
type ProtocolError struct{ Reason string }

func (e *ProtocolError) Error() string { return "wsframe: protocol error: " + e.Reason }

func protocolError(reason string) error { return &ProtocolError{Reason: reason} }

// Reader reads the messages of one connection. It is not safe for
// concurrent use.
type Reader struct {
	// R buffers the connection; it must hold at least MaxHeader bytes,
	// which every bufio.Reader does. R.Buffered tells whether more input is
	// at hand without a syscall.
	R *bufio.Reader
	// FromClient is set when the peer is a client, whose frames must be
	// masked; a server's frames must not be.
	FromClient bool
	// Limit bounds the payload of a message; 0 means no limit.
	Limit int64
	// Ping, when set, is called with the payload of each ping frame, which
	// it should answer with a pong. The payload is valid during the call.
	Ping func(payload []byte)
	// Controls, when set, makes Next return after a control frame that
	// came between messages (a ping or a pong), with its opcode and buf
	// as it was: a reader that waits for input with a deadline then
	// meets the deadline only between frames. A close frame still ends
	// the stream with a *CloseError.
	Controls bool

	ctrl [maxControl]byte
}

type header struct {
	op     byte
	fin    bool
	masked bool
	key    [4]byte
	n      uint64
}

// Next reads the next text or binary message, appending its payload to buf,
// and returns its opcode and the extended buf. Ping frames go to Ping, pong
// frames are dropped, a close frame ends the stream with a *CloseError.
// Other errors are ErrReadLimit, a *ProtocolError, io.ErrUnexpectedEOF
// when the connection ends without a close frame, and the connection's
// own errors.
func (r *Reader) Next(buf []byte) (op byte, msg []byte, err error) {
	start := len(buf)
	for {
		h, err := r.header()
		if err != nil {
			return op, buf, err
		}
		switch {
		case h.op >= OpClose:
			if err := r.control(&h); err != nil {
				return op, buf, err
			}
			if r.Controls && op == 0 {
				return h.op, buf, nil
			}
			continue
		case h.op == OpContinuation:
			if op == 0 {
				return op, buf, protocolError("continuation after FIN")
			}
		default:
			if op != 0 {
				return op, buf, protocolError("data before FIN")
			}
			op = h.op
		}
		size := uint64(len(buf) - start)
		if h.n > math.MaxInt-uint64(len(buf)) || r.Limit > 0 && size+h.n > uint64(r.Limit) {
			return op, buf, ErrReadLimit
		}
		n := int(h.n)
		buf = slices.Grow(buf, n)
		p := buf[len(buf) : len(buf)+n]
		if _, err := io.ReadFull(r.R, p); err != nil {
			return op, buf, unexpected(err)
		}
		if h.masked {
			Mask(h.key, p)
		}
		buf = buf[:len(buf)+n]
		if h.fin {
			return op, buf, nil
		}
	}
}

// Whole reports whether the next frame is in R's buffer, header and
// payload, and ends what Next reads: a data frame with FIN set, a close
// frame, or a ping or pong when Controls is set. Next then returns it
// without reading from the connection, so a read deadline cannot cut it
// short.
func (r *Reader) Whole() bool {
	p, _ := r.R.Peek(r.R.Buffered())
	if len(p) < 2 {
		return false
	}
	op := p[0] & 0x0f
	switch {
	case p[0]&finBit == 0, op == OpContinuation:
		return false
	case op > OpClose && !r.Controls:
		return false
	}
	size := 2
	n := uint64(p[1] & 0x7f)
	switch n {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if p[1]&maskBit != 0 {
		size += 4
	}
	if len(p) < size {
		return false
	}
	switch n {
	case 126:
		n = uint64(binary.BigEndian.Uint16(p[2:]))
	case 127:
		n = binary.BigEndian.Uint64(p[2:])
	}
	return n <= uint64(len(p)-size)
}

// header reads and checks a frame header.
func (r *Reader) header() (header, error) {
	var h header
	p, err := r.R.Peek(2)
	if err != nil {
		return h, unexpected(err)
	}
	h.fin = p[0]&finBit != 0
	h.op = p[0] & 0x0f
	h.masked = p[1]&maskBit != 0
	switch {
	case p[0]&rsvBits != 0:
		return h, protocolError("RSV bits set")
	case h.op > OpBinary && h.op < OpClose || h.op > OpPong:
		return h, protocolError("bad opcode " + strconv.Itoa(int(h.op)))
	case h.masked != r.FromClient:
		return h, protocolError("bad MASK")
	}
	size := 2
	switch p[1] & 0x7f {
	case 126:
		size += 2
	case 127:
		size += 8
	}
	if p, err = r.R.Peek(size); err != nil {
		return h, unexpected(err)
	}
	switch h.n = uint64(p[1] & 0x7f); h.n {
	case 126:
		h.n = uint64(binary.BigEndian.Uint16(p[2:]))
	case 127:
		h.n = binary.BigEndian.Uint64(p[2:])
		if h.n>>63 != 0 {
			return h, protocolError("bad frame length")
		}
	}
	if h.masked {
		if p, err = r.R.Peek(size + 4); err != nil {
			return h, unexpected(err)
		}
		copy(h.key[:], p[size:])
		size += 4
	}
	_, _ = r.R.Discard(size)
	return h, nil
}

// control reads and handles a control frame.
func (r *Reader) control(h *header) error {
	if !h.fin || h.n > maxControl {
		return protocolError("bad control frame")
	}
	p := r.ctrl[:h.n]
	if _, err := io.ReadFull(r.R, p); err != nil {
		return unexpected(err)
	}
	if h.masked {
		Mask(h.key, p)
	}
	switch h.op {
	case OpPing:
		if r.Ping != nil {
			r.Ping(p)
		}
	case OpClose:
		ce := &CloseError{Code: CloseNoStatus}
		if len(p) >= 2 {
			ce.Code = int(binary.BigEndian.Uint16(p))
			if !validCloseCode(ce.Code) {
				return protocolError("bad close code " + strconv.Itoa(ce.Code))
			}
			if !utf8.Valid(p[2:]) {
				return protocolError("invalid UTF-8 in close frame")
			}
			ce.Text = string(p[2:])
		}
		return ce
	}
	return nil
}

// validCloseCode tells the codes a peer may send (RFC 6455 7.4, IANA).
func validCloseCode(code int) bool {
	switch {
	case code >= 1000 && code <= 1003, code >= 1007 && code <= 1013:
		return true
	}
	return code >= 3000 && code <= 4999
}

// unexpected reports the end of the connection outside a close frame as
// io.ErrUnexpectedEOF, whether or not it fell between frames: without a
// close frame the stream did not end cleanly.
func unexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
