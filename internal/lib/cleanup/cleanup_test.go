package cleanup_test

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/internal/lib/cleanup"
)

func TestRunReversesJoinsAndEmpties(t *testing.T) {
	var order []string
	errB := errors.New("b failed")
	errD := errors.New("d failed")
	var s cleanup.Stack
	s.PushFunc("a", func() error { order = append(order, "a"); return nil })
	s.Push("b", func(context.Context) error { order = append(order, "b"); return errB })
	s.PushFunc("c", func() error { order = append(order, "c"); return nil })
	s.Push("d", func(context.Context) error { order = append(order, "d"); return errD })
	require.Equal(t, 4, s.Len())

	err := s.Run(context.Background())
	require.Equal(t, []string{"d", "c", "b", "a"}, order, "last pushed runs first, and a failure stops nothing")
	require.ErrorIs(t, err, errB)
	require.ErrorIs(t, err, errD)
	require.EqualError(t, err, "d: d failed\nb: b failed")
	require.Zero(t, s.Len())

	require.NoError(t, s.Run(context.Background()), "a second run has nothing left")
	require.Len(t, order, 4)
}

func TestRunPassesTheContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var s cleanup.Stack
	s.Push("wait", func(ctx context.Context) error { return ctx.Err() })
	require.ErrorIs(t, s.Run(ctx), context.Canceled)
}
