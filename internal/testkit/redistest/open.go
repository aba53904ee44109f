package redistest

import (
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
)

var prefixes atomic.Int64

// Prefix returns a key prefix no other call in the test binary returns
// ("test1:", "test2:", …), so that tests sharing a server share no keys.
func Prefix() string { return fmt.Sprintf("test%d:", prefixes.Add(1)) }

// Open returns what open makes with tb's context, failing tb on an error,
// and closes it when tb ends.
func Open[T io.Closer](tb testing.TB, open func(context.Context) (T, error)) T {
	tb.Helper()
	v, err := open(tb.Context())
	if err != nil {
		tb.Fatalf("redistest: open: %v", err)
	}
	tb.Cleanup(func() { _ = v.Close() })
	return v
}
