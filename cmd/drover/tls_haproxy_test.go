package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/client"
	"github.com/drover-dev/drover/internal/testkit/certtest"
	"github.com/drover-dev/drover/internal/testkit/haproxytest"
)

// deploy/haproxy-tls.cfg ends TLS in front of a manager: https and a wss
// session from a page of the proxy's origin go through it.
func TestHAProxyEndsTLS(t *testing.T) {
	t.Parallel()
	ca := certtest.NewCA(t, "drover test haproxy ca")
	cert := ca.Server(t)
	pem := filepath.Join(t.TempDir(), "drover.pem")
	require.NoError(t, os.WriteFile(pem, append(append([]byte{}, cert.CertPEM...), cert.KeyPEM...), 0o600))

	// The proxy forwards others' requests: they are not from the manager's
	// machine, and without other authentication only anonymous callers
	// allowed explicitly get in.
	up := startDrover(t, "up", nil, bannerRE, "up", "--addr", "127.0.0.1:0", "--data", t.TempDir(),
		"--instances", "4", "--warm", "1", "--log-level", "debug", "--auth-allow-anonymous")
	lb := haproxytest.Start(t, haproxytest.Options{Config: "../../deploy/haproxy-tls.cfg", Backends: []string{up.base}, Cert: pem})
	require.Eventually(t, func() bool {
		st, err := lb.Status("managers")
		return err == nil && st["m0"] == "UP"
	}, 15*time.Second, 50*time.Millisecond, "haproxy never saw the manager healthy")

	cfg := trusting(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	resp, err := hc.Get("https://" + lb.Client + "/health")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, cert.Cert.SerialNumber, resp.TLS.PeerCertificates[0].SerialNumber, "haproxy served the test's certificate")

	// A browser page served by the proxy opens a session: its origin is
	// https://lb, the manager sees plain HTTP, and the hosts agree.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ts := &testSession{ev: &events{}}
	s, err := client.Dial(ctx, "wss://"+lb.Client+"/ws", client.Options{
		Dialer: &websocket.Dialer{TLSClientConfig: cfg, HandshakeTimeout: 10 * time.Second},
		Header: http.Header{"Origin": {"https://" + lb.Client}}, OnEvent: ts.ev.on})
	require.NoError(t, err)
	ts.s = s
	t.Cleanup(func() { _ = s.Drop() })
	for range 3 {
		ts.echo(t)
	}
	up.stop(t)
}
