package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/storage"
)

// server is the API on a test server, with a fake farm that "converts"
// every job into a GLB and a PNG of fixed bytes over the farm API.
type server struct {
	*httptest.Server
	svc *conversion.Service
}

const farmToken = "farm-token"

func newServer(t *testing.T, maxUpload int64) *server {
	t.Helper()
	return newServerWith(t, maxUpload, api.Options{Version: "test"})
}

func newServerWith(t *testing.T, maxUpload int64, opts api.Options) *server {
	t.Helper()
	st, err := storage.NewFS(t.TempDir())
	require.NoError(t, err)
	return newServerOn(t, st, maxUpload, opts)
}

// newService is a started conversion service on a data directory and
// memory stores, stopped when tb ends.
func newService(tb testing.TB) *conversion.Service {
	tb.Helper()
	st, err := storage.NewFS(tb.TempDir())
	require.NoError(tb, err)
	q, err := queue.NewMemory(queue.Options{})
	require.NoError(tb, err)
	svc, err := conversion.New(conversion.Config{Storage: st, Items: items.NewMemory(), Queue: q, Close: true})
	require.NoError(tb, err)
	require.NoError(tb, svc.Start())
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		require.NoError(tb, svc.Stop(ctx))
	})
	return svc
}

// newServerOn is the API on st, which it closes at the end.
func newServerOn(t *testing.T, st storage.Storage, maxUpload int64, opts api.Options) *server {
	t.Helper()
	q, err := queue.NewMemory(queue.Options{})
	require.NoError(t, err)
	svc, err := conversion.New(conversion.Config{Storage: st, Items: items.NewMemory(), Queue: q, Close: true,
		MaxUpload: maxUpload})
	require.NoError(t, err)
	require.NoError(t, svc.Start())
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	a := api.New(svc, opts)
	a.Mount(r)
	a.MountFarm(r, func(c *gin.Context) {
		if c.GetHeader("Authorization") != "Bearer "+farmToken {
			c.AbortWithStatus(http.StatusUnauthorized)
		}
	})
	s := &server{Server: httptest.NewServer(r), svc: svc}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.farm(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		require.NoError(t, svc.Stop(sctx))
		if c, ok := st.(io.Closer); ok {
			require.NoError(t, c.Close())
		}
	})
	return s
}

