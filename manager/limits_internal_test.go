package manager

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestWaitText(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                       "0.1 seconds",
		30 * time.Millisecond:   "0.1 seconds",
		250 * time.Millisecond:  "0.3 seconds",
		900 * time.Millisecond:  "0.9 seconds",
		999 * time.Millisecond:  "1 second",
		time.Second:             "1 second",
		1200 * time.Millisecond: "2 seconds",
		90 * time.Second:        "90 seconds",
	} {
		require.Equal(t, want, waitText(d), "%v", d)
	}
}

func TestAddressKey(t *testing.T) {
	for remote, want := range map[string]string{
		"127.0.0.1:5000": "127.0.0.1", "[::1]:80": "::1", "": "", "pipe": "pipe",
	} {
		require.Equal(t, want, addressKey(remote), remote)
	}
}
