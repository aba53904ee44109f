package drover_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image/png"
	"io"
	"io/fs"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/webhook"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/cadtest"
	"github.com/drover-dev/drover/internal/testkit/convtest"
	"github.com/drover-dev/drover/manager"
)

// cubeSTL is the unit cube: convtest.CubeTriangles triangles.
var cubeSTL = convtest.CubeSTL()

func needConverters(t *testing.T) {
	for _, p := range []string{"assimp", "f3d", "xvfb-run", "occt-draw"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed (scripts/setup.sh installs the converters)", p)
		}
	}
}

// startConversion runs drover with conversions on dir.
func startConversion(t *testing.T, dir string) (*drover.Server, string) {
	t.Helper()
	srv, err := drover.New(drover.Config{
		Addr: "127.0.0.1:0",
		Pools: []drover.Pool{{Pool: manager.Pool{Name: "default"},
			PoolSpec: child("worker", farm.PoolSpec{Protocol: farm.ProtocolNative})}},
		Conversion: &drover.Conversion{DataDir: dir, JobSlots: 2,
			Webhook: webhook.Options{Secret: "s", Policy: webhook.Policy{AllowHosts: []string{"127.0.0.1"}}}},
	})
	require.NoError(t, err)
	require.NoError(t, srv.Start())
	return srv, "http://" + srv.Addr().String()
}

func stop(t *testing.T, srv *drover.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	require.NoError(t, srv.Stop(ctx))
}

// hoops makes the calls of the HOOPS Basic Demo client.
type hoops struct {
	t    *testing.T
	base string
}

