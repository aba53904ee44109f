package certreload_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/drover-dev/drover/internal/lib/certreload"
	"github.com/drover-dev/drover/internal/testkit/certtest"
)

// Whatever the files hold, Reload does not panic, keeps the pair it had
// when it fails, and never quotes the key file in its error.
func FuzzPairReload(f *testing.F) {
	ca := certtest.NewCA(f, "fuzz ca")
	good := ca.Server(f)
	f.Add(good.CertPEM, good.KeyPEM)
	f.Add(good.KeyPEM, good.CertPEM)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), good.KeyPEM)
	f.Add(good.CertPEM, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Add([]byte{}, []byte{})
	dir := f.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	good.CopyTo(f, certFile, keyFile)
	pair, err := certreload.LoadPair(certFile, keyFile)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, cert, key []byte) {
		good.CopyTo(t, certFile, keyFile)
		if err := pair.Reload(); err != nil {
			t.Fatal(err)
		}
		before := pair.Certificate()
		if err := os.WriteFile(certFile, cert, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
		err := pair.Reload()
		if err == nil {
			return
		}
		if pair.Certificate() != before {
			t.Fatal("a failed reload replaced the pair")
		}
		// Lines long enough to be key material, not the words of an error.
		for line := range bytes.Lines(key) {
			if line = bytes.TrimSpace(line); len(line) >= 24 && bytes.Contains([]byte(err.Error()), line) {
				t.Fatalf("the error quotes the key file: %v", err)
			}
		}
	})
}
