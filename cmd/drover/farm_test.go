package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/drover-dev/drover/farm"
)

// The CLI's --orphan-grace is the farm server's default, whose reason (a
// session may resume elsewhere within the managers' resume grace) it must
// not contradict.
func TestFarmOrphanGraceDefault(t *testing.T) {
	fs := newFarmCmd().Flags()
	f := fs.Lookup("orphan-grace")
	require.NotNil(t, f)
	require.Equal(t, farm.DefaultOrphanGrace.String(), f.DefValue)
	grace, err := fs.GetDuration("orphan-grace")
	require.NoError(t, err)
	resumeGrace, err := newManagerCmd().Flags().GetDuration("resume-grace")
	require.NoError(t, err)
	require.Greater(t, grace, resumeGrace, "an instance outlives the grace in which its session may resume")
}