// farmCall makes a farm API call.
func (s *server) farmCall(ctx context.Context, method, path string, header http.Header, body io.Reader, out any) (int, error) {
	req, err := http.NewRequestWithContext(ctx, method, s.URL+path, body)
	if err != nil {
		return 0, err
	}
	if header != nil {
		req.Header = header.Clone()
	}
	req.Header.Set("Authorization", "Bearer "+farmToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		return resp.StatusCode, json.NewDecoder(resp.Body).Decode(out)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, nil
}

func jsonBody(v any) io.Reader {
	b, _ := json.Marshal(v)
	return bytes.NewReader(b)
}

// farm leases jobs over HTTP and completes them: an input named *.bad
// fails with Unzip Error, any other gets a GLB and a PNG, and one named
// *.asm also a shattered part and its index.
func (s *server) farm(ctx context.Context) {
	for ctx.Err() == nil {
		var lr farmapi.LeaseResponse
		code, err := s.farmCall(ctx, http.MethodPost, farmapi.PathJobLease, nil,
			jsonBody(farmapi.LeaseRequest{Farm: "fake", Max: 1, Slots: 1, WaitMS: 200}), &lr)
		if err != nil || code != http.StatusOK {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		for _, j := range lr.Jobs {
			base := farmapi.PathJobs + "/" + j.ID
			h := http.Header{farmapi.LeaseHeader: {j.Token}}
			code, _ := s.farmCall(ctx, http.MethodGet, base+"/input/0", h, nil, nil)
			if code != http.StatusOK {
				continue
			}
			if strings.HasSuffix(j.Name, ".bad") {
				_, _ = s.farmCall(ctx, http.MethodPost, base+"/fail", nil,
					jsonBody(farmapi.FailRequest{Token: j.Token, Reason: "Unzip Error", Detail: "broken", Final: true}), nil)
				continue
			}
			var outs []farmapi.JobOutput
			names := [][2]string{{j.Name + ".glb", "glb"}, {j.Name + ".png", "png"}}
			if strings.HasSuffix(j.Name, ".asm") {
				names = append(names, [2]string{farmapi.ShatteredPrefix + "part1.glb", "glb"},
					[2]string{farmapi.ShatteredPrefix + "index.xml", "xml"})
			}
			for _, nt := range names {
				name, typ := nt[0], nt[1]
				_, _ = s.farmCall(ctx, http.MethodPut, base+"/output/"+name, h, strings.NewReader(typ+" bytes"), nil)
				outs = append(outs, farmapi.JobOutput{Name: name, Type: typ, Size: int64(len(typ + " bytes"))})
			}
			_, _ = s.farmCall(ctx, http.MethodPost, base+"/complete", nil,
				jsonBody(farmapi.CompleteRequest{Token: j.Token, Attempt: j.Attempt, Outputs: outs}), nil)
		}
	}
}

type call struct {
	method, path, arg string
	body              io.Reader
	contentType       string
}

func (s *server) do(t *testing.T, c call) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(c.method, s.URL+c.path, c.body)
	require.NoError(t, err)
	if c.arg != "" {
		req.Header.Set(api.ArgHeader, c.arg)
	}
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

func (s *server) getJSON(t *testing.T, path string, out any) int {
	t.Helper()
	code, b := s.do(t, call{method: http.MethodGet, path: path})
	require.NoError(t, json.Unmarshal(b, out), "%s", b)
	return code
}

// form makes a multipart body of files in field.
func form(field string, files map[string]string) (io.Reader, string) {
	var buf bytes.Buffer
	w := multipart.NewWriter(&buf)
	_ = w.WriteField("note", "fields other than the files are skipped")
	for name, content := range files {
		fw, _ := w.CreateFormFile(field, name)
		_, _ = io.WriteString(fw, content)
	}
	_ = w.Close()
	return &buf, w.FormDataContentType()
}

func (s *server) upload(t *testing.T, prefix, arg, name, content string) (int, map[string]any) {
	t.Helper()
	body, ct := form("file", map[string]string{name: content})
	code, b := s.do(t, call{method: http.MethodPost, path: prefix + "/upload", arg: arg, body: body, contentType: ct})
	var out map[string]any
	require.NoError(t, json.Unmarshal(b, &out), "%s", b)
	return code, out
}

// TestBasicDemoSequence is the HOOPS Basic Demo client's sequence, on both
// prefixes.
func TestBasicDemoSequence(t *testing.T) {
	s := newServer(t, 0)
	for _, prefix := range api.Prefixes {
		t.Run(prefix, func(t *testing.T) {
			var upd struct{ LastUpdated string }
			require.Equal(t, http.StatusOK, s.getJSON(t, prefix+"/updated", &upd))
			before, err := time.Parse(time.RFC3339Nano, upd.LastUpdated)
			require.NoError(t, err)

			code, up := s.upload(t, prefix, `{"startPath":"","accessPassword":""}`, "cube.stl", "solid cube")
			require.Equal(t, http.StatusOK, code, "%v", up)
			id := up["itemid"].(string)
			require.Equal(t, id, up["storageID"])

			require.Eventually(t, func() bool {
				s.getJSON(t, prefix+"/updated", &upd)
				now, _ := time.Parse(time.RFC3339Nano, upd.LastUpdated)
				var list struct{ Itemarray []api.ItemView }
				s.getJSON(t, prefix+"/items", &list)
				for _, it := range list.Itemarray {
					if it.StorageID == id && it.ConversionState == "SUCCESS" {
						return now.After(before)
					}
				}
				return false
			}, 10*time.Second, 20*time.Millisecond)

			code, png := s.do(t, call{method: http.MethodGet, path: prefix + "/file/" + id + "/png"})
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, "png bytes", string(png))
			code, glb := s.do(t, call{method: http.MethodGet, path: prefix + "/fileByName/" + id + "/cube.stl.glb"})
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, "glb bytes", string(glb))
			code, orig := s.do(t, call{method: http.MethodGet, path: prefix + "/original/" + id})
			require.Equal(t, http.StatusOK, code)
			require.Equal(t, "solid cube", string(orig))

			var data api.ItemView
			require.Equal(t, http.StatusOK, s.getJSON(t, prefix+"/data/"+id, &data))
			require.Equal(t, "cube.stl", data.Name)
			require.Equal(t, []string{"cube.stl.glb", "cube.stl.png"}, data.Files)

			code, b := s.do(t, call{method: http.MethodPut, path: prefix + "/create", arg: `{"itemname":"EmptyContainer"}`})
			require.Equal(t, http.StatusOK, code, "%s", b)
			var created map[string]string
			require.NoError(t, json.Unmarshal(b, &created))
			require.NotEmpty(t, created["itemid"])

			for _, del := range []string{created["itemid"], id} {
				code, b = s.do(t, call{method: http.MethodPut, path: prefix + "/delete/" + del})
				require.Equal(t, http.StatusOK, code, "%s", b)
				code, b = s.do(t, call{method: http.MethodPut, path: prefix + "/delete/" + del})
				require.Equal(t, http.StatusNotFound, code, "delete answers truthfully")
				require.Contains(t, string(b), `"ERROR"`)
			}
		})
	}
}

