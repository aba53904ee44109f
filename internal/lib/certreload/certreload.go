// Package certreload serves TLS certificates read from files and re-read
// on demand (SIGHUP): a certificate and key pair (Pair) for a server's
// GetCertificate or a client's GetClientCertificate, and a CA bundle
// (Pool) that verifies the other side. Reload swaps atomically and only
// when the new files are good, so that a half-written or wrong file never
// replaces a working certificate; connections already established keep
// the certificate they were made with.
//
// It does not watch files (the caller decides when to reload) and does not
// build whole tls.Configs beyond ServerConfig and ClientConfig, the two
// shapes drover uses.
package certreload

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
)

// Pair is a certificate chain and its private key, read from two PEM
// files. It is safe for concurrent use.
type Pair struct {
	certFile, keyFile string
	mu                sync.Mutex // serialises Reload
	cur               atomic.Pointer[tls.Certificate]
}

// LoadPair reads a certificate chain (leaf first) from certFile and its
// private key from keyFile.
func LoadPair(certFile, keyFile string) (*Pair, error) {
	p := &Pair{certFile: certFile, keyFile: keyFile}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload reads the files again and serves the new pair from the next
// handshake on. If they cannot be read or do not make a pair, the old
// one stays and the error names the file and what is wrong; it never holds
// key material.
func (p *Pair) Reload() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	certPEM, err := os.ReadFile(p.certFile)
	if err != nil {
		return fmt.Errorf("certificate file: %w", err)
	}
	keyPEM, err := os.ReadFile(p.keyFile)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	if !hasBlock(certPEM, "CERTIFICATE") {
		return fmt.Errorf("certificate file %s: no PEM CERTIFICATE block", p.certFile)
	}
	if !hasBlock(keyPEM, "") {
		return fmt.Errorf("key file %s: no PEM block", p.keyFile)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The errors of crypto/tls describe the inputs, never quote them.
		return fmt.Errorf("certificate file %s with key file %s: %w", p.certFile, p.keyFile, err)
	}
	p.cur.Store(&cert)
	return nil
}

// Certificate is the pair loaded last.
func (p *Pair) Certificate() *tls.Certificate { return p.cur.Load() }

// GetCertificate is tls.Config.GetCertificate: the pair loaded last.
func (p *Pair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return p.cur.Load(), nil
}

// GetClientCertificate is tls.Config.GetClientCertificate: the pair loaded
// last, whatever the server asks for (the server decides whether it
// trusts it).
func (p *Pair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return p.cur.Load(), nil
}

// hasBlock reports whether data holds a PEM block of the type (any type
// for ""), so that a file of the wrong kind gets an error naming it.
func hasBlock(data []byte, typ string) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if typ == "" || b.Type == typ {
			return true
		}
	}
}

// Pool is a bundle of CA certificates read from a PEM file. It is safe for
// concurrent use.
type Pool struct {
	file string
	mu   sync.Mutex // serialises Reload
	cur  atomic.Pointer[x509.CertPool]
}

// LoadPool reads the CA certificates of file.
func LoadPool(file string) (*Pool, error) {
	p := &Pool{file: file}
	if err := p.Reload(); err != nil {
		return nil, err
	}
	return p, nil
}

// Reload reads the file again; on an error the old pool stays.
func (p *Pool) Reload() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := os.ReadFile(p.file)
	if err != nil {
		return fmt.Errorf("CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return fmt.Errorf("CA file %s: no PEM certificate in it", p.file)
	}
	p.cur.Store(pool)
	return nil
}

// CertPool is the pool loaded last.
func (p *Pool) CertPool() *x509.CertPool { return p.cur.Load() }

// ServerConfig is a server's TLS configuration serving pair. With
// clientCAs, a client certificate is asked for and, when given, verified
// against the pool loaded last (tls.VerifyClientCertIfGiven): the routes
// that need one check Verified. HTTP/1.1 only, which WebSockets need.
func ServerConfig(pair *Pair, clientCAs *Pool) *tls.Config {
	base := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: pair.GetCertificate,
		NextProtos:     []string{"http/1.1"},
	}
	if clientCAs == nil {
		return base
	}
	base.ClientAuth = tls.VerifyClientCertIfGiven
	base.ClientCAs = clientCAs.CertPool()
	cfg := base.Clone()
	// Each handshake sees the pool as it is now.
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := base.Clone()
		c.ClientCAs = clientCAs.CertPool()
		return c, nil
	}
	return cfg
}

// ClientConfig is a client's TLS configuration: the server is verified
// against roots when given (else the system's roots), and pair, when
// given, is presented as the client certificate. Both are read as they
// are at each handshake.
func ClientConfig(roots *Pool, pair *Pair) *tls.Config {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if pair != nil {
		cfg.GetClientCertificate = pair.GetClientCertificate
	}
	if roots != nil {
		// RootCAs is read at each handshake only through a callback: the
		// standard verification runs with the pool loaded last.
		cfg.InsecureSkipVerify = true // replaced by VerifyConnection below
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			return verifyServer(cs, roots.CertPool())
		}
	}
	return cfg
}

// verifyServer is what crypto/tls does for a client with RootCAs set:
// the chain to a root of pool, for the server name asked for.
func verifyServer(cs tls.ConnectionState, pool *x509.CertPool) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("tls: the server sent no certificate")
	}
	opts := x509.VerifyOptions{Roots: pool, DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
	for _, c := range cs.PeerCertificates[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(opts)
	return err
}

// Verified reports whether the peer of a server-side connection presented
// a certificate that verified against the client CAs.
func Verified(cs *tls.ConnectionState) bool {
	return cs != nil && len(cs.VerifiedChains) > 0
}
