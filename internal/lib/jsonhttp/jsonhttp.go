// Package jsonhttp makes the REST calls between farms and managers: a JSON
// request, a JSON answer, and errors that name the method, path and status
// but never the headers, where the tokens are.
package jsonhttp

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// maxAnswer bounds the answer read; drover's answers are small.
const maxAnswer = 1 << 20

// StatusError is an answer outside 2xx.
type StatusError struct {
	Method, Path string
	Code         int
	// Message is the answer's "message" field, or the status text.
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Code, e.Message)
}

// Call sends body (nil: none) as JSON with header and decodes a non-empty
// 2xx answer into out (nil: ignored). It returns the status code, 0 when
// no answer came. An answer outside 2xx is a *StatusError.
func Call(ctx context.Context, c *http.Client, method, target string, header http.Header, body, out any) (int, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, err
	}
	req.Header = header.Clone()
	if req.Header == nil {
		req.Header = http.Header{}
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err // the method and path say where; the whole URL would repeat the host
		}
		return 0, fmt.Errorf("%s %s: %w", method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: read answer: %w", method, req.URL.Path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, &StatusError{Method: method, Path: req.URL.Path, Code: resp.StatusCode,
			Message: cmp.Or(e.Message, http.StatusText(resp.StatusCode))}
	}
	if out != nil && len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			return resp.StatusCode, fmt.Errorf("%s %s: bad answer: %w", method, req.URL.Path, err)
		}
	}
	return resp.StatusCode, nil
}
