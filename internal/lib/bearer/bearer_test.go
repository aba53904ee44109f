package bearer

import (
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestChecker(t *testing.T) {
	c := NewChecker("farm-secret", "", "admin-secret")
	tests := []struct {
		name   string
		header string
		target string
		query  bool
		want   bool
	}{
		{"first token", "Bearer farm-secret", "/", false, true},
		{"second token", "Bearer admin-secret", "/", false, true},
		{"wrong token", "Bearer farm-secreT", "/", false, false},
		{"prefix of a token", "Bearer farm", "/", false, false},
		{"empty bearer never matches the empty token", "Bearer ", "/", false, false},
		{"no scheme", "farm-secret", "/", false, false},
		{"basic scheme", "Basic farm-secret", "/", false, false},
		{"query ignored unless asked", "", "/?token=farm-secret", false, false},
		{"query taken when asked", "", "/?token=farm-secret", true, true},
		{"wrong query token", "", "/?token=nope", true, false},
		{"nothing", "", "/", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", tt.target, nil)
			if tt.header != "" {
				r.Header.Set("Authorization", tt.header)
			}
			require.Equal(t, tt.want, c.Request(r, tt.query))
		})
	}
	require.True(t, Checker{}.Empty())
	require.False(t, Checker{}.Valid("x"))
	require.False(t, NewChecker("").Valid(""))
	require.Equal(t, "Bearer t", Header("t").Get("Authorization"))
}
