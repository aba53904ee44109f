package api_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/farm"
	"github.com/drover-dev/drover/internal/testkit/cadtest"
	"github.com/drover-dev/drover/storage"
)

// partIndex is the part of the shattered index the test reads.
type partIndex struct {
	Parts []struct {
		File string `xml:"file,attr"`
		Name string `xml:"name,attr"`
	} `xml:"Parts>Part"`
	Nodes []partNode `xml:"Tree>Node"`
}

type partNode struct {
	Name     string     `xml:"name,attr"`
	Part     string     `xml:"part,attr"`
	Children []partNode `xml:"Node"`
}

// TestShatteredAssembly converts the STEP assembly of Bracket and Bolt
// with processShattered on a real farm: job slots that lease over the
// farm API and run the real Draw. The index names every part, each part's
// GLB downloads through shattered/:id/:name on both prefixes and is a
// valid GLB, and names that would leave the item's directory are refused.
func TestShatteredAssembly(t *testing.T) {
	models := cadtest.Models(t)
	st, err := storage.NewFS(t.TempDir())
	require.NoError(t, err)
	q, err := queue.NewMemory(queue.Options{})
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := conversion.New(conversion.Config{Storage: st, Items: items.NewMemory(), Queue: q, Close: true, Logger: log})
	require.NoError(t, err)
	require.NoError(t, svc.Start())
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	a := api.New(svc, api.Options{Logger: log})
	a.Mount(r)
	a.MountFarm(r, func(c *gin.Context) {
		if c.GetHeader("Authorization") != "Bearer "+farmToken {
			c.AbortWithStatus(http.StatusUnauthorized)
		}
	})
	srv := httptest.NewServer(r)
	conv, err := convert.New(convert.Config{Logger: log})
	require.NoError(t, err)
	jobs, err := farm.NewJobs(farm.JobsConfig{Farm: "draw", Slots: 1, Converter: conv, WorkDir: t.TempDir(),
		PollWait: time.Second, Logger: log,
		Source: farm.NewJobClient(func() []string { return []string{srv.URL} }, farmToken, nil)})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- jobs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		require.NoError(t, <-done)
		srv.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		require.NoError(t, svc.Stop(sctx))
		require.NoError(t, st.Close())
	})
	s := &server{Server: srv, svc: svc}

	step, err := os.ReadFile(filepath.Join(models, "asm.step"))
	require.NoError(t, err)
	start := time.Now()
	code, up := s.upload(t, "/api",
		`{"processShattered":true,"conversionCommandLine":["--output_glb"],"waitUntilConversionDone":true}`,
		"assembly.step", string(step))
	require.Equal(t, http.StatusOK, code, "%v", up)
	require.Equal(t, "SUCCESS", up["conversionState"], "%v", up)
	id := up["itemid"].(string)
	t.Logf("uploaded, converted and shattered in %s", time.Since(start).Round(time.Millisecond))

	var data api.ItemView
	require.Equal(t, http.StatusOK, s.getJSON(t, "/api/data/"+id, &data))
	require.True(t, data.ProcessShattered)
	require.Equal(t, []string{"assembly.step.glb"}, data.Files)
	var listed []string
	for _, f := range data.Shattered {
		listed = append(listed, f.Name)
		require.Positive(t, f.Size)
	}
	require.ElementsMatch(t, []string{"Bracket.glb", "Bolt.glb", "index.xml"}, listed)

	for _, prefix := range api.Prefixes {
		t.Run(prefix, func(t *testing.T) {
			code, b := s.do(t, call{method: http.MethodGet, path: prefix + "/shatteredXML/" + id})
			require.Equal(t, http.StatusOK, code, "%s", b)
			var idx partIndex
			require.NoError(t, xml.Unmarshal(b, &idx), "%s", b)
			names := map[string]string{}
			for _, p := range idx.Parts {
				names[p.Name] = p.File
			}
			require.Equal(t, map[string]string{"Bracket": "Bracket.glb", "Bolt": "Bolt.glb"}, names)
			require.Len(t, idx.Nodes, 1)
			require.Equal(t, "Assembly", idx.Nodes[0].Name)
			var inTree []string
			for _, n := range idx.Nodes[0].Children {
				inTree = append(inTree, n.Name+"="+n.Part)
			}
			require.Equal(t, []string{"Bracket=Bracket.glb", "Bolt=Bolt.glb"}, inTree)

			for name, file := range names {
				code, glb := s.do(t, call{method: http.MethodGet, path: prefix + "/shattered/" + id + "/" + file})
				require.Equal(t, http.StatusOK, code, "%s", glb)
				info, err := convert.InspectGLB(bytes.NewReader(glb), int64(len(glb)))
				require.NoError(t, err, name)
				require.Equal(t, 12, info.Triangles, "%s is a box", name)
				require.Contains(t, info.Nodes, name)
			}
		})
	}

	t.Run("names that leave the directory", func(t *testing.T) {
		for _, name := range []string{"../item.json", "..%2Fitem.json", "%2e%2e%2Fitem.json", "..%5Citem.json",
			`..\item.json`, "/etc/passwd", "%2Fetc%2Fpasswd", "a/b", "..", ".", "%2e%2e", ".hidden"} {
			code, b := rawGet(t, srv.URL, "/api/shattered/"+id+"/"+name)
			require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, code, "%s: %s", name, b)
			t.Logf("%s → %d %s", name, code, b)
			requirePlainError(t, b)
		}
		for _, path := range []string{"/api/shattered/" + id + "/nope.glb", "/api/shattered/" + id + "/assembly.step.glb",
			"/api/shatteredXML/not-an-item", "/caas_api/shattered/not-an-item/Bolt.glb"} {
			code, b := rawGet(t, srv.URL, path)
			require.Equal(t, http.StatusNotFound, code, "%s: %s", path, b)
			requirePlainError(t, b)
		}
	})
}

// rawGet sends a GET with the path exactly as given: no client cleans or
// escapes it. headers are more header lines ("Name: value").
func rawGet(t *testing.T, base, path string, headers ...string) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	require.NoError(t, err)
	defer conn.Close()
	var extra strings.Builder
	for _, h := range headers {
		extra.WriteString(h + "\r\n")
	}
	_, err = fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\n%sConnection: close\r\n\r\n", path, extra.String())
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// requirePlainError checks an error body: {"ERROR": sentence}, naming no
// server path.
func requirePlainError(t *testing.T, b []byte) {
	t.Helper()
	var e map[string]string
	require.NoError(t, json.Unmarshal(b, &e), "%s", b)
	require.Len(t, e, 1, "%s", b)
	require.NotEmpty(t, e["ERROR"])
	require.NotContains(t, e["ERROR"], os.TempDir())
	require.NotContains(t, e["ERROR"], "items/")
}
