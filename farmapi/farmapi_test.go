package farmapi

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/stretchr/testify/require"
)

// A start error keeps its meaning across HTTP: the status a farm answers
// with maps back to the sentinel it came from.
func TestStartErrorsRoundTrip(t *testing.T) {
	for _, err := range []error{ErrNoSlot, ErrUnknownPool, ErrDraining, ErrStartTimeout, ErrBadModel} {
		t.Run(err.Error(), func(t *testing.T) {
			code := Status(fmt.Errorf("start: %w", err))
			require.NotEqual(t, http.StatusInternalServerError, code)
			require.ErrorIs(t, StartError(code), err)
		})
	}
	require.Equal(t, http.StatusServiceUnavailable, Status(ErrClosed))
	require.Equal(t, http.StatusNotFound, Status(ErrNotFound))
	require.Equal(t, http.StatusInternalServerError, Status(fmt.Errorf("disk full")))
	require.NoError(t, StartError(http.StatusInternalServerError))
}