func TestRoutes(t *testing.T) {
	s := newServer(t, 64)
	ctx := context.Background()
	t.Run("waitUntilConversionDone", func(t *testing.T) {
		code, up := s.upload(t, "/api", `{"waitUntilConversionDone":true}`, "a.obj", "o")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "SUCCESS", up["conversionState"])
	})
	t.Run("a failure's reason and detail", func(t *testing.T) {
		code, up := s.upload(t, "/api", `{"waitUntilConversionDone":"true"}`, "a.bad", "x")
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, "ERROR - Unzip Error", up["conversionState"])
		var data api.ItemView
		s.getJSON(t, "/caas_api/data/"+up["itemid"].(string), &data)
		require.Equal(t, "broken", data.DetailedError)
	})
	t.Run("uploadArray with rootFile", func(t *testing.T) {
		body, ct := form("files", map[string]string{"m.obj": "o", "m.mtl": "mtl"})
		code, b := s.do(t, call{method: http.MethodPost, path: "/api/uploadArray",
			arg: `{"rootFile":"m.obj","waitUntilConversionDone":true}`, body: body, contentType: ct})
		require.Equal(t, http.StatusOK, code, "%s", b)
		var r map[string]string
		require.NoError(t, json.Unmarshal(b, &r))
		require.Equal(t, "SUCCESS", r["conversionState"])
		var data api.ItemView
		s.getJSON(t, "/api/data/"+r["itemid"], &data)
		require.Equal(t, "m.obj", data.Name)
		require.Len(t, data.Originals, 2)
	})
	t.Run("upload into an item, then reconvert", func(t *testing.T) {
		code, b := s.do(t, call{method: http.MethodPut, path: "/api/create", arg: `{"itemname":"box.stl"}`})
		require.Equal(t, http.StatusOK, code)
		var r map[string]string
		require.NoError(t, json.Unmarshal(b, &r))
		code, up := s.upload(t, "/api", fmt.Sprintf(`{"storageID":%q}`, r["itemid"]), "box.stl", "s")
		require.Equal(t, http.StatusOK, code, "%v", up)
		code, b = s.do(t, call{method: http.MethodPut, path: "/api/reconvert/" + r["itemid"],
			arg: `{"waitUntilConversionDone":true,"conversionCommandLine":["--output_glb"]}`})
		require.Equal(t, http.StatusOK, code, "%s", b)
		require.Contains(t, string(b), `"SUCCESS"`)
		it, err := s.svc.Get(ctx, r["itemid"])
		require.NoError(t, err)
		require.Equal(t, 1, it.Generation)
		require.Equal(t, []string{"--output_glb"}, it.CommandLine)
	})
	for _, tc := range []struct {
		name string
		c    call
		code int
	}{
		{"bad CS-API-Arg", call{method: http.MethodPut, path: "/api/create", arg: "{"}, http.StatusBadRequest},
		{"unknown item", call{method: http.MethodGet, path: "/api/data/nope"}, http.StatusNotFound},
		{"missing output type", call{method: http.MethodGet, path: "/api/file/nope/scs"}, http.StatusNotFound},
		{"reconvert unknown", call{method: http.MethodPut, path: "/api/reconvert/nope"}, http.StatusNotFound},
		{"upload not multipart", call{method: http.MethodPost, path: "/api/upload", body: strings.NewReader("x")}, http.StatusBadRequest},
		{"bad flag", call{method: http.MethodPut, path: "/api/create", arg: `{"conversionCommandLine":["--rm"]}`}, http.StatusBadRequest},
		{"webhook to loopback", call{method: http.MethodPut, path: "/api/create", arg: `{"webhook":"http://127.0.0.1/x"}`}, http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := s.do(t, tc.c)
			require.Equal(t, tc.code, code, "%s", b)
			if code != http.StatusOK {
				require.Contains(t, string(b), `"ERROR"`)
			}
		})
	}
	t.Run("too large", func(t *testing.T) {
		code, up := s.upload(t, "/api", "", "big.stl", strings.Repeat("x", 65))
		require.Equal(t, http.StatusRequestEntityTooLarge, code, "%v", up)
		require.Contains(t, up, "ERROR")
	})
	t.Run("info", func(t *testing.T) {
		var info map[string]string
		require.Equal(t, http.StatusOK, s.getJSON(t, "/caas_api/info", &info))
		require.Equal(t, "test", info["version"])
	})
	t.Run("farm api needs the token", func(t *testing.T) {
		resp, err := http.Post(s.URL+farmapi.PathJobLease, "application/json", strings.NewReader(`{"farm":"x","max":1}`))
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)
	})
}
