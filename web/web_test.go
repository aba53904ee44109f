package web_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/web"
)

func get(t *testing.T, h http.Handler, target string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, target, nil))
	return rec
}

func requireSecurityHeaders(t *testing.T, hdr http.Header) {
	t.Helper()
	csp := hdr.Get("Content-Security-Policy")
	require.Contains(t, csp, "default-src 'self'")
	require.Contains(t, csp, "connect-src 'self' ws: wss:")
	require.NotContains(t, csp, "unsafe-inline")
	require.NotContains(t, csp, "unsafe-eval")
	require.Equal(t, "no-cache", hdr.Get("Cache-Control"))
	require.Equal(t, "nosniff", hdr.Get("X-Content-Type-Options"))
	require.Equal(t, "DENY", hdr.Get("X-Frame-Options"))
	require.Equal(t, "no-referrer", hdr.Get("Referrer-Policy"))
}

func TestIndex(t *testing.T) {
	h := web.Handler()
	want, err := fs.ReadFile(web.FS(), "index.html")
	require.NoError(t, err)

	for _, target := range []string{"/", "/index.html"} {
		t.Run(target, func(t *testing.T) {
			rec := get(t, h, target)
			require.Equal(t, http.StatusOK, rec.Code)
			require.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
			require.Equal(t, "default-src 'self'; connect-src 'self' ws: wss:; base-uri 'none'; "+
				"form-action 'self'; frame-ancestors 'none'; object-src 'none'", rec.Header().Get("Content-Security-Policy"))
			requireSecurityHeaders(t, rec.Header())
			require.Equal(t, string(want), rec.Body.String())
		})
	}
}

func TestAssets(t *testing.T) {
	h := web.Handler()
	tests := []struct {
		name, ctype string
	}{
		{"index.html", "text/html; charset=utf-8"},
		{"try.html", "text/html; charset=utf-8"},
		{"style.css", "text/css; charset=utf-8"},
		{"drover.js", "text/javascript; charset=utf-8"},
		{"dashboard.js", "text/javascript; charset=utf-8"},
		{"try.js", "text/javascript; charset=utf-8"},
		{"ui.js", "text/javascript; charset=utf-8"},
		{"favicon.svg", "image/svg+xml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, err := fs.ReadFile(web.FS(), tt.name)
			require.NoError(t, err)
			rec := get(t, h, "/"+tt.name)
			require.Equal(t, http.StatusOK, rec.Code)
			require.Equal(t, tt.ctype, rec.Header().Get("Content-Type"))
			requireSecurityHeaders(t, rec.Header())
			require.NotEmpty(t, rec.Header().Get("ETag"))
			require.Equal(t, string(want), rec.Body.String())
		})
	}

	// Every embedded file has a real type, so a new asset cannot go out
	// as application/octet-stream unnoticed.
	err := fs.WalkDir(web.FS(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rec := get(t, h, "/"+name)
		require.Equal(t, http.StatusOK, rec.Code, name)
		require.NotEqual(t, "application/octet-stream", rec.Header().Get("Content-Type"), name)
		return nil
	})
	require.NoError(t, err)
}

func TestConditionalAndHead(t *testing.T) {
	h := web.Handler()
	etag := get(t, h, "/drover.js").Header().Get("ETag")

	req := httptest.NewRequest(http.MethodGet, "/drover.js", nil)
	req.Header.Set("If-None-Match", etag)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	require.Equal(t, http.StatusNotModified, rec.Code)
	require.Empty(t, rec.Body.String())

	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodHead, "/", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "text/html; charset=utf-8", rec.Header().Get("Content-Type"))
	require.Empty(t, rec.Body.String())
}

func TestMethodNotAllowed(t *testing.T) {
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		rec := httptest.NewRecorder()
		web.Handler().ServeHTTP(rec, httptest.NewRequest(m, "/", nil))
		require.Equal(t, http.StatusMethodNotAllowed, rec.Code, m)
		require.Equal(t, "GET, HEAD", rec.Header().Get("Allow"))
	}
}

