package main

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	convertpkg "github.com/drover-dev/drover/conversion/convert"
	"github.com/drover-dev/drover/conversion/signedurl"
	"github.com/drover-dev/drover/internal/testkit/testutil"
)

// curlClient runs curl as a client of drover's HOOPS API would.
type curlClient struct {
	t    *testing.T
	path string
}

// run runs curl with args and returns the body it printed and the HTTP
// status.
func (c curlClient) run(args ...string) (string, int) {
	c.t.Helper()
	out, err := exec.Command(c.path, append([]string{"-sS", "-w", "\n%{http_code}"}, args...)...).Output()
	require.NoError(c.t, err, "curl %s", strings.Join(args, " "))
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(s, '\n')
	code, err := strconv.Atoi(s[i+1:])
	require.NoError(c.t, err, "%q", s)
	return s[:max(i, 0)], code
}

// json runs curl and decodes the JSON body it printed.
func (c curlClient) json(v any, args ...string) int {
	c.t.Helper()
	body, code := c.run(args...)
	require.NoError(c.t, json.Unmarshal([]byte(body), v), "%s", body)
	return code
}

// cubeOBJ is a Wavefront OBJ of the unit cube in quads: 12 triangles once
// triangulated.
func cubeOBJ() string {
	var obj strings.Builder
	obj.WriteString("o cube\n")
	for _, p := range [8][3]int{{0, 0, 0}, {1, 0, 0}, {1, 1, 0}, {0, 1, 0}, {0, 0, 1}, {1, 0, 1}, {1, 1, 1}, {0, 1, 1}} {
		fmt.Fprintf(&obj, "v %d %d %d\n", p[0], p[1], p[2])
	}
	for _, q := range [6][4]int{{0, 3, 2, 1}, {4, 5, 6, 7}, {0, 1, 5, 4}, {1, 2, 6, 5}, {2, 3, 7, 6}, {3, 0, 4, 7}} {
		fmt.Fprintf(&obj, "f %d %d %d %d\n", q[0]+1, q[1]+1, q[2]+1, q[3]+1)
	}
	return obj.String()
}

type tokenAnswer struct {
	Token  string `json:"token"`
	ItemID string `json:"itemid"`
	Error  string `json:"ERROR"`
}

