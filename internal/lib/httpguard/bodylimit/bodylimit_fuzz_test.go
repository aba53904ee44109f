package bodylimit_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"testing/iotest"

	"github.com/gin-gonic/gin"

	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
)

// FuzzLimit: whatever the body, its bound, whether its length is declared
// and how the reads are cut, a body within the bound reaches the handler
// whole, and one over it is answered 413 and nothing more.
func FuzzLimit(f *testing.F) {
	f.Add([]byte("hello"), uint16(5), true, false)
	f.Add([]byte("hello"), uint16(4), false, true)
	f.Add([]byte{}, uint16(0), true, true)
	f.Add(bytes.Repeat([]byte("a"), 3000), uint16(2999), false, false)
	f.Fuzz(func(t *testing.T, body []byte, limit uint16, declared, oneByte bool) {
		bound := int64(limit) + 1 // a bound of 0 means the default
		r := gin.New()
		r.Use(bodylimit.Limit(bound, nil))
		r.POST("/", func(c *gin.Context) {
			b, err := io.ReadAll(c.Request.Body)
			if err != nil {
				c.String(http.StatusBadRequest, "read error")
				return
			}
			c.String(http.StatusOK, strconv.Itoa(len(b)))
		})
		var src io.Reader = bytes.NewReader(body)
		if oneByte {
			src = iotest.OneByteReader(src)
		}
		req := httptest.NewRequest(http.MethodPost, "/", src)
		req.ContentLength = -1
		if declared {
			req.ContentLength = int64(len(body))
		}
		rec := httptest.NewRecorder()
		r.ServeHTTP(rec, req)
		switch {
		case int64(len(body)) <= bound:
			if rec.Code != http.StatusOK || rec.Body.String() != strconv.Itoa(len(body)) {
				t.Fatalf("%d bytes within %d: %d %q", len(body), bound, rec.Code, rec.Body)
			}
		case rec.Code != http.StatusRequestEntityTooLarge || rec.Body.String() != "the request body is too large\n":
			t.Fatalf("%d bytes over %d: %d %q", len(body), bound, rec.Code, rec.Body)
		}
	})
}
