package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/testkit/certtest"
)

var (
	upTLSBanner      = regexp.MustCompile(`WebSocket sessions +wss://([0-9.:]+)/ws`)
	managerTLSBanner = regexp.MustCompile(`farms register at https://([0-9.:]+)/`)
	farmTLSBanner    = regexp.MustCompile(`listening on +https://([0-9.:]+)`)
)

// trusting is a client TLS configuration trusting the CAs.
func trusting(cas ...*certtest.CA) *tls.Config {
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca.Cert)
	}
	return &tls.Config{RootCAs: pool}
}

// servedSerial makes a new connection to base and returns the serial of
// the certificate it was served.
func servedSerial(t *testing.T, base string, cfg *tls.Config) string {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + base + "/health")
	require.NoError(t, err)
	defer resp.Body.Close()
	return resp.TLS.PeerCertificates[0].SerialNumber.String()
}

// openTLSSession opens a session over wss.
func openTLSSession(t *testing.T, base string, cfg *tls.Config) *testSession {
	t.Helper()
	ts := &testSession{ev: &events{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := &websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 10 * time.Second}
	s, err := client.Dial(ctx, "wss://"+base+"/ws", client.Options{Dialer: d, OnEvent: ts.ev.on})
	require.NoError(t, err)
	ts.s = s
	t.Cleanup(func() { _ = s.Drop() })
	return ts
}

// waitLog waits until the process's output holds sub n times.
func (p *droverProc) waitLog(t *testing.T, sub string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Count(p.out.String(), sub) >= n },
		15*time.Second, 20*time.Millisecond, "%s never logged %q %d times", p.name, sub, n)
}

// A SIGHUP with a new certificate and a new JWT secret takes effect for
// new connections while a running wss session goes on; a bad file keeps
// the certificate before.
func TestUpTLSReloadOnHangup(t *testing.T) {
	t.Parallel()
	ca1, ca2 := certtest.NewCA(t, "drover test ca one"), certtest.NewCA(t, "drover test ca two")
	first, second := ca1.Server(t), ca2.Server(t)
	secret1, secret2 := "tls-jwt-secret-one-7c1e09b2a4d3f586", "tls-jwt-secret-two-5e2b8d0c1f9a7364"
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	secretFile := filepath.Join(dir, "jwt.secret")
	first.CopyTo(t, certFile, keyFile)
	require.NoError(t, os.WriteFile(secretFile, []byte(secret1), 0o600))
	up := startDrover(t, "up", nil, upTLSBanner, "up", "--addr", "127.0.0.1:0", "--data", t.TempDir(),
		"--instances", "4", "--warm", "1", "--tls-cert", certFile, "--tls-key", keyFile,
		"--auth-jwt-secret", secretFile, "--log-level", "debug")
	up.waitLog(t, "dashboard           https://"+up.base+"/ui/", 1)
	cfg := trusting(ca1, ca2)
	require.Equal(t, first.Cert.SerialNumber.String(), servedSerial(t, up.base, cfg))
	mint := func(secret string) string {
		s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "dana",
			"exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(secret))
		require.NoError(t, err)
		return s
	}
	jwt1, jwt2 := mint(secret1), mint(secret2)

	// Plain HTTP on the TLS port gets no answer of drover's.
	resp, err := http.Get("http://" + up.base + "/health")
	if err == nil {
		resp.Body.Close()
		require.Equal(t, http.StatusBadRequest, resp.StatusCode, "Go's TLS server answers plain HTTP with 400")
	}

	s, err := dialTLSSession(t, up.base, cfg, jwt1)
	require.NoError(t, err)
	s.echo(t)

	second.CopyTo(t, certFile, keyFile)
	require.NoError(t, os.WriteFile(secretFile, []byte(secret2), 0o600))
	require.NoError(t, up.cmd.Process.Signal(syscall.SIGHUP))
	up.waitLog(t, `msg=reloaded component=reload what="tls certificate"`, 1)
	up.waitLog(t, `msg=reloaded component=reload what="auth keys"`, 1)
	s.echo(t) // the session made with the old certificate and token goes on
	require.Equal(t, second.Cert.SerialNumber.String(), servedSerial(t, up.base, cfg))
	fresh, err := dialTLSSession(t, up.base, cfg, jwt2)
	require.NoError(t, err)
	fresh.echo(t)
	_, err = dialTLSSession(t, up.base, cfg, jwt1)
	require.ErrorContains(t, err, "401", "the old secret's tokens are refused")

	// A broken certificate file: the error is logged with the file's name,
	// and the certificate loaded before is served.
	require.NoError(t, os.WriteFile(certFile, []byte("-----BEGIN GARBAGE-----\n"), 0o600))
	require.NoError(t, up.cmd.Process.Signal(syscall.SIGHUP))
	up.waitLog(t, "reload failed; keeping what was loaded before", 1)
	require.Contains(t, up.out.String(), certFile)
	require.Equal(t, second.Cert.SerialNumber.String(), servedSerial(t, up.base, cfg))
	s.echo(t)

	// Same with a key that belongs to another certificate.
	require.NoError(t, os.WriteFile(certFile, first.CertPEM, 0o600))
	require.NoError(t, up.cmd.Process.Signal(syscall.SIGHUP))
	up.waitLog(t, "reload failed; keeping what was loaded before", 2)
	require.Equal(t, second.Cert.SerialNumber.String(), servedSerial(t, up.base, cfg))
	s.echo(t)

	out := up.out.String()
	for _, key := range [][]byte{first.KeyPEM, second.KeyPEM} {
		require.NotContains(t, out, strings.Split(string(key), "\n")[1], "a key was logged")
	}
	for _, secret := range []string{secret1, secret2, jwt1, jwt2} {
		require.NotContains(t, out, secret)
	}
	up.stop(t)
}