func (h hoops) call(method, path, arg string, body io.Reader, ct string) (int, []byte) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.base+path, body)
	require.NoError(h.t, err)
	if arg != "" {
		req.Header.Set("CS-API-Arg", arg)
	}
	if ct != "" {
		req.Header.Set("Content-Type", ct)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(h.t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(h.t, err)
	return resp.StatusCode, b
}

func (h hoops) json(method, path, arg string, out any) int {
	h.t.Helper()
	code, b := h.call(method, path, arg, nil, "")
	require.NoError(h.t, json.Unmarshal(b, out), "%s %s: %s", method, path, b)
	return code
}

func (h hoops) upload(prefix, arg, name, content string) map[string]string {
	h.t.Helper()
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	fw, err := w.CreateFormFile("file", name)
	require.NoError(h.t, err)
	_, _ = io.WriteString(fw, content)
	require.NoError(h.t, w.Close())
	code, b := h.call(http.MethodPost, prefix+"/upload", arg, &buf, w.FormDataContentType())
	require.Equal(h.t, http.StatusOK, code, "%s", b)
	var out map[string]string
	require.NoError(h.t, json.Unmarshal(b, &out))
	return out
}

type itemView struct {
	StorageID       string   `json:"storageID"`
	Name            string   `json:"name"`
	ConversionState string   `json:"conversionState"`
	DetailedError   string   `json:"detailedError"`
	Files           []string `json:"files"`
}

// TestHOOPSBasicDemoSequence runs the HOOPS Basic Demo client's calls
// against drover with its real converters, on both prefixes, and watches
// the item's changes on /events.
func TestHOOPSBasicDemoSequence(t *testing.T) {
	needConverters(t)
	dir := t.TempDir()
	srv, base := startConversion(t, dir)
	h := hoops{t: t, base: base}

	// /events carries the item changes.
	ectx, ecancel := context.WithCancel(context.Background())
	defer ecancel()
	req, _ := http.NewRequestWithContext(ectx, http.MethodGet, base+"/events", nil)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	events := make(chan string, 100)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var typ string
		for sc.Scan() {
			line := sc.Text()
			if v, ok := strings.CutPrefix(line, "event: "); ok {
				typ = v
			}
			if v, ok := strings.CutPrefix(line, "data: "); ok && strings.HasPrefix(typ, "item_") {
				events <- typ + " " + v
			}
		}
	}()

	var ids []string
	for _, prefix := range []string{"/api", "/caas_api"} {
		t.Run(prefix, func(t *testing.T) {
			h.t = t
			// 1. updated
			var upd struct {
				LastUpdated string `json:"lastUpdated"`
			}
			require.Equal(t, http.StatusOK, h.json(http.MethodGet, prefix+"/updated", "", &upd))
			before := upd.LastUpdated

			// 2. upload with CS-API-Arg
			up := h.upload(prefix, `{"startPath":"","conversionCommandLine":null,"accessPassword":""}`, "cube.stl", cubeSTL)
			id := up["itemid"]
			require.NotEmpty(t, id)
			require.Equal(t, id, up["storageID"])
			ids = append(ids, id)

			// 3. poll updated, then items, reading itemarray[].storageID
			var found itemView
			require.Eventually(t, func() bool {
				h.json(http.MethodGet, prefix+"/updated", "", &upd)
				if upd.LastUpdated == before {
					return false
				}
				before = upd.LastUpdated
				var list struct {
					Itemarray []itemView `json:"itemarray"`
				}
				h.json(http.MethodGet, prefix+"/items", "", &list)
				for _, it := range list.Itemarray {
					if it.StorageID == id && it.ConversionState != "PENDING" {
						found = it
						return true
					}
				}
				return false
			}, 2*time.Minute, 50*time.Millisecond)
			require.Equal(t, "SUCCESS", found.ConversionState, found.DetailedError)
			require.ElementsMatch(t, []string{"cube.stl.glb", "cube.stl.png"}, found.Files)

			// 4. file/:id/png
			code, pic := h.call(http.MethodGet, prefix+"/file/"+id+"/png", "", nil, "")
			require.Equal(t, http.StatusOK, code)
			img, err := png.Decode(bytes.NewReader(pic))
			require.NoError(t, err)
			require.False(t, convert.Uniform(img), "the thumbnail is not blank")
			code, glb := h.call(http.MethodGet, prefix+"/file/"+id+"/glb", "", nil, "")
			require.Equal(t, http.StatusOK, code)
			info, err := convert.InspectGLB(bytes.NewReader(glb), int64(len(glb)))
			require.NoError(t, err)
			require.Equal(t, convtest.CubeTriangles, info.Triangles)

			// 5. create an empty container
			var created map[string]string
			require.Equal(t, http.StatusOK, h.json(http.MethodPut, prefix+"/create", `{"itemname":"EmptyContainer"}`, &created))
			require.NotEmpty(t, created["itemid"])
			var data itemView
			require.Equal(t, http.StatusOK, h.json(http.MethodGet, prefix+"/data/"+created["itemid"], "", &data))
			require.Equal(t, "EmptyContainer", data.Name)

			// 6. delete, truthfully
			var gone map[string]any
			require.Equal(t, http.StatusOK, h.json(http.MethodPut, prefix+"/delete/"+created["itemid"], "", &gone))
			require.Equal(t, http.StatusNotFound, h.json(http.MethodPut, prefix+"/delete/"+created["itemid"], "", &gone))
			require.Contains(t, gone, "ERROR")
		})
	}
	h.t = t

	// The item's way to SUCCESS was on /events.
	seen := map[string]bool{}
	timeout := time.After(10 * time.Second)
	for !seen["item_updated SUCCESS "+ids[0]] {
		select {
		case e, ok := <-events:
			require.True(t, ok, "the event stream ended")
			var ie drover.ItemEvent
			typ, data, _ := strings.Cut(e, " ")
			require.NoError(t, json.Unmarshal([]byte(data), &ie))
			seen[typ+" "+ie.ConversionState+" "+ie.ID] = true
		case <-timeout:
			t.Fatalf("no SUCCESS event; saw %v", seen)
		}
	}
	require.True(t, seen["item_created UPLOADING "+ids[0]])

	// /status shows the queue and the local farm's job slots.
	var st struct {
		Conversion struct {
			JobSlots int `json:"job_slots"`
			Queue    struct{ Done int }
		} `json:"conversion"`
	}
	require.Equal(t, http.StatusOK, h.json(http.MethodGet, "/status", "", &st))
	require.Equal(t, 2, st.Conversion.JobSlots)
	require.Equal(t, 2, st.Conversion.Queue.Done)
	code, metrics := h.call(http.MethodGet, "/metrics", "", nil, "")
	require.Equal(t, http.StatusOK, code)
	require.Contains(t, string(metrics), "drover_conversion_job_slots 2")
	require.Contains(t, string(metrics), `drover_conversion_jobs{state="pending"} 0`)
	ecancel()
	stop(t, srv)

	// Items survive a restart on the same data directory.
	srv, base = startConversion(t, dir)
	defer stop(t, srv)
	h.base = base
	var data itemView
	require.Equal(t, http.StatusOK, h.json(http.MethodGet, "/api/data/"+ids[1], "", &data))
	require.Equal(t, "SUCCESS", data.ConversionState)
	code, _ = h.call(http.MethodGet, "/api/file/"+ids[1]+"/glb", "", nil, "")
	require.Equal(t, http.StatusOK, code)
}

// TestConversionErrors converts what cannot be converted: each ends in the
// original server's reason, with a detailedError.
func TestConversionErrors(t *testing.T) {
	needConverters(t)
	srv, base := startConversion(t, t.TempDir())
	defer stop(t, srv)
	h := hoops{t: t, base: base}
	for _, tc := range []struct {
		name, content, state string
	}{
		{"notes.txt", "hello", "ERROR - Conversion Error"},
		{"broken.stl", "solid x\nfacet nonsense\n", "ERROR - Conversion Error"},
		{"archive.zip", "not a zip", "ERROR - Unzip Error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			up := h.upload("/api", `{"waitUntilConversionDone":true}`, tc.name, tc.content)
			require.Equal(t, tc.state, up["conversionState"])
			var data itemView
			h.json(http.MethodGet, "/api/data/"+up["itemid"], "", &data)
			require.NotEmpty(t, data.DetailedError)
			t.Log(tc.name, "→", data.ConversionState, "—", data.DetailedError)
		})
	}
}

