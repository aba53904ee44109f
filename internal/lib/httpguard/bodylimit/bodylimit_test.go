package bodylimit_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/httpguard/bodylimit"
)

func init() { gin.SetMode(gin.ReleaseMode) }

// limitEngine has a route of each kind: the default bound, a route's own
// (Max, SetLimit), a group answering in its own format, and a handler that
// answers 400 on any read error, which the 413 still replaces.
func limitEngine() *gin.Engine {
	r := gin.New()
	r.Use(bodylimit.Limit(1024, func(c *gin.Context, limit int64) {
		c.JSON(http.StatusRequestEntityTooLarge, gin.H{"code": "too_large", "message": "body over " + strconv.FormatInt(limit, 10) + " bytes"})
	}))
	echo := func(c *gin.Context) {
		b, err := io.ReadAll(c.Request.Body)
		if err != nil {
			c.JSON(http.StatusBadRequest, gin.H{"code": "bad_request", "message": "could not read the body"})
			return
		}
		c.String(http.StatusOK, "%d", len(b))
	}
	r.POST("/default", echo)
	r.POST("/max", bodylimit.Max(4096), echo)
	r.POST("/set", func(c *gin.Context) { bodylimit.SetLimit(c, 8192); echo(c) })
	r.POST("/silent", func(c *gin.Context) { _, _ = io.ReadAll(c.Request.Body) }) // writes nothing
	r.POST("/unread", func(c *gin.Context) { c.String(http.StatusOK, "ignored") })
	g := r.Group("/api", bodylimit.OnTooLarge(func(c *gin.Context, _ int64) {
		c.JSON(http.StatusRequestEntityTooLarge, gin.H{"ERROR": "the upload is larger than the server allows"})
	}))
	g.POST("/upload", echo)
	return r
}

func TestLimit(t *testing.T) {
	r := limitEngine()
	tests := []struct {
		path    string
		size    int
		chunked bool
		status  int
		body    string // a part of the body
	}{
		{"/default", 1024, false, http.StatusOK, "1024"},
		{"/default", 1025, false, http.StatusRequestEntityTooLarge, `"too_large"`},
		{"/default", 1025, true, http.StatusRequestEntityTooLarge, `"too_large"`},
		{"/default", 100000, true, http.StatusRequestEntityTooLarge, "body over 1024 bytes"},
		{"/max", 4096, false, http.StatusOK, "4096"},
		{"/max", 4096, true, http.StatusOK, "4096"},
		{"/max", 4097, false, http.StatusRequestEntityTooLarge, "body over 4096 bytes"},
		{"/max", 5000, true, http.StatusRequestEntityTooLarge, "body over 4096 bytes"},
		{"/set", 8192, true, http.StatusOK, "8192"},
		{"/set", 8193, false, http.StatusRequestEntityTooLarge, "body over 8192 bytes"},
		{"/silent", 2000, true, http.StatusRequestEntityTooLarge, `"too_large"`},
		{"/unread", 5000, false, http.StatusOK, "ignored"}, // never read, never held
		{"/api/upload", 1025, true, http.StatusRequestEntityTooLarge, `{"ERROR":"the upload is larger than the server allows"}`},
		{"/api/upload", 10, false, http.StatusOK, "10"},
	}
	for _, tt := range tests {
		name := tt.path + "/" + strconv.Itoa(tt.size)
		if tt.chunked {
			name += "/chunked"
		}
		t.Run(name, func(t *testing.T) {
			var body io.Reader = bytes.NewReader(bytes.Repeat([]byte("x"), tt.size))
			if tt.chunked {
				body = io.MultiReader(body) // no length: chunked
			}
			req := httptest.NewRequest(http.MethodPost, tt.path, body)
			if tt.chunked {
				req.ContentLength = -1
			}
			rec := httptest.NewRecorder()
			r.ServeHTTP(rec, req)
			require.Equal(t, tt.status, rec.Code, rec.Body.String())
			require.Contains(t, rec.Body.String(), tt.body)
			if tt.status == http.StatusRequestEntityTooLarge {
				require.Equal(t, "close", rec.Header().Get("Connection"))
				require.True(t, json.Valid(rec.Body.Bytes()), "one JSON body, not the 413 and the handler's 400: %s", rec.Body)
				require.NotContains(t, rec.Body.String(), "bad_request")
			}
		})
	}
}

// A declared length over the bound fails before any byte is read.
func TestLimitDeclaredLength(t *testing.T) {
	r := gin.New()
	r.Use(bodylimit.Limit(100, nil))
	read := -1
	r.POST("/", func(c *gin.Context) {
		n, err := c.Request.Body.Read(make([]byte, 10))
		read = n
		require.True(t, bodylimit.TooLarge(err))
	})
	src := &countingReader{r: strings.NewReader(strings.Repeat("y", 200))}
	req := httptest.NewRequest(http.MethodPost, "/", src)
	req.ContentLength = 200
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, req)
	require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	require.Zero(t, read)
	require.Zero(t, src.n)
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Without the middleware, SetLimit still bounds the body.
func TestSetLimitAlone(t *testing.T) {
	r := gin.New()
	r.POST("/", func(c *gin.Context) {
		bodylimit.SetLimit(c, 10)
		_, err := io.ReadAll(c.Request.Body)
		require.True(t, bodylimit.TooLarge(err))
		c.Status(http.StatusRequestEntityTooLarge)
	})
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("z", 11))))
	require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
}

// A handler that sent its status before reading keeps it: the 413 cannot
// be sent any more, and its writes are not dropped.
func TestLimitAfterStatusSent(t *testing.T) {
	r := gin.New()
	r.Use(bodylimit.Limit(10, nil))
	r.POST("/", func(c *gin.Context) {
		c.String(http.StatusAccepted, "started;")
		_, err := io.ReadAll(c.Request.Body)
		require.Error(t, err)
		c.String(http.StatusAccepted, "ended")
	})
	rec := httptest.NewRecorder()
	r.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("z", 11))))
	require.Equal(t, http.StatusAccepted, rec.Code)
	require.Equal(t, "started;ended", rec.Body.String())
}
