package queue_test

import (
	"testing"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/drover-dev/drover/conversion/queue"
	"github.com/drover-dev/drover/conversion/queue/queuetest"
)

func TestMemory(t *testing.T) {
	// After the subtests, which run in parallel: no waiting Lease outlives
	// its context or its queue.
	t.Cleanup(func() { goleak.VerifyNone(t) })
	queuetest.Run(t, func(t *testing.T, o queue.Options) queue.Queue {
		q, err := queue.NewMemory(o)
		require.NoError(t, err)
		return q
	})
}
