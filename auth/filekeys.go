package auth

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// FileKeyStore keeps API keys in a JSON file, readable by its owner only.
// Writes go to a temporary file renamed over the old one, so a reader
// never sees half a file. Another process (drover keys create) may write
// the file too: a change of its modification time or size is read on the
// next call, and Reload reads it at once. Writes by two processes at the
// same moment may lose one; managers that share keys use a RedisKeyStore.
type FileKeyStore struct {
	path string

	mu    sync.Mutex
	keys  []storedKey
	mtime time.Time
	size  int64
}

var _ KeyStore = (*FileKeyStore)(nil)

// storedKey is a key as the file holds it.
type storedKey struct {
	APIKey
	Hash string `json:"hash"` // hex SHA-256 of the secret
}

type keyFile struct {
	Keys []storedKey `json:"keys"`
}

// NewFileKeyStore opens the store in path. A missing file is an empty
// store; it is created by the first Create.
func NewFileKeyStore(path string) (*FileKeyStore, error) {
	s := &FileKeyStore{path: path}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Path is the file s keeps keys in.
func (s *FileKeyStore) Path() string { return s.path }

// Reload reads the file again. On an error s keeps what it had.
func (s *FileKeyStore) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.read()
}

// read loads the file; s.mu is held.
func (s *FileKeyStore) read() error {
	fi, err := os.Stat(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		s.keys, s.mtime, s.size = nil, time.Time{}, 0
		return nil
	}
	if err != nil {
		return fmt.Errorf("auth: api key file: %w", err)
	}
	b, err := readKeyFile(s.path)
	if err != nil {
		return fmt.Errorf("auth: api key file: %w", err)
	}
	var f keyFile
	if err := json.Unmarshal(b, &f); err != nil {
		return fmt.Errorf("auth: api key file %s: %w", s.path, err)
	}
	for i, k := range f.Keys {
		if !validID(k.ID) || len(k.Hash) != 64 {
			return fmt.Errorf("auth: api key file %s: key %d has no valid id or hash", s.path, i)
		}
	}
	s.keys, s.mtime, s.size = f.Keys, fi.ModTime(), fi.Size()
	return nil
}

// fresh re-reads the file when it changed since it was read; s.mu is held.
func (s *FileKeyStore) fresh() error {
	fi, err := os.Stat(s.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if s.size == 0 && s.mtime.IsZero() {
			return nil
		}
	case err != nil:
		return fmt.Errorf("auth: api key file: %w", err)
	case fi.ModTime().Equal(s.mtime) && fi.Size() == s.size:
		return nil
	}
	return s.read()
}

// write stores keys in the file; s.mu is held.
func (s *FileKeyStore) write(keys []storedKey) error {
	b, err := json.MarshalIndent(keyFile{Keys: keys}, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.path), "."+filepath.Base(s.path)+".*")
	if err != nil {
		return fmt.Errorf("auth: api key file: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	// CreateTemp makes the file 0600 already; Chmod says so, and holds
	// under any umask.
	err = errors.Join(tmp.Chmod(0o600), writeAll(tmp, b), tmp.Sync(), tmp.Close())
	if err == nil {
		err = os.Rename(tmp.Name(), s.path)
	}
	if err != nil {
		return fmt.Errorf("auth: api key file %s: %w", s.path, err)
	}
	s.keys = keys
	if fi, err := os.Stat(s.path); err == nil {
		s.mtime, s.size = fi.ModTime(), fi.Size()
	}
	return nil
}

func writeAll(f *os.File, b []byte) error {
	_, err := f.Write(append(b, '\n'))
	return err
}

// Create implements KeyStore.
func (s *FileKeyStore) Create(ctx context.Context, k APIKey) (string, APIKey, error) {
	k, secret, hash, err := prepareKey(k)
	if err != nil {
		return "", APIKey{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fresh(); err != nil {
		return "", APIKey{}, err
	}
	keys := append(slices.Clip(s.keys), storedKey{APIKey: k, Hash: hash})
	if err := s.write(keys); err != nil {
		return "", APIKey{}, err
	}
	return secret, cloneKey(k), nil
}

// List implements KeyStore.
func (s *FileKeyStore) List(ctx context.Context) ([]APIKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fresh(); err != nil {
		return nil, err
	}
	out := make([]APIKey, 0, len(s.keys))
	for _, k := range s.keys {
		out = append(out, cloneKey(k.APIKey))
	}
	sortKeys(out)
	return out, nil
}

// Revoke implements KeyStore.
func (s *FileKeyStore) Revoke(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.fresh(); err != nil {
		return err
	}
	i := slices.IndexFunc(s.keys, func(k storedKey) bool { return k.ID == id })
	if i < 0 {
		return ErrUnknownKey
	}
	if s.keys[i].Revoked {
		return nil
	}
	keys := slices.Clone(s.keys)
	keys[i].Revoked = true
	return s.write(keys)
}

// Lookup implements KeyStore.
func (s *FileKeyStore) Lookup(ctx context.Context, secret string) (APIKey, error) {
	id, ok := secretID(secret)
	if !ok {
		return APIKey{}, ErrUnknownKey
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// A file that cannot be read now (being replaced by hand, say)
	// leaves the keys read before in use; Reload reports the error.
	_ = s.fresh()
	i := slices.IndexFunc(s.keys, func(k storedKey) bool { return k.ID == id })
	if i < 0 || !sameHash(s.keys[i].Hash, hashSecret(secret)) || s.keys[i].Revoked {
		return APIKey{}, ErrUnknownKey
	}
	return cloneKey(s.keys[i].APIKey), nil
}

func cloneKey(k APIKey) APIKey {
	k.Roles = slices.Clone(k.Roles)
	return k
}

func sortKeys(keys []APIKey) {
	slices.SortFunc(keys, func(a, b APIKey) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.ID, b.ID))
	})
}
