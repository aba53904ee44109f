package api_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/conversion"
	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/signedurl"
	"github.com/drover-dev/drover/farmapi"
	"github.com/drover-dev/drover/internal/testkit/redistest"
	"github.com/drover-dev/drover/internal/testkit/testutil"
	"github.com/drover-dev/drover/storage"
)

// principalHeader names the test principal of a request: the stand-in
// for the authentication middleware, which puts the principal in the
// request's context as this one does.
const principalHeader = "X-Test-Principal"

var principals = map[string]*auth.Principal{
	"a":     {User: "alice", Tenant: "tenant-a", Roles: []string{auth.RoleUser}, Via: auth.ViaJWT},
	"a-ro":  {User: "key:reader", Tenant: "tenant-a", Roles: []string{auth.RoleUser}, ReadOnly: true, Via: auth.ViaAPIKey, KeyID: "k-ro"},
	"b":     {User: "bob", Tenant: "tenant-b", Roles: []string{auth.RoleUser}, Via: auth.ViaAPIKey, KeyID: "k-b"},
	"admin": {User: "root", Tenant: "ops", Roles: []string{auth.RoleAdmin}, Via: auth.ViaAdminToken},
}

func testPrincipal(c *gin.Context) {
	if name := c.GetHeader(principalHeader); name != "" {
		p, ok := principals[name]
		if !ok {
			c.AbortWithStatus(http.StatusUnauthorized)
			return
		}
		c.Request = c.Request.WithContext(auth.NewContext(c.Request.Context(), p))
	}
	c.Next()
}

// fakeStreamer records the files given to streaming sessions.
type fakeStreamer struct {
	mu     sync.Mutex
	opened int
	files  []farmapi.ModelFile
}

func (f *fakeStreamer) OpenStream(context.Context, *http.Request, string) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opened++
	return fmt.Sprintf("session-%d", f.opened), nil
}

func (f *fakeStreamer) AddStreamFiles(_ context.Context, _ string, files []farmapi.ModelFile) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files = append(f.files, files...)
	return nil
}

func (f *fakeStreamer) EndStream(string) {}

func (f *fakeStreamer) given() (int, []farmapi.ModelFile) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opened, slices.Clone(f.files)
}

type tenantOptions struct {
	redis  *redistest.Server
	prefix string // of the Redis keys; a fresh one if empty
	data   string // the data directory; a fresh one if empty
	quota  conversion.TenantQuota
	farm   bool // a fake farm converts the jobs
}

// tenantServer is the API on a real service, with its files in a data
// directory, its items beside them or in Redis, the test principals, a
// signer for tokens, a fake streamer, and a secret file next to the data
// directory that no route may serve.
type tenantServer struct {
	*server
	data, secret string
	logs         *testutil.SyncBuffer
	streamer     *fakeStreamer
}