// TestZipUploads: a ZIP assembly with startPath converts; a ZIP with several
// models and no startPath, one with ../ entries, one with a symlink entry
// and a ZIP bomb end in the original server's reasons, and nothing is
// written outside the data directory's items.
func TestZipUploads(t *testing.T) {
	needConverters(t)
	root := t.TempDir()
	data := filepath.Join(root, "data")
	srv, base := startConversion(t, data)
	defer stop(t, srv)
	h := hoops{t: t, base: base}
	obj := "o cube\nv 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nf 1 2 3 4\n"
	bomb := bytes.Repeat([]byte{0}, 16<<20) // unpacks at a ratio far above the limit's
	for _, tc := range []struct {
		name, startPath, state string
		files                  []convtest.ZipEntry
	}{
		{"assembly", "asm/top.obj", "SUCCESS",
			[]convtest.ZipEntry{{Name: "asm/top.obj", Body: []byte(obj)}, {Name: "asm/other.stl", Body: []byte(cubeSTL)}}},
		{"several models", "", "ERROR - Specify startPath with ZIP",
			[]convtest.ZipEntry{{Name: "a.obj", Body: []byte(obj)}, {Name: "b.stl", Body: []byte(cubeSTL)}}},
		{"climbing entries", "", "ERROR - Unzip Error",
			[]convtest.ZipEntry{{Name: "a.obj", Body: []byte(obj)}, {Name: "../../evil.obj", Body: []byte(obj)}}},
		{"symlink entry", "", "ERROR - Unzip Error",
			[]convtest.ZipEntry{{Name: "a.obj", Body: []byte(obj)}, {Name: "link", Mode: os.ModeSymlink | 0o777, Body: []byte("/etc/passwd")}}},
		{"zip bomb", "", "ERROR - Unzip Error",
			[]convtest.ZipEntry{{Name: "a.obj", Body: []byte(obj)}, {Name: "zeros.stl", Body: bomb}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			arg := fmt.Sprintf(`{"startPath":%q,"waitUntilConversionDone":true,"conversionCommandLine":["--output_glb"]}`, tc.startPath)
			up := h.upload("/api", arg, "upload.zip", string(convtest.Zip(t, tc.files...)))
			require.Equal(t, tc.state, up["conversionState"], up["detailedError"])
		})
	}
	// Every file written is below the items' directories, the farm's work
	// directories are gone.
	require.NoError(t, filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if p == root {
			return nil
		}
		rel, _ := filepath.Rel(data, p)
		require.False(t, strings.HasPrefix(rel, ".."), "%s was written outside the data directory", p)
		require.NotEqual(t, "evil.obj", d.Name())
		return nil
	}))
}

// TestConvertsEveryKind uploads an STL and an OBJ cube, a STEP assembly of
// two named parts and an IGES part: each ends SUCCESS with a valid GLB
// (12 triangles for a cube, the part names in the glTF nodes) and a PNG
// that is not blank.
func TestConvertsEveryKind(t *testing.T) {
	needConverters(t)
	dir := t.TempDir()
	require.NoError(t, cadtest.Write(dir, cadtest.Script, "asm.step", "part.igs"))
	srv, base := startConversion(t, filepath.Join(dir, "data"))
	defer stop(t, srv)
	h := hoops{t: t, base: base}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(dir, name))
		require.NoError(t, err)
		return string(b)
	}
	for _, tc := range []struct {
		name, content string
		triangles     int
		nodes         []string
	}{
		{name: "cube.stl", content: convtest.CubeSTL(), triangles: convtest.CubeTriangles},
		{name: "cube.obj", content: convtest.CubeOBJ(), triangles: convtest.CubeTriangles},
		{name: "asm.step", content: read("asm.step"), nodes: []string{"Bracket", "Bolt"}},
		{name: "part.igs", content: read("part.igs"), nodes: []string{"Plate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.t = t
			up := h.upload("/caas_api", `{"waitUntilConversionDone":true}`, tc.name, tc.content)
			require.Equal(t, "SUCCESS", up["conversionState"], up["detailedError"])
			code, glb := h.call(http.MethodGet, "/caas_api/file/"+up["itemid"]+"/glb", "", nil, "")
			require.Equal(t, http.StatusOK, code)
			info, err := convert.InspectGLB(bytes.NewReader(glb), int64(len(glb)))
			require.NoError(t, err)
			if tc.triangles > 0 {
				require.Equal(t, tc.triangles, info.Triangles)
			}
			require.Subset(t, info.Nodes, tc.nodes)
			code, pic := h.call(http.MethodGet, "/caas_api/file/"+up["itemid"]+"/png", "", nil, "")
			require.Equal(t, http.StatusOK, code)
			img, err := png.Decode(bytes.NewReader(pic))
			require.NoError(t, err)
			require.False(t, convert.Uniform(img), "the thumbnail is not blank")
		})
	}
}
