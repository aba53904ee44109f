package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/conversion/api"
	"github.com/drover-dev/drover/conversion/items"
	"github.com/drover-dev/drover/internal/testkit/s3test"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// TestTokensS3: on S3 storage (a real versitygw on loopback) the tokens
// are the bucket's presigned URLs: curl puts the file into the bucket,
// not through the API; reconvert finds it there and the item ends SUCCESS;
// the download token GETs the output from the bucket. A file above the
// token's size, which the bucket takes unchecked, is refused at reconvert
// and removed. The presigned URLs live Tokens.TTL.
func TestTokensS3(t *testing.T) {
	curl := testutil.Program(t, "curl", "curl")
	srv := s3test.Start(t)
	st := srv.Storage(t)
	s := newServerOn(t, st, 0, api.Options{Version: "test", Tokens: api.Tokens{TTL: 2 * time.Minute}})
	ctx := context.Background()

	code, body := s.do(t, call{method: http.MethodGet, path: "/caas_api/uploadToken/m.stl/10"})
	require.Equal(t, http.StatusOK, code, "%s", body)
	var up tokenReply
	decode(t, body, &up)
	tok, err := url.Parse(up.Token)
	require.NoError(t, err)
	require.Equal(t, srv.Endpoint, tok.Host, "the bucket's URL")
	require.Equal(t, "120", tok.Query().Get("X-Amz-Expires"))
	key := strings.TrimPrefix(tok.Path, "/"+srv.Config("").Bucket)
	require.Contains(t, key, "items/"+up.ItemID+"/original/")

	// Above the size: the bucket takes it, reconvert does not.
	code, got := send(t, http.MethodPut, up.Token, "0123456789x", 11)
	require.Equal(t, http.StatusOK, code, got)
	code, body = s.do(t, call{method: http.MethodPut, path: "/caas_api/reconvert/" + up.ItemID})
	require.Equal(t, http.StatusRequestEntityTooLarge, code, "%s", body)
	infos, err := st.List(ctx, items.Dir(up.ItemID)+"original/")
	require.NoError(t, err)
	require.Empty(t, infos, "the oversized file is removed")

	// The upload as a client makes it: curl -T to the presigned URL.
	file := filepath.Join(t.TempDir(), "m.stl")
	require.NoError(t, os.WriteFile(file, []byte("solid cube"), 0o644))
	out, err := exec.Command(curl, "-sS", "-f", "-T", file, up.Token).CombinedOutput()
	require.NoError(t, err, "%s", out)
	code, body = s.do(t, call{method: http.MethodPut, path: "/caas_api/reconvert/" + up.ItemID,
		arg: `{"waitUntilConversionDone":true}`})
	require.Equal(t, http.StatusOK, code, "%s", body)
	it, err := s.svc.Get(ctx, up.ItemID)
	require.NoError(t, err)
	require.Equal(t, items.StateSuccess, it.State, it.DetailedError)
	require.Equal(t, int64(10), it.Originals[0].Size)

	code, body = s.do(t, call{method: http.MethodGet, path: "/caas_api/downloadToken/" + up.ItemID + "/glb"})
	require.Equal(t, http.StatusOK, code, "%s", body)
	var down tokenReply
	decode(t, body, &down)
	require.True(t, strings.HasPrefix(down.Token, "http://"+srv.Endpoint+"/"), down.Token)
	code, got = send(t, http.MethodGet, down.Token, "", 0)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "glb bytes", got)
}

func decode(t *testing.T, body []byte, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(body, v), "%s", body)
}
