package auth

import (
	"net/http"

	"github.com/drover-dev/drover/session"
)

// Error is why a request was refused: the HTTP status, the protocol code
// (session.CodeUnauthorized, session.CodeForbidden) and a plain sentence
// that names no credential.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return e.Message }

// Session is e as the error a WebSocket client sees.
func (e *Error) Session() *session.Error { return session.NewError(e.Code, e.Message) }

// Unauthorized is a 401: no credential, or one that does not check out.
func Unauthorized(msg string) *Error {
	return &Error{Status: http.StatusUnauthorized, Code: session.CodeUnauthorized, Message: msg}
}

// Forbidden is a 403: the caller is known but may not do this.
func Forbidden(msg string) *Error {
	return &Error{Status: http.StatusForbidden, Code: session.CodeForbidden, Message: msg}
}

// Unavailable is a 503: the credential could not be checked (the key
// store is down).
func Unavailable(msg string) *Error {
	return &Error{Status: http.StatusServiceUnavailable, Code: session.CodeUnavailable, Message: msg}
}
