package signedurl

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// secretLen is the size of a generated secret, in bytes.
const secretLen = 32

// LoadOrCreateSecret returns the secret kept in the file at path, or, when
// there is none, generates one and keeps it there (mode 0600), so that
// signed URLs stay valid across restarts. Several processes sharing the
// file's directory that start at once agree on one secret: the file
// appears whole or not at all, and the first one written wins.
func LoadOrCreateSecret(path string) ([]byte, error) {
	if b, err := readSecret(path); !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	var raw [secretLen]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return nil, fmt.Errorf("signedurl: generate a secret: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".url-secret-*")
	if err != nil {
		return nil, fmt.Errorf("signedurl: keep the secret: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(raw[:]) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("signedurl: keep the secret: %w", err)
	}
	// Link fails when the file exists: another process was first, and its
	// secret is the one.
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("signedurl: keep the secret: %w", err)
	}
	return readSecret(path)
}

func readSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(secret) < MinSecretLen {
		// Neither the bytes nor the error's detail: they are the secret.
		return nil, fmt.Errorf("signedurl: the secret file %s does not hold a hex secret of %d bytes or more", path, MinSecretLen)
	}
	return secret, nil
}
