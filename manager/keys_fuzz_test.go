package manager_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drover-dev/drover/auth"
	"github.com/drover-dev/drover/manager"
)

// FuzzAdminKeys posts any body to POST /admin/keys, as an admin, through
// the manager's router onto a key file. A 201 is a key whose secret
// authenticates as that key, listed with the name, tenant and roles asked
// for (or their defaults); a 400 creates nothing, and says what is wrong
// in a plain sentence: the fixed one of a body that is no key request, or
// the key store's "invalid API key: ..." naming the field.
func FuzzAdminKeys(f *testing.F) {
	for _, body := range []string{
		`{"name":"ci"}`,
		`{"name":"ci","tenant":"acme","roles":["user","viewer"],"read_only":true}`,
		`{"name":"ci","roles":[]}`,
		`{"name":"ci","roles":["has space"]}`,
		`{"name":"ci","roles":[""]}`,
		`{"name":""}`,
		`{"name":"` + strings.Repeat("n", 65) + `"}`,
		`{"name":"é\u0000"}`,
		`{"name":"ci","secret":"x"}`,
		`{"name":"ci"}{"name":"two"}`,
		`{"name":1}`,
		`[]`,
		`null`,
		``,
	} {
		f.Add([]byte(body))
	}
	const admin = "fuzz-admin-token"
	authn, err := auth.New(auth.Config{AdminTokens: []string{admin}, KeysFile: filepath.Join(f.TempDir(), "keys.json")})
	if err != nil {
		f.Fatal(err)
	}
	m, err := manager.New(manager.Config{Pools: []manager.Pool{{Name: "default"}}, Auth: authn})
	if err != nil {
		f.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := m.Shutdown(ctx); err != nil {
			f.Error(err)
		}
	}()
	h := m.Handler()
	keys := func(t *testing.T) int {
		ks, err := authn.Keys().List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return len(ks)
	}

	f.Fuzz(func(t *testing.T, body []byte) {
		before := keys(t)
		req := httptest.NewRequest(http.MethodPost, "/admin/keys", bytes.NewReader(body))
		req.RemoteAddr = "192.0.2.1:1234"
		req.Header.Set("Authorization", "Bearer "+admin)
		req.Header.Set("Content-Type", "application/json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)

		switch w.Code {
		case http.StatusCreated:
			var got manager.KeyCreated
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatalf("201 %q: %v", w.Body, err)
			}
			var asked manager.KeyRequest
			_ = json.NewDecoder(bytes.NewReader(body)).Decode(&asked)
			tenant, roles := asked.Tenant, asked.Roles
			if tenant == "" {
				tenant = auth.DefaultTenant
			}
			if len(roles) == 0 {
				roles = []string{auth.RoleUser}
			}
			if got.Name != asked.Name || got.Tenant != tenant || !slices.Equal(got.Roles, roles) ||
				got.ReadOnly != asked.ReadOnly {
				t.Fatalf("asked %+v, created %+v", asked, got.APIKey)
			}
			k, err := authn.Keys().Lookup(context.Background(), got.Secret)
			if err != nil || k.ID != got.ID {
				t.Fatalf("the new key's secret finds %+v, %v", k, err)
			}
			if keys(t) != before+1 {
				t.Fatalf("created one key, the store went from %d to %d", before, keys(t))
			}
		case http.StatusBadRequest:
			var e struct{ Code, Message string }
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" {
				t.Fatalf("400 %q is no code and message", w.Body)
			}
			if !strings.HasPrefix(e.Message, "the body must be a JSON object") &&
				!strings.HasPrefix(e.Message, auth.ErrInvalidKey.Error()+": ") {
				t.Fatalf("400 says %q", e.Message)
			}
			if n := keys(t); n != before {
				t.Fatalf("a refused key changed the store from %d to %d keys", before, n)
			}
		case http.StatusRequestEntityTooLarge:
		default:
			t.Fatalf("answered %d %q", w.Code, w.Body)
		}
	})
}
