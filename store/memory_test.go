package store_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/drover-dev/drover/store"
	"github.com/drover-dev/drover/store/storetest"
)

func TestMemory(t *testing.T) {
	// After the subtests, which run in parallel: no subscription outlives
	// its context or its store.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	storetest.Run(t, func(*testing.T) store.Store { return store.NewMemory() })
}