func newTenantServer(t *testing.T, o tenantOptions) *tenantServer {
	t.Helper()
	root := t.TempDir()
	if o.data == "" {
		o.data = filepath.Join(root, "data")
	}
	require.NoError(t, os.MkdirAll(o.data, 0o755))
	secret := "SECRET-" + randomHex()
	// Next to the data directory, and at its top, outside any item.
	require.NoError(t, os.WriteFile(filepath.Join(filepath.Dir(o.data), "secret.txt"), []byte(secret), 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(o.data, "secret.txt"), []byte(secret), 0o644))
	st, err := storage.NewFS(o.data)
	require.NoError(t, err)
	var store items.Store
	if o.redis != nil {
		if o.prefix == "" {
			o.prefix = redistest.Prefix()
		}
		store = redistest.Open(t, func(ctx context.Context) (*items.Redis, error) {
			return items.NewRedis(ctx, items.RedisOptions{URL: o.redis.URL(), Prefix: o.prefix})
		})
	} else {
		local, err := items.Open(t.Context(), st, items.Options{})
		require.NoError(t, err)
		store = local
	}
	q, err := queue.NewMemory(queue.Options{})
	require.NoError(t, err)
	svc, err := conversion.New(conversion.Config{Storage: st, Items: store, Queue: q, Close: true, Quota: o.quota})
	require.NoError(t, err)
	require.NoError(t, svc.Start())
	signer, err := signedurl.New([]byte("tenancy-test-url-secret-0c1d2e3f"))
	require.NoError(t, err)
	logs := &testutil.SyncBuffer{}
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.Use(testPrincipal)
	a := api.New(svc, api.Options{Version: "test", Tokens: api.Tokens{Signer: signer},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	a.Mount(r)
	fst := &fakeStreamer{}
	a.MountStream(r, fst)
	a.MountFarm(r, func(c *gin.Context) {
		if c.GetHeader("Authorization") != "Bearer "+farmToken {
			c.AbortWithStatus(http.StatusUnauthorized)
		}
	})
	s := &tenantServer{server: &server{Server: httptest.NewServer(r), svc: svc}, data: o.data, secret: secret,
		logs: logs, streamer: fst}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if o.farm {
			s.farm(ctx)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		s.Close()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		require.NoError(t, svc.Stop(sctx))
		if o.redis != nil {
			require.NoError(t, store.Close())
		}
		require.NoError(t, st.Close())
	})
	return s
}

func randomHex() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// req is a request of the API as a test principal ("" for none).
type req struct {
	as, method, path, arg string
	header                map[string]string
	body                  io.Reader
	contentType           string
}

func (s *tenantServer) send(t *testing.T, r req) (int, []byte) {
	t.Helper()
	hr, err := http.NewRequest(r.method, s.URL+r.path, r.body)
	require.NoError(t, err)
	if r.as != "" {
		hr.Header.Set(principalHeader, r.as)
	}
	if r.arg != "" {
		hr.Header.Set(api.ArgHeader, r.arg)
	}
	if r.contentType != "" {
		hr.Header.Set("Content-Type", r.contentType)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(hr)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// uploadAs uploads one file as principal as; it returns the status and
// the item id (empty on failure) or the error body.
func (s *tenantServer) uploadAs(t *testing.T, as, arg, name, content string) (int, string) {
	t.Helper()
	body, ct := form("file", map[string]string{name: content})
	code, b := s.send(t, req{as: as, method: http.MethodPost, path: "/api/upload", arg: arg, body: body, contentType: ct})
	if code != http.StatusOK {
		return code, string(b)
	}
	var r map[string]string
	require.NoError(t, json.Unmarshal(b, &r), "%s", b)
	return code, r["itemid"]
}

func (s *tenantServer) list(t *testing.T, as string) []string {
	t.Helper()
	code, b := s.send(t, req{as: as, method: http.MethodGet, path: "/api/items"})
	require.Equal(t, http.StatusOK, code, "%s", b)
	var l struct{ Itemarray []api.ItemView }
	require.NoError(t, json.Unmarshal(b, &l))
	var ids []string
	for _, it := range l.Itemarray {
		ids = append(ids, it.StorageID)
	}
	slices.Sort(ids)
	return ids
}

func (s *tenantServer) updated(t *testing.T, as string) string {
	t.Helper()
	code, b := s.send(t, req{as: as, method: http.MethodGet, path: "/api/updated"})
	require.Equal(t, http.StatusOK, code, "%s", b)
	var u struct{ LastUpdated string }
	require.NoError(t, json.Unmarshal(b, &u))
	return u.LastUpdated
}

// item is an item as stored, read without a principal.
func (s *tenantServer) item(t *testing.T, id string) items.Item {
	t.Helper()
	it, err := s.svc.Get(context.Background(), id)
	require.NoError(t, err)
	return it
}

func sorted(ids ...string) []string {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	return ids
}

// eachStore runs fn with the items beside the files and in Redis.
func eachStore(t *testing.T, fn func(t *testing.T, redis *redistest.Server)) {
	t.Run("files", func(t *testing.T) { fn(t, nil) })
	t.Run("redis", func(t *testing.T) { fn(t, redistest.Start(t)) })
}

// TestTenantIsolation: tenant A cannot list, read, download, stream,
// change or delete tenant B's item, even with its id: every route
// answers as for an item that does not exist, byte for byte, and B's
// item is unchanged after. An admin sees both tenants, as does a call
// without a principal (the API used without authentication).
func TestTenantIsolation(t *testing.T) {
	eachStore(t, func(t *testing.T, redis *redistest.Server) {
		s := newTenantServer(t, tenantOptions{redis: redis, farm: true})
		const content = "B-CONTENT-never-for-a"
		code, bID := s.uploadAs(t, "b", `{"processShattered":true,"waitUntilConversionDone":true}`, "secret.asm", content)
		require.Equal(t, http.StatusOK, code, bID)
		code, aID := s.uploadAs(t, "a", `{"waitUntilConversionDone":true}`, "mine.stl", "a's")
		require.Equal(t, http.StatusOK, code, aID)
		bBefore := s.item(t, bID)
		require.Equal(t, items.StateSuccess, bBefore.State)
		require.Equal(t, "tenant-b", bBefore.Tenant)
		require.Equal(t, "tenant-a", s.item(t, aID).Tenant)
		require.NotEmpty(t, bBefore.Shattered)
		bUpdated := s.updated(t, "b")

		missing := items.NewID()
		routes := []struct {
			name   string
			method string
			path   string // %s is the item id
			arg    string // %s is the item id
			header string // the items header of enableStreamAccess, %s the id
			multi  bool   // an upload into the item
		}{
			{name: "data", method: http.MethodGet, path: "/api/data/%s"},
			{name: "file", method: http.MethodGet, path: "/api/file/%s/glb"},
			{name: "fileByName", method: http.MethodGet, path: "/caas_api/fileByName/%s/secret.asm.glb"},
			{name: "original", method: http.MethodGet, path: "/api/original/%s"},
			{name: "shattered", method: http.MethodGet, path: "/api/shattered/%s/part1.glb"},
			{name: "shatteredXML", method: http.MethodGet, path: "/api/shatteredXML/%s"},
			{name: "downloadToken", method: http.MethodGet, path: "/api/downloadToken/%s/glb"},
			{name: "reconvert", method: http.MethodPut, path: "/api/reconvert/%s"},
			{name: "delete", method: http.MethodPut, path: "/api/delete/%s"},
			{name: "upload into", method: http.MethodPost, path: "/api/upload", arg: `{"itemid":%q}`, multi: true},
			{name: "enableStreamAccess", method: http.MethodPut, path: "/api/enableStreamAccess/s1", header: `[%q]`},
			{name: "streamingSession", method: http.MethodGet, path: "/api/streamingSession", arg: `{"accessItems":[%q]}`},
		}
		for _, rt := range routes {
			t.Run(rt.name, func(t *testing.T) {
				ask := func(id string) (int, []byte) {
					r := req{as: "a", method: rt.method, path: rt.path}
					if strings.Contains(rt.path, "%s") {
						r.path = fmt.Sprintf(rt.path, id)
					}
					if rt.arg != "" {
						r.arg = fmt.Sprintf(rt.arg, id)
					}
					if rt.header != "" {
						r.header = map[string]string{"items": fmt.Sprintf(rt.header, id)}
					}
					if rt.multi {
						r.body, r.contentType = form("file", map[string]string{"extra.stl": "from a"})
					}
					return s.send(t, r)
				}
				code, foreign := ask(bID)
				require.Equal(t, http.StatusNotFound, code, "%s", foreign)
				mcode, absent := ask(missing)
				require.Equal(t, mcode, code)
				require.JSONEq(t, string(absent), string(foreign), "a foreign item answers as a missing one")
				require.NotContains(t, string(foreign), content)
				require.NotContains(t, string(foreign), "tenant-b")
			})
		}
		t.Run("lists", func(t *testing.T) {
			require.Equal(t, []string{aID}, s.list(t, "a"))
			require.Equal(t, []string{bID}, s.list(t, "b"))
			require.Equal(t, sorted(aID, bID), s.list(t, "admin"), "an admin sees every tenant")
			require.Equal(t, sorted(aID, bID), s.list(t, ""), "without a principal, every item")
			code, b := s.send(t, req{as: "a", method: http.MethodGet, path: "/api/data",
				arg: fmt.Sprintf(`{"itemids":[%q,%q]}`, aID, bID)})
			require.Equal(t, http.StatusOK, code)
			var views []api.ItemView
			require.NoError(t, json.Unmarshal(b, &views))
			require.Len(t, views, 1)
			require.Equal(t, aID, views[0].StorageID)
		})
		t.Run("stream by name", func(t *testing.T) {
			code, b := s.send(t, req{as: "a", method: http.MethodPut, path: "/api/enableStreamAccess/s1",
				header: map[string]string{"itemnames": `["secret.asm"]`}})
			require.Equal(t, http.StatusNotFound, code, "%s", b)
		})
		t.Run("updated", func(t *testing.T) {
			aUpdated := s.updated(t, "a")
			code, other := s.uploadAs(t, "b", `{"skipConversion":true}`, "more.stl", "b")
			require.Equal(t, http.StatusOK, code, other)
			code, b := s.send(t, req{as: "b", method: http.MethodPut, path: "/api/delete/" + other})
			require.Equal(t, http.StatusOK, code, "%s", b)
			require.Equal(t, aUpdated, s.updated(t, "a"), "B's changes do not show in A's updated")
			require.NotEqual(t, bUpdated, s.updated(t, "b"))
		})

		// Nothing A did reached B's item or its files.
		require.Equal(t, bBefore, s.item(t, bID))
		opened, files := s.streamer.given()
		require.Zero(t, opened, "no streaming session was opened for a foreign item")
		require.Empty(t, files)
		for _, p := range []string{"/api/original/%s", "/api/file/%s/glb", "/api/shattered/%s/part1.glb"} {
			for _, as := range []string{"b", "admin"} {
				code, body := s.send(t, req{as: as, method: http.MethodGet, path: fmt.Sprintf(p, bID)})
				require.Equal(t, http.StatusOK, code, "%s as %s: %s", p, as, body)
			}
		}
		code, body := s.send(t, req{as: "b", method: http.MethodGet, path: "/api/original/" + bID})
		require.Equal(t, http.StatusOK, code)
		require.Equal(t, content, string(body))

		// B streams its own item, and an admin reconverts and deletes it.
		code, body = s.send(t, req{as: "b", method: http.MethodPut, path: "/api/enableStreamAccess/s1",
			header: map[string]string{"items": fmt.Sprintf("[%q]", bID)}})
		require.Equal(t, http.StatusOK, code, "%s", body)
		_, files = s.streamer.given()
		require.NotEmpty(t, files)
		for _, f := range files {
			require.Equal(t, bID, f.Item)
		}
		code, body = s.send(t, req{as: "admin", method: http.MethodPut, path: "/api/delete/" + bID})
		require.Equal(t, http.StatusOK, code, "%s", body)
		require.Equal(t, []string{aID}, s.list(t, "admin"))
		require.NotContains(t, s.logs.String(), content, "no file contents in the log")
	})
}

// TestReadOnlyKey: a read-only key cannot upload, make an item, reconvert,
// delete or get an upload token (403, and nothing changes), but reads its
// tenant's items. Every upload and delete leaves an audit line.
func TestReadOnlyKey(t *testing.T) {
	s := newTenantServer(t, tenantOptions{farm: true})
	code, aID := s.uploadAs(t, "a", `{"waitUntilConversionDone":true}`, "part.stl", "solid part")
	require.Equal(t, http.StatusOK, code, aID)
	before := s.item(t, aID)
	files := func() []string { return dataFiles(t, s.data) }
	filesBefore := files()

	arrayBody, arrayCT := form("files", map[string]string{"m.obj": "o", "m.mtl": "m"})
	one, oneCT := form("file", map[string]string{"x.stl": "x"})
	into, intoCT := form("file", map[string]string{"y.stl": "y"})
	for _, r := range []req{
		{method: http.MethodPost, path: "/api/upload", body: one, contentType: oneCT},
		{method: http.MethodPost, path: "/api/upload", arg: fmt.Sprintf(`{"itemid":%q}`, aID), body: into, contentType: intoCT},
		{method: http.MethodPost, path: "/caas_api/uploadArray", arg: `{"rootFile":"m.obj"}`, body: arrayBody, contentType: arrayCT},
		{method: http.MethodPut, path: "/api/create", arg: `{"itemname":"box"}`},
		{method: http.MethodPut, path: "/api/reconvert/" + aID},
		{method: http.MethodPut, path: "/api/delete/" + aID},
		{method: http.MethodGet, path: "/api/uploadToken/z.stl"},
	} {
		r.as = "a-ro"
		code, b := s.send(t, r)
		require.Equal(t, http.StatusForbidden, code, "%s %s: %s", r.method, r.path, b)
		require.JSONEq(t, `{"ERROR":"this key is read-only"}`, string(b))
	}
	require.Equal(t, []string{aID}, s.list(t, "admin"), "no item was made")
	require.Equal(t, before, s.item(t, aID), "the item is unchanged")
	require.Equal(t, filesBefore, files(), "no file was stored")

	// Reads work.
	require.Equal(t, []string{aID}, s.list(t, "a-ro"))
	for _, p := range []string{"/api/data/", "/api/original/", "/api/shatteredXML/"} {
		code, b := s.send(t, req{as: "a-ro", method: http.MethodGet, path: p + aID})
		if p == "/api/shatteredXML/" {
			require.Equal(t, http.StatusNotFound, code, "no shattered parts: %s", b)
			continue
		}
		require.Equal(t, http.StatusOK, code, "%s: %s", p, b)
	}
	code, b := s.send(t, req{as: "a-ro", method: http.MethodGet, path: "/api/file/" + aID + "/glb"})
	require.Equal(t, http.StatusOK, code, "%s", b)
	code, b = s.send(t, req{as: "a-ro", method: http.MethodGet, path: "/api/downloadToken/" + aID + "/glb"})
	require.Equal(t, http.StatusOK, code, "a download token is a read: %s", b)

	// The audit lines.
	code, b = s.send(t, req{as: "a", method: http.MethodPut, path: "/api/delete/" + aID})
	require.Equal(t, http.StatusOK, code, "%s", b)
	lines := auditLines(s.logs.String())
	require.Contains(t, lines, auditLine{event: "upload", user: "alice", tenant: "tenant-a", via: "jwt", item: aID,
		name: "part.stl", size: "10", outcome: "ok"})
	require.Contains(t, lines, auditLine{event: "upload", user: "key:reader", tenant: "tenant-a", via: "api-key",
		name: "x.stl", size: "0", outcome: "refused: this key is read-only"})
	require.Contains(t, lines, auditLine{event: "upload", user: "key:reader", tenant: "tenant-a", via: "api-key",
		item: aID, name: "y.stl", size: "0", outcome: "refused: this key is read-only"})
	require.Contains(t, lines, auditLine{event: "upload_token", user: "key:reader", tenant: "tenant-a", via: "api-key",
		name: "z.stl", size: "0", outcome: "refused: this key is read-only"})
	require.Contains(t, lines, auditLine{event: "delete", user: "key:reader", tenant: "tenant-a", via: "api-key",
		item: aID, size: "0", outcome: "refused: this key is read-only"})
	require.Contains(t, lines, auditLine{event: "delete", user: "alice", tenant: "tenant-a", via: "jwt",
		item: aID, size: "0", outcome: "ok"})
	require.NotContains(t, s.logs.String(), "solid part", "no file contents in the log")
}

type auditLine struct{ event, user, tenant, via, item, name, size, outcome string }

// auditLines reads the audit lines of a text log.
func auditLines(log string) []auditLine {
	var out []auditLine
	for line := range strings.Lines(log) {
		if !strings.Contains(line, "msg=audit") || !strings.Contains(line, "component=audit") {
			continue
		}
		f := logFields(line)
		out = append(out, auditLine{f["event"], f["user"], f["tenant"], f["via"], f["item"], f["name"], f["size"], f["outcome"]})
	}
	return out
}

// logFields parses the key=value pairs of a slog text line.
func logFields(line string) map[string]string {
	f := map[string]string{}
	rest := strings.TrimSpace(line)
	for rest != "" {
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		if strings.HasPrefix(v, `"`) {
			var s string
			dec := json.NewDecoder(strings.NewReader(v))
			if err := dec.Decode(&s); err != nil {
				break
			}
			f[k] = s
			rest = strings.TrimSpace(v[dec.InputOffset():])
			continue
		}
		val, next, _ := strings.Cut(v, " ")
		f[k], rest = val, strings.TrimSpace(next)
	}
	return f
}

// dataFiles lists the files of the data directory, but for the store's
// lastUpdated record, which every change moves, and the farm's staged
// outputs, which the service removes after their item is SUCCESS.
func dataFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "lastUpdated.json" {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if strings.Contains(filepath.ToSlash(rel), "/staging/") {
			return nil
		}
		out = append(out, rel)
		return nil
	}))
	return out
}

