package jsonhttp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestCall(t *testing.T) {
	const secret = "Bearer s3cret-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != secret {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch r.URL.Path {
		case "/echo":
			require.Equal(t, "application/json", r.Header.Get("Content-Type"))
			b, _ := io.ReadAll(r.Body)
			_, _ = w.Write(b)
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		case "/bad":
			_, _ = w.Write([]byte("{not json"))
		case "/refused":
			w.WriteHeader(http.StatusConflict)
			_, _ = w.Write([]byte(`{"message":"farm is draining"}`))
		}
	}))
	t.Cleanup(srv.Close)
	ctx := context.Background()
	h := http.Header{"Authorization": {secret}}

	var out map[string]int
	code, err := Call(ctx, srv.Client(), "POST", srv.URL+"/echo", h, map[string]int{"a": 1}, &out)
	require.NoError(t, err)
	require.Equal(t, 200, code)
	require.Equal(t, map[string]int{"a": 1}, out)

	out = nil
	code, err = Call(ctx, srv.Client(), "GET", srv.URL+"/empty", h, nil, &out)
	require.NoError(t, err)
	require.Equal(t, 204, code)
	require.Nil(t, out, "an empty answer leaves out alone")

	_, err = Call(ctx, srv.Client(), "GET", srv.URL+"/bad", h, nil, &out)
	require.ErrorContains(t, err, "GET /bad: bad answer")

	code, err = Call(ctx, srv.Client(), "DELETE", srv.URL+"/refused", h, nil, nil)
	require.Equal(t, 409, code)
	var se *StatusError
	require.ErrorAs(t, err, &se)
	require.Equal(t, "DELETE /refused: 409 farm is draining", err.Error())

	code, err = Call(ctx, srv.Client(), "GET", srv.URL+"/echo", http.Header{"Authorization": {"Bearer wrong-token"}}, nil, nil)
	require.Equal(t, 401, code)
	require.Equal(t, "GET /echo: 401 Unauthorized", err.Error(), "the status text when the answer has no message")
	require.NotContains(t, err.Error(), "wrong-token")

	srv.Close()
	code, err = Call(ctx, srv.Client(), "GET", srv.URL+"/echo", h, nil, nil)
	require.Zero(t, code)
	require.ErrorContains(t, err, "GET /echo: ")
	require.False(t, errors.As(err, &se))
	require.NotContains(t, err.Error(), "s3cret")
}