// dialTLSSession opens a session over wss with a bearer token.
func dialTLSSession(t *testing.T, base string, cfg *tls.Config, token string) (*testSession, error) {
	ts := &testSession{ev: &events{}}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	d := &websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 10 * time.Second}
	s, err := client.Dial(ctx, "wss://"+base+"/ws", client.Options{Dialer: d, OnEvent: ts.ev.on,
		Header: http.Header{"Authorization": {"Bearer " + token}}})
	if err != nil {
		return nil, err
	}
	ts.s = s
	t.Cleanup(func() { _ = s.Drop() })
	return ts, nil
}

// A manager with --farm-ca refuses a farm without a client certificate of
// that CA, token or not; a farm with one registers, and sessions run on it
// over wss both ways.
func TestClusterMutualTLS(t *testing.T) {
	t.Parallel()
	managerCA, farmCA := certtest.NewCA(t, "drover test managers"), certtest.NewCA(t, "drover test farms")
	mcert := managerCA.Server(t)
	m := startDrover(t, "manager", nil, managerTLSBanner, "manager", "--addr", "127.0.0.1:0",
		"--farm-token", farmToken, "--admin-token", adminToken, "--data", t.TempDir(), "--log-level", "debug",
		"--tls-cert", mcert.CertFile, "--tls-key", mcert.KeyFile, "--farm-ca", farmCA.File)
	m.waitLog(t, "WebSocket sessions  wss://"+m.base+"/ws", 1)
	cfg := trusting(managerCA)

	farmArgs := func(id string, extra ...string) []string {
		fcert := farmCA.Server(t)
		return append([]string{"farm", "--manager", "https://" + m.base, "--token", farmToken,
			"--addr", "127.0.0.1:0", "--id", id, "--instances", "2", "--state-dir", t.TempDir(), "--log-level", "debug", "--max-drain", "1s",
			"--tls-cert", fcert.CertFile, "--tls-key", fcert.KeyFile, "--manager-ca", managerCA.File}, extra...)
	}
	// Without a client certificate: refused although the token is right.
	bare := startDrover(t, "farm-bare", nil, farmTLSBanner, farmArgs("farm-bare")...)
	m.waitLog(t, "farm API request without a verified client certificate", 1)
	bare.waitLog(t, "a verified client certificate is required", 1)
	// With one of another CA: the handshake fails.
	stranger := managerCA.Client(t, "stranger")
	foreign := startDrover(t, "farm-foreign", nil, farmTLSBanner,
		farmArgs("farm-foreign", "--tls-client-cert", stranger.CertFile, "--tls-client-key", stranger.KeyFile)...)
	foreign.waitLog(t, "certificate", 1)
	require.Empty(t, tlsStatus(t, m.base, cfg).Farms, "nothing registered")

	// With one: registered, and a session runs on it.
	cc := farmCA.Client(t, "farm-good")
	good := startDrover(t, "farm-good", nil, farmTLSBanner,
		farmArgs("farm-good", "--tls-client-cert", cc.CertFile, "--tls-client-key", cc.KeyFile)...)
	good.waitLog(t, "advertised as       https://", 1) // the banner's later lines may still be in the pipe
	require.Eventually(t, func() bool { return len(tlsStatus(t, m.base, cfg).Farms) == 1 }, 15*time.Second, 50*time.Millisecond)
	st := tlsStatus(t, m.base, cfg)
	require.Equal(t, "farm-good", st.Farms[0].ID)
	s := openTLSSession(t, m.base, cfg)
	s.echo(t)
	busy := 0
	for _, in := range tlsStatus(t, m.base, cfg).Instances {
		if in.Session != "" {
			require.Equal(t, "farm-good", in.Farm)
			busy++
		}
	}
	require.Equal(t, 1, busy, "the session has an instance of farm-good")

	// The farm and the manager re-read their files on SIGHUP; the session
	// goes on.
	require.NoError(t, good.cmd.Process.Signal(syscall.SIGHUP))
	for _, what := range []string{`"tls certificate"`, `"manager CA"`, `"tls client certificate"`} {
		good.waitLog(t, "msg=reloaded component=reload what="+what, 1)
	}
	require.NoError(t, m.cmd.Process.Signal(syscall.SIGHUP))
	for _, what := range []string{`"tls certificate"`, `"farm CA"`} {
		m.waitLog(t, "msg=reloaded component=reload what="+what, 1)
	}
	s.echo(t)

	// The job API takes the same guard: the token alone is not enough.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodPost, "https://"+m.base+"/api/v1/jobs/lease", strings.NewReader(`{}`))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+farmToken)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusForbidden, resp.StatusCode)

	good.stop(t)
	bare.stop(t)
	foreign.stop(t)
	m.stop(t)
	requireNoSecrets(t, m, good, bare)
}

func tlsStatus(t *testing.T, base string, cfg *tls.Config) clusterStatus {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	req, err := http.NewRequest(http.MethodGet, "https://"+base+"/status", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := hc.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var st clusterStatus
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}