// TestTokensWithCurl is issue 11's token flow on the data directory, with
// curl against `drover up` and the real converters: uploadToken, curl -T
// to its URL, reconvert, SUCCESS (the webhook is told), downloadToken and
// curl download a GLB of the cube's 12 triangles. An expired token, an
// altered one, and a PUT above the token's size are refused, and the
// refused PUT loses nothing. The secret generated in the data directory
// keeps a download token valid across a restart. No token reaches the
// log.
func TestTokensWithCurl(t *testing.T) {
	curl := curlClient{t: t, path: testutil.Program(t, "curl", "curl")}
	testutil.Program(t, "assimp", "assimp-utils")
	testutil.Program(t, "f3d", "f3d")
	testutil.Program(t, "xvfb-run", "xvfb")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cube := filepath.Join(dir, "cube.obj")
	require.NoError(t, os.WriteFile(cube, []byte(cubeOBJ()), 0o644))
	big := filepath.Join(dir, "big.obj")
	require.NoError(t, os.WriteFile(big, []byte(cubeOBJ()+strings.Repeat("# padding\n", 100)), 0o644))
	size := int64(len(cubeOBJ()))

	hook := newWebhookReceiver(t, 0)
	upArgs := []string{"up", "--addr", "127.0.0.1:0", "--data", data, "--instances", "1", "--warm", "0",
		"--job-slots", "1", "--webhook-allow", "127.0.0.1", "--token-ttl", "10m", "--log-level", "debug"}
	env := []string{"DROVER_WEBHOOK_SECRET=" + webhookSecret}
	up := startDrover(t, "up", env, bannerRE, upArgs...)
	api := "http://" + up.base + "/api"

	// uploadToken with the declared size and a webhook.
	var ut tokenAnswer
	code := curl.json(&ut, "-H", `CS-API-Arg: {"webhook":"`+hook.URL+`"}`, fmt.Sprintf("%s/uploadToken/cube.obj/%d", api, size))
	require.Equal(t, http.StatusOK, code, ut.Error)
	require.NotEmpty(t, ut.ItemID)
	tok, err := url.Parse(ut.Token)
	require.NoError(t, err)
	require.Equal(t, up.base, tok.Host)
	exp, err := strconv.ParseInt(tok.Query().Get(signedurl.ParamExpires), 10, 64)
	require.NoError(t, err)
	require.InDelta(t, time.Now().Add(10*time.Minute).Unix(), exp, 60, "token_ttl sets the expiry")

	var item itemData
	curl.json(&item, api+"/data/"+ut.ItemID)
	require.Equal(t, "UPLOADING", item.ConversionState)
	body, code := curl.run("-X", "PUT", api+"/reconvert/"+ut.ItemID)
	require.Equal(t, http.StatusBadRequest, code, "reconvert before the file is there: %s", body)
	require.Contains(t, body, "has not been uploaded")

	// A PUT above the declared size: refused, nothing stored.
	body, code = curl.run("-T", big, ut.Token)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, body)
	require.Contains(t, body, `"ERROR"`)
	body, code = curl.run("-X", "PUT", api+"/reconvert/"+ut.ItemID)
	require.Equal(t, http.StatusBadRequest, code, "the refused PUT stored nothing: %s", body)

	// The file within the size, then a second PUT too large: the first
	// stays.
	body, code = curl.run("-T", cube, ut.Token)
	require.Equal(t, http.StatusOK, code, body)
	body, code = curl.run("-H", "Transfer-Encoding: chunked", "-T", big, ut.Token)
	require.Equal(t, http.StatusRequestEntityTooLarge, code, "streamed without a length: %s", body)

	// Altered tokens: the signature, the path, the limit, the method.
	q := tok.Query()
	sig := q.Get(signedurl.ParamSignature)
	altered := func(mut func(u *url.URL, q url.Values)) string {
		u := *tok
		c := url.Values{}
		for k, v := range q {
			c[k] = append([]string(nil), v...)
		}
		mut(&u, c)
		u.RawQuery = c.Encode()
		return u.String()
	}
	for name, u := range map[string]string{
		"signature": altered(func(_ *url.URL, c url.Values) {
			c.Set(signedurl.ParamSignature, strings.Map(func(r rune) rune {
				if r == 'A' {
					return 'B'
				}
				return 'A'
			}, sig[:1])+sig[1:])
		}),
		"path":    altered(func(u *url.URL, _ url.Values) { u.Path = strings.TrimSuffix(u.Path, ".obj") + ".stl" }),
		"limit":   altered(func(_ *url.URL, c url.Values) { c.Set(signedurl.ParamLimit, "0") }),
		"expires": altered(func(_ *url.URL, c url.Values) { c.Set(signedurl.ParamExpires, strconv.FormatInt(exp+3600, 10)) }),
	} {
		body, code = curl.run("-T", big, u)
		require.Equal(t, http.StatusForbidden, code, "altered %s: %s", name, body)
		require.JSONEq(t, `{"ERROR":"The token is not valid: it was altered, or is used with another method or file."}`, body)
	}
	body, code = curl.run(ut.Token)
	require.Equal(t, http.StatusForbidden, code, "an upload token does not download: %s", body)

	// An expired token, signed with the secret the server kept in its
	// data directory.
	raw, err := os.ReadFile(filepath.Join(data, "url-secret"))
	require.NoError(t, err)
	secret, err := hex.DecodeString(strings.TrimSpace(string(raw)))
	require.NoError(t, err)
	signer, err := signedurl.New(secret)
	require.NoError(t, err)
	expired := *tok
	expired.RawQuery = signer.Query(signedurl.Grant{Method: http.MethodPut, Path: tok.Path,
		Expires: time.Now().Add(-time.Second), Limit: size})
	body, code = curl.run("-T", big, expired.String())
	require.Equal(t, http.StatusForbidden, code, body)
	require.JSONEq(t, `{"ERROR":"The token has expired: ask for a new one."}`, body)

	// reconvert converts what arrived: the cube, not the refused bytes.
	var rec map[string]string
	code = curl.json(&rec, "-X", "PUT", "-H", `CS-API-Arg: {"waitUntilConversionDone":true}`, api+"/reconvert/"+ut.ItemID)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "SUCCESS", rec["conversionState"], rec["detailedError"])
	require.Eventually(t, func() bool { return len(hook.delivered()) == 1 }, 10*time.Second, 50*time.Millisecond,
		"the webhook of the uploadToken call is told")
	require.Equal(t, "SUCCESS", hook.delivered()[0].ConversionState)

	var dt tokenAnswer
	code = curl.json(&dt, api+"/downloadToken/"+ut.ItemID+"/glb")
	require.Equal(t, http.StatusOK, code, dt.Error)
	glb := filepath.Join(dir, "cube.glb")
	body, code = curl.run("-o", glb, dt.Token)
	require.Equal(t, http.StatusOK, code, body)
	info, err := convertpkg.InspectGLBFile(glb)
	require.NoError(t, err)
	require.Equal(t, 12, info.Triangles)
	var none tokenAnswer
	code = curl.json(&none, api+"/downloadToken/"+ut.ItemID+"/scs")
	require.Equal(t, http.StatusNotFound, code)
	require.NotEmpty(t, none.Error)

	// The log names the item, never a token.
	out := up.out.String()
	require.Contains(t, out, "upload token issued")
	require.Contains(t, out, ut.ItemID)
	for _, token := range []string{sig, tok.RawQuery, dt.Token, q.Get(signedurl.ParamSignature)} {
		require.NotContains(t, out, token)
	}
	require.NotContains(t, out, string(raw[:16]), "nor the secret")

	// A restart keeps the secret: the download token still works.
	up.stop(t)
	up = startDrover(t, "up again", env, bannerRE, upArgs...)
	moved := strings.Replace(dt.Token, tok.Host, up.base, 1) // the new listener's port
	// The host is not signed, only the path: the token holds on any
	// address of the server.
	_, code = curl.run("-o", glb, moved)
	require.Equal(t, http.StatusOK, code)
	info, err = convertpkg.InspectGLBFile(glb)
	require.NoError(t, err)
	require.Equal(t, 12, info.Triangles)
}
