package certreload_test

import (
	"bufio"
	"crypto/tls"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/certreload"
	"github.com/drover-dev/drover/internal/testkit/certtest"
)

// echoServer serves cfg on loopback, echoing lines, and reports for each
// connection whether its client certificate verified.
func echoServer(t *testing.T, cfg *tls.Config) (addr string, verified chan bool) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	require.NoError(t, err)
	verified = make(chan bool, 16)
	var wg sync.WaitGroup
	t.Cleanup(func() { _ = ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				tc := c.(*tls.Conn)
				if tc.Handshake() != nil {
					return
				}
				cs := tc.ConnectionState()
				verified <- certreload.Verified(&cs)
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String(), verified
}

func dial(t *testing.T, addr string, cfg *tls.Config) *tls.Conn {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func roundTrip(t *testing.T, c *tls.Conn) {
	t.Helper()
	_, err := c.Write([]byte("ping\n"))
	require.NoError(t, err)
	line, err := bufio.NewReader(c).ReadString('\n')
	require.NoError(t, err)
	require.Equal(t, "ping\n", line)
}

func serial(c *tls.Conn) string { return c.ConnectionState().PeerCertificates[0].SerialNumber.String() }

func TestPairReloadKeepsConnectionsAndServesTheNewCertificate(t *testing.T) {
	ca1, ca2 := certtest.NewCA(t, "ca one"), certtest.NewCA(t, "ca two")
	first, second := ca1.Server(t), ca2.Server(t)
	dir := t.TempDir()
	certFile, keyFile := dir+"/cert.pem", dir+"/key.pem"
	first.CopyTo(t, certFile, keyFile)
	pair, err := certreload.LoadPair(certFile, keyFile)
	require.NoError(t, err)
	addr, _ := echoServer(t, certreload.ServerConfig(pair, nil))

	// The client trusts both CAs, in one bundle.
	bundle := dir + "/cas.pem"
	require.NoError(t, os.WriteFile(bundle, append(mustRead(t, ca1.File), mustRead(t, ca2.File)...), 0o600))
	roots, err := certreload.LoadPool(bundle)
	require.NoError(t, err)
	client := certreload.ClientConfig(roots, nil)

	old := dial(t, addr, client)
	roundTrip(t, old)
	require.Equal(t, first.Cert.SerialNumber.String(), serial(old))

	second.CopyTo(t, certFile, keyFile)
	require.NoError(t, pair.Reload())
	roundTrip(t, old) // the connection made before goes on
	fresh := dial(t, addr, client)
	roundTrip(t, fresh)
	require.Equal(t, second.Cert.SerialNumber.String(), serial(fresh))
}

func TestPairReloadOfABadFileKeepsTheOldPair(t *testing.T) {
	ca := certtest.NewCA(t, "ca")
	good, other := ca.Server(t), ca.Server(t)
	dir := t.TempDir()
	certFile, keyFile := dir+"/cert.pem", dir+"/key.pem"
	good.CopyTo(t, certFile, keyFile)
	pair, err := certreload.LoadPair(certFile, keyFile)
	require.NoError(t, err)

	for _, tc := range []struct {
		name      string
		cert, key []byte
		wantInErr string
	}{
		{"garbage certificate", []byte("not a certificate"), good.KeyPEM, certFile},
		{"key in the certificate file", good.KeyPEM, good.KeyPEM, certFile},
		{"empty key", good.CertPEM, nil, keyFile},
		{"key of another certificate", good.CertPEM, other.KeyPEM, "private key does not match"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			require.NoError(t, os.WriteFile(certFile, tc.cert, 0o600))
			require.NoError(t, os.WriteFile(keyFile, tc.key, 0o600))
			err := pair.Reload()
			require.ErrorContains(t, err, tc.wantInErr)
			for _, key := range [][]byte{good.KeyPEM, other.KeyPEM} {
				body := strings.Split(string(key), "\n")[1] // a line of the key's base64
				require.NotContains(t, err.Error(), body)
			}
			require.Equal(t, good.Cert.SerialNumber, pair.Certificate().Leaf.SerialNumber)
		})
	}
	require.NoError(t, os.Remove(certFile))
	require.ErrorContains(t, pair.Reload(), "certificate file")
	require.Equal(t, good.Cert.SerialNumber, pair.Certificate().Leaf.SerialNumber)

	_, err = certreload.LoadPair(certFile, keyFile)
	require.Error(t, err, "a missing file fails the first load")
}

func TestClientCAsReload(t *testing.T) {
	ca1, ca2 := certtest.NewCA(t, "ca one"), certtest.NewCA(t, "ca two")
	srv := ca1.Server(t)
	pair, err := certreload.LoadPair(srv.CertFile, srv.KeyFile)
	require.NoError(t, err)
	dir := t.TempDir()
	clientCAFile := dir + "/clients.pem"
	require.NoError(t, os.WriteFile(clientCAFile, mustRead(t, ca1.File), 0o600))
	clientCAs, err := certreload.LoadPool(clientCAFile)
	require.NoError(t, err)
	addr, verified := echoServer(t, certreload.ServerConfig(pair, clientCAs))
	roots, err := certreload.LoadPool(ca1.File)
	require.NoError(t, err)

	// Without a client certificate: admitted, not verified.
	roundTrip(t, dial(t, addr, certreload.ClientConfig(roots, nil)))
	require.False(t, <-verified)

	c1 := ca1.Client(t, "farm one")
	p1, err := certreload.LoadPair(c1.CertFile, c1.KeyFile)
	require.NoError(t, err)
	roundTrip(t, dial(t, addr, certreload.ClientConfig(roots, p1)))
	require.True(t, <-verified)

	// A certificate of a CA the server does not trust fails the handshake.
	c2 := ca2.Client(t, "farm two")
	p2, err := certreload.LoadPair(c2.CertFile, c2.KeyFile)
	require.NoError(t, err)
	requireRefused(t, addr, certreload.ClientConfig(roots, p2))

	// Until the server's client CAs are reloaded with that CA.
	require.NoError(t, os.WriteFile(clientCAFile, mustRead(t, ca2.File), 0o600))
	require.NoError(t, clientCAs.Reload())
	roundTrip(t, dial(t, addr, certreload.ClientConfig(roots, p2)))
	require.True(t, <-verified)

	require.NoError(t, os.WriteFile(clientCAFile, []byte("junk"), 0o600))
	require.ErrorContains(t, clientCAs.Reload(), clientCAFile)
	roundTrip(t, dial(t, addr, certreload.ClientConfig(roots, p2)))
	require.True(t, <-verified, "a bad CA file keeps the pool before it")
}

func TestClientRefusesAServerOfAnotherCA(t *testing.T) {
	ca1, ca2 := certtest.NewCA(t, "ca one"), certtest.NewCA(t, "ca two")
	srv := ca1.Server(t)
	pair, err := certreload.LoadPair(srv.CertFile, srv.KeyFile)
	require.NoError(t, err)
	addr, _ := echoServer(t, certreload.ServerConfig(pair, nil))
	roots, err := certreload.LoadPool(ca2.File)
	require.NoError(t, err)
	cfg := certreload.ClientConfig(roots, nil)
	cfg.ServerName = "127.0.0.1"
	_, err = tls.Dial("tcp", addr, cfg)
	require.ErrorContains(t, err, "certificate signed by unknown authority")

	// The right CA, the wrong name.
	roots, err = certreload.LoadPool(ca1.File)
	require.NoError(t, err)
	cfg = certreload.ClientConfig(roots, nil)
	cfg.ServerName = "other.example"
	_, err = tls.Dial("tcp", addr, cfg)
	require.ErrorContains(t, err, "other.example")
}

// requireRefused dials and expects the handshake, or the first exchange
// after it (TLS 1.3 reports a refused client certificate late), to fail.
func requireRefused(t *testing.T, addr string, cfg *tls.Config) {
	t.Helper()
	cfg = cfg.Clone()
	cfg.ServerName = "127.0.0.1"
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return
	}
	defer c.Close()
	_, err = c.Write([]byte("ping\n"))
	if err == nil {
		_, err = bufio.NewReader(c).ReadString('\n')
	}
	require.Error(t, err)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return b
}