func TestNotFound(t *testing.T) {
	h := web.Handler()
	for _, target := range []string{"/nope", "/nope.js", "/index.htm", "/static/index.html", "/INDEX.HTML"} {
		t.Run(target, func(t *testing.T) {
			rec := get(t, h, target)
			require.Equal(t, http.StatusNotFound, rec.Code)
			requireSecurityHeaders(t, rec.Header())
			require.NotContains(t, rec.Body.String(), "<html")
		})
	}
}

// goMod is a file just outside the embedded tree; no response may carry it.
func goMod(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../go.mod")
	require.NoError(t, err)
	return string(b[:strings.IndexByte(string(b), '\n')]) // "module github.com/drover-dev/drover"
}

var traversals = []string{
	"/../go.mod",
	"/..%2fgo.mod",
	"/%2e%2e/",
	"/%2e%2e/go.mod",
	"/%2E%2E/%2E%2E/etc/passwd",
	"/static/../../x",
	"/static/../../go.mod",
	"/./index.html",
	"//go.mod",
	"/..\\go.mod",
	"/%5c..%5cgo.mod",
	"/web.go",
	"/static/index.html",
	"/index.html/",
	"/index.html/..",
	"/%00",
}

func TestTraversal(t *testing.T) {
	marker := goMod(t)
	h := web.Handler()
	for _, target := range traversals {
		t.Run(target, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodGet, "/", nil)
			// Set the path by hand: NewRequest would reject some of these.
			req.URL.RawPath = ""
			req.URL.Path = decode(t, target)
			h.ServeHTTP(rec, req)
			require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, rec.Code)
			require.NotContains(t, rec.Body.String(), marker)
			requireSecurityHeaders(t, rec.Header())
		})
	}
}

func decode(t *testing.T, p string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://x"+strings.ReplaceAll(p, `\`, "%5c"), nil)
	require.NoError(t, err)
	return req.URL.Path
}

// TestTraversalMounted sends raw request lines, uncleaned by any client, to a
// server that mounts the handler the way the manager does.
func TestTraversalMounted(t *testing.T) {
	marker := goMod(t)
	mux := http.NewServeMux()
	mux.Handle("/ui/", http.StripPrefix("/ui", web.Handler()))
	srv := httptest.NewServer(mux)
	defer srv.Close()

	for _, p := range traversals {
		target := "/ui" + strings.ReplaceAll(p, `\`, "%5c")
		t.Run(target, func(t *testing.T) {
			code, body := rawGet(t, srv.Listener.Addr().String(), target)
			require.NotEqual(t, http.StatusOK, code, "only /ui/index.html-like paths may succeed")
			require.NotContains(t, body, marker)
		})
	}

	code, body := rawGet(t, srv.Listener.Addr().String(), "/ui/")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, body, "<title>drover")
}

func rawGet(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(5*time.Second)))
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n", target)
	require.NoError(t, err)
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, string(b)
}

func TestMountedWithoutSlash(t *testing.T) {
	h := http.StripPrefix("/ui", web.Handler())
	for _, tt := range []struct{ target, want string }{
		{"/ui", "./ui/"},
		{"/ui?x=1", "./ui/?x=1"},
	} {
		rec := get(t, h, tt.target)
		require.Equal(t, http.StatusMovedPermanently, rec.Code)
		require.Equal(t, tt.want, rec.Header().Get("Location"))
	}
}

func TestFS(t *testing.T) {
	for _, name := range []string{"index.html", "try.html", "style.css", "drover.js", "dashboard.js", "try.js",
		"convert.html", "convert.css", "convert.js", "glb.js", "glview.js", "mat4.js", "zipdir.js"} {
		_, err := fs.Stat(web.FS(), name)
		require.NoError(t, err, name)
	}
	_, err := fs.Stat(web.FS(), "web.go")
	require.ErrorIs(t, err, fs.ErrNotExist)
}

var (
	attrRef     = regexp.MustCompile(`\b(?:src|href)="([^"]*)"`)
	importRef   = regexp.MustCompile(`(?m)^\s*import\b[^'"]*['"]([^'"]+)['"]`)
	inlineStyle = regexp.MustCompile(`(?i)<style|\sstyle="|\son[a-z]+="|javascript:`)
	inlineJS    = regexp.MustCompile(`(?i)<script(?:\s[^>]*)?>`)
	htmlSinks   = regexp.MustCompile(`\.(?:inner|outer)HTML\s*=|insertAdjacentHTML|document\.write|\beval\(|new Function\(`)
)