// TestQuotaInFlight: with a quota of 2 conversions in flight, tenant A's
// third upload (or upload token) is refused with 429 and makes no item,
// while tenant B's is taken; once one of A's ends (here: deleted), A may
// upload again. Concurrent uploads are admitted up to the quota exactly.
// With Redis, a second manager on the same store counts A's items too.
func TestQuotaInFlight(t *testing.T) {
	eachStore(t, func(t *testing.T, redis *redistest.Server) {
		prefix := redistest.Prefix()
		quota := conversion.TenantQuota{MaxInFlight: 2}
		s := newTenantServer(t, tenantOptions{redis: redis, prefix: prefix, quota: quota}) // no farm: they stay PENDING
		var aIDs []string
		for i := range 2 {
			code, id := s.uploadAs(t, "a", "", fmt.Sprintf("a%d.stl", i), "a")
			require.Equal(t, http.StatusOK, code, id)
			aIDs = append(aIDs, id)
		}
		code, msg := s.uploadAs(t, "a", "", "a3.stl", "a")
		require.Equal(t, http.StatusTooManyRequests, code, msg)
		requirePlainError(t, []byte(msg))
		require.Contains(t, msg, "2 conversions in flight")
		code, b := s.send(t, req{as: "a", method: http.MethodGet, path: "/api/uploadToken/t.stl"})
		require.Equal(t, http.StatusTooManyRequests, code, "%s", b)
		require.ElementsMatch(t, aIDs, s.list(t, "a"), "the refused upload made no item")

		code, bID := s.uploadAs(t, "b", "", "b.stl", "b")
		require.Equal(t, http.StatusOK, code, "another tenant is not held back: %s", bID)
		require.Equal(t, conversion.TenantUsage{InFlight: 2, Bytes: 2}, s.svc.Usage("tenant-a"))

		if redis != nil {
			// Another manager on the same store refuses A's third too.
			s2 := newTenantServer(t, tenantOptions{redis: redis, prefix: prefix, quota: quota})
			require.Equal(t, conversion.TenantUsage{InFlight: 2, Bytes: 2}, s2.svc.Usage("tenant-a"), "counted at start")
			code, msg := s2.uploadAs(t, "a", "", "a3.stl", "a")
			require.Equal(t, http.StatusTooManyRequests, code, msg)
			// A delete on the first manager reaches the second's count.
			code, b = s.send(t, req{as: "a", method: http.MethodPut, path: "/api/delete/" + aIDs[0]})
			require.Equal(t, http.StatusOK, code, "%s", b)
			require.Eventually(t, func() bool { return s2.svc.Usage("tenant-a").InFlight == 1 }, 5*time.Second, 10*time.Millisecond)
			code, id := s2.uploadAs(t, "a", "", "a4.stl", "a")
			require.Equal(t, http.StatusOK, code, id)
			return
		}

		code, b = s.send(t, req{as: "a", method: http.MethodPut, path: "/api/delete/" + aIDs[0]})
		require.Equal(t, http.StatusOK, code, "%s", b)
		code, id := s.uploadAs(t, "a", "", "a4.stl", "a")
		require.Equal(t, http.StatusOK, code, id)

		// Concurrent uploads of a tenant with none in flight: exactly the
		// quota's worth get through.
		var wg sync.WaitGroup
		codes := make([]int, 6)
		for i := range codes {
			wg.Go(func() {
				body, ct := form("file", map[string]string{"c.stl": "c"})
				hr, _ := http.NewRequest(http.MethodPost, s.URL+"/api/upload", body)
				hr.Header.Set(principalHeader, "admin") // tenant ops
				hr.Header.Set("Content-Type", ct)
				resp, err := http.DefaultClient.Do(hr)
				if err == nil {
					codes[i] = resp.StatusCode
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		slices.Sort(codes)
		require.Equal(t, []int{200, 200, 429, 429, 429, 429}, codes)
		require.Equal(t, 2, s.svc.Usage("ops").InFlight)
	})
}

// TestQuotaStorage: an upload that would take a tenant past its storage
// quota is refused with 429, also midway through a large one, and leaves
// nothing behind: no item, no file, no partial file. Other tenants are
// not held back; the count survives a restart.
func TestQuotaStorage(t *testing.T) {
	const max = 64 << 10
	data := filepath.Join(t.TempDir(), "data")
	s := newTenantServer(t, tenantOptions{data: data, quota: conversion.TenantQuota{MaxBytes: max}})
	code, first := s.uploadAs(t, "a", "", "first.stl", strings.Repeat("a", 40<<10))
	require.Equal(t, http.StatusOK, code, first)
	filesBefore := dataFiles(t, s.data)
	itemBefore := s.item(t, first)

	big := strings.Repeat("b", 1<<20)
	for _, tc := range []struct {
		name, arg, content string
	}{
		{"a new item, refused midway", "", big},
		{"a new item, just past", "", strings.Repeat("c", 24<<10+1)},
		{"into an item", fmt.Sprintf(`{"itemid":%q}`, first), big},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, msg := s.uploadAs(t, "a", tc.arg, "over.stl", tc.content)
			require.Equal(t, http.StatusTooManyRequests, code, msg)
			requirePlainError(t, []byte(msg))
			require.Contains(t, msg, "storage quota")
			require.Equal(t, []string{first}, s.list(t, "a"))
			require.Equal(t, itemBefore, s.item(t, first))
			require.Equal(t, filesBefore, dataFiles(t, s.data), "nothing stored, not even in part")
		})
	}
	t.Run("an array", func(t *testing.T) {
		body, ct := form("files", map[string]string{"m.obj": big, "m.mtl": "m"})
		code, b := s.send(t, req{as: "a", method: http.MethodPost, path: "/api/uploadArray", arg: `{"rootFile":"m.obj"}`,
			body: body, contentType: ct})
		require.Equal(t, http.StatusTooManyRequests, code, "%s", b)
		require.Equal(t, filesBefore, dataFiles(t, s.data))
	})
	code, bID := s.uploadAs(t, "b", "", "b.stl", strings.Repeat("b", 60<<10))
	require.Equal(t, http.StatusOK, code, "another tenant's quota is its own: %s", bID)
	code, exact := s.uploadAs(t, "a", "", "exact.stl", strings.Repeat("e", 24<<10))
	require.Equal(t, http.StatusOK, code, "up to the quota exactly: %s", exact)
	require.Equal(t, conversion.TenantUsage{InFlight: 2, Bytes: max}, s.svc.Usage("tenant-a"))
	code, msg := s.uploadAs(t, "a", "", "one.stl", "1")
	require.Equal(t, http.StatusTooManyRequests, code, msg)
	require.Contains(t, msg, "used up")

	// A delete makes room.
	code, b := s.send(t, req{as: "a", method: http.MethodPut, path: "/api/delete/" + exact})
	require.Equal(t, http.StatusOK, code, "%s", b)
	require.Equal(t, conversion.TenantUsage{InFlight: 1, Bytes: 40 << 10}, s.svc.Usage("tenant-a"))

	// A service started on the same data directory counts the same.
	s.Close()
	s2 := newTenantServer(t, tenantOptions{data: data, quota: conversion.TenantQuota{MaxBytes: max}})
	require.Equal(t, conversion.TenantUsage{InFlight: 1, Bytes: 40 << 10}, s2.svc.Usage("tenant-a"))
	require.Equal(t, conversion.TenantUsage{InFlight: 1, Bytes: 60 << 10}, s2.svc.Usage("tenant-b"))
	code, msg = s2.uploadAs(t, "b", "", "b2.stl", strings.Repeat("b", 5<<10))
	require.Equal(t, http.StatusTooManyRequests, code, msg)
}

// TestPathTraversal: every file route refuses names and ids that would
// leave the item (dot-dot, encoded or not, encoded slashes and
// backslashes, absolute paths, NUL) with 400 or 404, and never serves the
// secret file planted next to the data directory and at its top, to the
// item's own tenant nor to anyone.
func TestPathTraversal(t *testing.T) {
	s := newTenantServer(t, tenantOptions{farm: true})
	code, id := s.uploadAs(t, "a", `{"processShattered":true,"waitUntilConversionDone":true}`, "asm.asm", "assembly")
	require.Equal(t, http.StatusOK, code, id)
	abs := url.PathEscape(filepath.Join(filepath.Dir(s.data), "secret.txt"))
	attacks := []string{
		"../secret.txt", "../../secret.txt", "../../../secret.txt",
		"..%2fsecret.txt", "..%2F..%2Fsecret.txt", "..%2f..%2f..%2fsecret.txt",
		"%2e%2e/secret.txt", "%2e%2e%2fsecret.txt", "%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt", "%2E%2E%2F%2E%2E%2Fsecret.txt",
		"..%5csecret.txt", "..%5c..%5c..%5csecret.txt", `..\..\secret.txt`, "%5c..%5csecret.txt",
		"%2fsecret.txt", abs, "/" + abs, "%2f%2f..%2f..%2fsecret.txt",
		"secret.txt%00", "..%00/secret.txt", "%00", "..", "%2e%2e", ".", "secret.txt",
		"..%252f..%252fsecret.txt", "....//....//secret.txt",
	}
	var paths []string
	for _, a := range attacks {
		paths = append(paths,
			"/api/file/"+id+"/"+a,
			"/api/fileByName/"+id+"/"+a,
			"/caas_api/fileByName/"+id+"/"+a,
			"/api/shattered/"+id+"/"+a,
			"/api/shattered/"+id+"/x/"+a,
			"/api/original/"+a,
			"/api/original/"+id+"/"+a,
			"/api/fileByName/"+a+"/secret.txt",
			"/api/file/"+a+"/glb",
			"/api/shatteredXML/"+a,
		)
	}
	for _, p := range paths {
		for _, as := range []string{"a", "admin"} {
			code, b := rawGetAs(t, s.URL, p, as)
			require.Contains(t, []int{http.StatusBadRequest, http.StatusNotFound}, code, "%s as %s: %s", p, as, b)
			require.NotContains(t, string(b), s.secret, "%s as %s", p, as)
		}
	}
	// The item's own files are served, so the routes work.
	for _, p := range []string{"/api/shattered/" + id + "/part1.glb", "/api/fileByName/" + id + "/asm.asm.glb", "/api/original/" + id} {
		code, b := rawGetAs(t, s.URL, p, "a")
		require.Equal(t, http.StatusOK, code, "%s: %s", p, b)
	}
}

// rawGetAs sends a GET with the path exactly as given, as a test
// principal.
func rawGetAs(t *testing.T, base, path, as string) (int, []byte) {
	t.Helper()
	return rawGet(t, base, path, principalHeader+": "+as)
}

// TestSignedUploadQuota: a file sent to an upload token's URL counts
// against its item's tenant (the URL carries no principal): past the
// storage quota it is refused with 429 and not stored, within it taken;
// both leave an audit line of the item's tenant, via the signed URL.
// Reconvert then counts the file.
func TestSignedUploadQuota(t *testing.T) {
	s := newTenantServer(t, tenantOptions{quota: conversion.TenantQuota{MaxBytes: 4 << 10}})
	code, b := s.send(t, req{as: "a", method: http.MethodGet, path: "/api/uploadToken/part.stl"})
	require.Equal(t, http.StatusOK, code, "%s", b)
	var tok tokenReply
	require.NoError(t, json.Unmarshal(b, &tok))
	filesBefore := dataFiles(t, s.data)

	code, body := send(t, http.MethodPut, tok.Token, strings.Repeat("x", 64<<10), -1)
	require.Equal(t, http.StatusTooManyRequests, code, body)
	require.Contains(t, errorOf(t, body), "storage quota")
	require.Equal(t, filesBefore, dataFiles(t, s.data), "nothing stored")

	code, body = send(t, http.MethodPut, tok.Token, strings.Repeat("y", 3<<10), -1)
	require.Equal(t, http.StatusOK, code, body)
	code, b = s.send(t, req{as: "a", method: http.MethodPut, path: "/api/reconvert/" + tok.ItemID})
	require.Equal(t, http.StatusOK, code, "%s", b)
	require.Equal(t, conversion.TenantUsage{InFlight: 1, Bytes: 3 << 10}, s.svc.Usage("tenant-a"))

	lines := auditLines(s.logs.String())
	require.Contains(t, lines, auditLine{event: "upload_token", user: "alice", tenant: "tenant-a", via: "jwt",
		item: tok.ItemID, name: "part.stl", size: "0", outcome: "ok"})
	var refused, ok bool
	for _, l := range lines {
		if l.event != "upload" || l.via != "signed-url" || l.item != tok.ItemID || l.tenant != "tenant-a" || l.name != "part.stl" {
			continue
		}
		refused = refused || strings.HasPrefix(l.outcome, "refused: the upload would take the tenant past its storage quota")
		ok = ok || l.outcome == "ok" && l.size == fmt.Sprint(3<<10)
	}
	require.True(t, refused && ok, "the signed uploads' audit lines: %v", lines)
}
