// Package storage keeps files by key: the uploads, unpacked inputs and
// outputs of conversion items, and whatever else drover stores as whole
// objects. A key is a slash-separated relative path such as
// "items/<id>/original/<name>"; Storage has no directories, only keys and
// prefixes, as object stores have.
//
// FS keeps objects as files under a data directory (`drover up --data
// DIR`): every Put streams into a temporary file beside the target, syncs
// it and renames it into place, so a reader sees the old object or the
// new one, never part of one; every path goes through an os.Root, so no
// key and no symbolic link planted in the directory reaches a file outside
// it. S3 keeps objects in a bucket of an S3-compatible server, behind the
// same interface, and passes the same suite (storagetest.Run).
//
// Backends may offer more, found by type assertion: Presigner (short-lived
// URLs that let farms and browsers move bytes without credentials, for
// S3), Copier (copies made by the server, for S3), LocalPather (the file
// itself, for converters on the same host, for FS) and io.Closer.
//
// The package owns keys, their validation and the bytes behind them. It
// does not own what keys mean (conversion/items lays items out), upload
// size limits (the API counts what it reads), HTTP (Open returns what
// http.ServeContent needs) or retention.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"
)

// Sentinel errors. Implementations wrap them; test with errors.Is.
var (
	// ErrNotFound: no object of that key.
	ErrNotFound = errors.New("storage: object not found")
	// ErrInvalidKey: the key or prefix breaks the rules of ValidateKey.
	ErrInvalidKey = errors.New("storage: invalid key")
)

// Storage keeps objects by key. Implementations are safe for concurrent
// use. Every method validates its key (ErrInvalidKey) before anything
// else.
type Storage interface {
	// Put stores what r yields under key, replacing any object there, and
	// returns its size. It streams: r is read in small pieces and never
	// held whole. The object appears whole when Put returns nil, and not
	// at all (an object it replaces stays as it was) when Put fails, also
	// when r fails or ctx ends midway.
	Put(ctx context.Context, key string, r io.Reader) (int64, error)
	// Open opens an object for reading, as http.ServeContent wants it:
	// seekable, with its size and modification time. The caller closes
	// it. An object replaced by a Put while it is open goes on reading the
	// old bytes or fails, never mixing old and new.
	Open(ctx context.Context, key string) (Object, error)
	// Stat returns an object's size and modification time.
	Stat(ctx context.Context, key string) (Info, error)
	// List returns the objects whose keys begin with prefix (a string
	// prefix, not only whole path elements: "items/ab" matches
	// "items/abc/x"), sorted by key. "" lists everything.
	List(ctx context.Context, prefix string) ([]Info, error)
	// Delete removes an object. A key with no object is not an error:
	// deletes are idempotent, as on object stores.
	Delete(ctx context.Context, key string) error
	// DeletePrefix removes every object whose key begins with prefix and
	// returns how many it removed. The empty prefix is refused
	// (ErrInvalidKey): nothing removes everything by accident.
	DeletePrefix(ctx context.Context, prefix string) (int, error)
}

// Info describes an object.
type Info struct {
	Key     string    `json:"key"`
	Size    int64     `json:"size"`
	ModTime time.Time `json:"modTime"`
}

// Object is an open object: read it, seek in it (http.ServeContent serves
// ranges that way), close it.
type Object interface {
	io.ReadSeekCloser
	// Info is the object's key, size and modification time when it was
	// opened.
	Info() Info
}

// Presigner is the capability of storage that farms and browsers reach
// directly (S3): a URL that allows one GET or PUT of one key until ttl
// has passed, so that whoever holds it needs no credentials.
type Presigner interface {
	PresignGet(ctx context.Context, key string, ttl time.Duration) (string, error)
	PresignPut(ctx context.Context, key string, ttl time.Duration) (string, error)
}

// Copier is the capability of storage that copies an object without its
// bytes passing through drover (S3's server-side copy). Copy replaces
// any object at to, as Put does; ErrNotFound if from has none.
type Copier interface {
	Copy(ctx context.Context, from, to string) error
}

// LocalPather is the capability of storage whose objects are files on this
// host (FS): converters running here read them in place instead of
// downloading a copy.
type LocalPather interface {
	// LocalPath returns the path of key's file. ErrNotFound if there is
	// none. The path is for reading; writes go through Put.
	LocalPath(key string) (string, error)
}

const (
	// MaxKeyLen is the longest key, in bytes (S3's limit).
	MaxKeyLen = 1024
	// MaxElemLen is the longest path element of a key, in bytes (the
	// longest file name of common filesystems).
	MaxElemLen = 255
	// TempPrefix starts the names of the temporary files FS writes before
	// it renames them into place. Key elements may not start with it, so
	// that no key names a temporary file and List can leave them out.
	TempPrefix = ".drover-tmp-"
)

// ValidateKey returns nil if key is a valid key, or an error wrapping
// ErrInvalidKey. A key is a relative, slash-separated path of at most
// MaxKeyLen bytes of UTF-8: no leading or trailing slash, no empty, "." or
// ".." element, no element longer than MaxElemLen or starting with
// TempPrefix, no backslash, NUL or other control character. Such a key is
// a local path on every platform (filepath.IsLocal), so joined to a
// directory it names a file below it.
func ValidateKey(key string) error {
	if err := validateKey(key); err != "" {
		return fmt.Errorf("%w: %q %s", ErrInvalidKey, truncate(key), err)
	}
	return nil
}

func validateKey(key string) string {
	switch {
	case key == "":
		return "is empty"
	case len(key) > MaxKeyLen:
		return fmt.Sprintf("is longer than %d bytes", MaxKeyLen)
	case !utf8.ValidString(key):
		return "is not UTF-8"
	case strings.ContainsFunc(key, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }):
		return "has a backslash or a control character"
	}
	for elem := range strings.SplitSeq(key, "/") {
		switch {
		case elem == "":
			return "has an empty path element (a leading, trailing or double slash)"
		case elem == "." || elem == "..":
			return "has a . or .. path element"
		case len(elem) > MaxElemLen:
			return fmt.Sprintf("has a path element longer than %d bytes", MaxElemLen)
		case strings.HasPrefix(elem, TempPrefix):
			return "has a path element starting with the reserved " + TempPrefix
		}
	}
	// The rules above make every key local on Unix; this also refuses
	// what is not local elsewhere (Windows device names, drive letters).
	if !filepath.IsLocal(filepath.FromSlash(key)) {
		return "is not a local path"
	}
	return ""
}

// ValidatePrefix returns nil if prefix is "" or a key, possibly with one
// trailing slash, and an error wrapping ErrInvalidKey otherwise.
func ValidatePrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	if err := validateKey(strings.TrimSuffix(prefix, "/")); err != "" {
		return fmt.Errorf("%w: prefix %q %s", ErrInvalidKey, truncate(prefix), err)
	}
	return nil
}

// truncate shortens what an error message quotes of a key.
func truncate(s string) string {
	const most = 200
	if len(s) <= most {
		return s
	}
	return s[:most] + "…"
}