// TestPagesFitTheCSP checks what the browser would refuse under the CSP or
// the /ui/ mount: inline scripts, styles and handlers, absolute or external
// references, and references to files that are not embedded.
func TestPagesFitTheCSP(t *testing.T) {
	fsys := web.FS()
	exists := func(name string) bool {
		_, err := fs.Stat(fsys, name)
		return err == nil
	}
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(fsys, name)
		require.NoError(t, err)
		src := string(b)
		switch path.Ext(name) {
		case ".html":
			require.Empty(t, inlineStyle.FindString(src), "%s: inline style, handler or javascript: URL", name)
			for _, tag := range inlineJS.FindAllString(src, -1) {
				require.Contains(t, tag, `src="`, "%s: inline script %s", name, tag)
			}
			for _, m := range attrRef.FindAllStringSubmatch(src, -1) {
				ref := m[1]
				require.NotRegexp(t, `^(/|[a-z]+:)`, ref, "%s: %q must be relative", name, ref)
				file := strings.TrimPrefix(ref, "./")
				if file == "" {
					file = "index.html"
				}
				require.True(t, exists(file), "%s: %q is not embedded", name, ref)
			}
		case ".js":
			require.Empty(t, htmlSinks.FindString(src), "%s: data must not be parsed as HTML or code", name)
			for _, m := range importRef.FindAllStringSubmatch(src, -1) {
				require.True(t, strings.HasPrefix(m[1], "./"), "%s: import %q", name, m[1])
				require.True(t, exists(strings.TrimPrefix(m[1], "./")), "%s: import %q", name, m[1])
			}
		}
		return nil
	})
	require.NoError(t, err)
}

// TestDroverJS runs the drover.js unit tests (testdata/drover_test.mjs)
// with Node.js (the Debian package nodejs, which scripts/setup.sh installs).
func TestDroverJS(t *testing.T) {
	node := testutil.Program(t, "node", "nodejs")
	cmd := exec.CommandContext(t.Context(), node, "--test", "testdata/drover_test.mjs")
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
}

// TestConvertPageJS runs the tests of the conversion page's pure parts
// (testdata/convert_test.mjs: the GLB reader, the ZIP directory reader,
// the matrices) with Node.js, and gives them ZIPs written by Go's
// archive/zip to list: deflated entries with a comment and folders, and
// one with more entries than a plain ZIP holds, which Go writes as ZIP64.
func TestConvertPageJS(t *testing.T) {
	node := testutil.Program(t, "node", "nodejs")
	dir := t.TempDir()
	want := map[string][][2]any{}
	write := func(name, comment string, method uint16, entries func(add func(name string, body []byte))) {
		var buf bytes.Buffer
		zw := zip.NewWriter(&buf)
		require.NoError(t, zw.SetComment(comment))
		var list [][2]any
		entries(func(name string, body []byte) {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
			require.NoError(t, err)
			_, err = w.Write(body)
			require.NoError(t, err)
			list = append(list, [2]any{name, len(body)})
		})
		require.NoError(t, zw.Close())
		require.NoError(t, os.WriteFile(filepath.Join(dir, name), buf.Bytes(), 0o644))
		want[name] = list
	}
	write("plain.zip", "made by web_test.go", zip.Deflate, func(add func(string, []byte)) {
		add("asm/", nil)
		add("asm/top.step", bytes.Repeat([]byte("ISO-10303-21;\n"), 500))
		add("asm/parts/bolt.stp", []byte("x"))
		add("modèle ünïcode.obj", []byte("v 0 0 0\n"))
	})
	write("zip64.zip", "", zip.Store, func(add func(string, []byte)) {
		for i := range 70000 {
			add(fmt.Sprintf("p/%05d.stl", i), nil)
		}
	})
	b, err := json.Marshal(want)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "want.json"), b, 0o644))

	cmd := exec.CommandContext(t.Context(), node, "--test", "testdata/convert_test.mjs")
	cmd.Env = append(os.Environ(), "DROVER_ZIPS="+dir)
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	require.Contains(t, string(out), "# skipped 0", "the Go ZIPs were not read:\n%s", out)
}
