// Package web owns drover's browser side: the static dashboard, the
// try-a-session page and drover.js, the browser client for client protocol
// v1, all embedded in the binary and served by Handler.
//
// It does not serve any API: /status, /health and /ws belong to the manager.
// The pages find them relative to where they are mounted (one directory up,
// so /ui/ reaches /status and /ws), which keeps them working behind a proxy
// that adds a path prefix. Mount the handler on a directory:
//
//	mux.Handle("/ui/", http.StripPrefix("/ui", web.Handler()))
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"
)

//go:embed static/*.html static/*.css static/*.js static/*.svg
var embedded embed.FS

// contentSecurityPolicy is sent with every response. The pages load nothing
// but their own files and connect only to their own origin; WebSockets may
// go to any host because the JS client is also used against other managers.
const contentSecurityPolicy = "default-src 'self'; connect-src 'self' ws: wss:; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
	".json": "application/json",
	".png":  "image/png",
	".txt":  "text/plain; charset=utf-8",
}

// FS returns the embedded files, rooted at the directory Handler serves.
func FS() fs.FS {
	sub, err := fs.Sub(embedded, "static")
	if err != nil {
		panic(err) // "static" is a valid path: cannot happen
	}
	return sub
}

type file struct {
	body  []byte
	ctype string
	etag  string
}

type handler struct {
	files map[string]file
}

// Handler serves the embedded files; "/" is the dashboard (index.html).
// Every response carries the CSP, Cache-Control: no-cache (browsers
// revalidate with the ETag, so a new binary never shows stale pages),
// nosniff, Referrer-Policy no-referrer and X-Frame-Options DENY. Only GET and HEAD are served; paths that are not plain names
// inside the tree (.., empty elements, backslashes) get 400, unknown names
// and directories 404.
func Handler() http.Handler {
	return &handler{files: loadFiles()}
}

// loadFiles reads the embedded tree once: a few small files, kept with
// their type and ETag so that serving one is a map lookup.
var loadFiles = sync.OnceValue(func() map[string]file {
	files := map[string]file{}
	fsys := FS()
	err := fs.WalkDir(fsys, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files[name] = file{body: body, ctype: contentType(name), etag: `"` + hex.EncodeToString(sum[:12]) + `"`}
		return nil
	})
	if err != nil {
		panic(err) // reading an embed.FS does not fail
	}
	return files
})

func contentType(name string) string {
	if ct, ok := contentTypes[path.Ext(name)]; ok {
		return ct
	}
	return "application/octet-stream"
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", contentSecurityPolicy)
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "no-referrer")
	hdr.Set("X-Frame-Options", "DENY") // frame-ancestors 'none' for browsers without CSP 2

	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	p := r.URL.Path
	if p == "" {
		// Mounted with StripPrefix("/ui") and asked for "/ui": the pages use
		// relative URLs, so they must be loaded from "/ui/".
		redirectToDir(w, r)
		return
	}
	if p[0] != '/' {
		http.NotFound(w, r)
		return
	}
	name := p[1:]
	if name == "" {
		name = "index.html"
	}
	if !fs.ValidPath(name) || strings.Contains(name, `\`) {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	f, ok := h.files[name]
	if !ok {
		http.NotFound(w, r)
		return
	}
	hdr.Set("Content-Type", f.ctype)
	hdr.Set("ETag", f.etag)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(f.body))
}

// redirectToDir sends the client to the directory form of the URL it asked
// for. The Location is relative ("./ui/"), built from the last element of
// the original path, so it can never leave the host.
func redirectToDir(w http.ResponseWriter, r *http.Request) {
	orig := r.RequestURI
	if i := strings.IndexAny(orig, "?#"); i >= 0 {
		orig = orig[:i]
	}
	last := orig[strings.LastIndexByte(orig, '/')+1:]
	if last == "" || last == "." || last == ".." {
		http.NotFound(w, r)
		return
	}
	target := "./" + last + "/"
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	w.Header().Set("Location", target)
	w.WriteHeader(http.StatusMovedPermanently)
}
