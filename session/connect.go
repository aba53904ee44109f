package session

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ConnectOptions are what a client asks for when it opens a session: the
// query of GET /ws, GET /login and GET /stream. Parameters other than these
// are left to the connect hooks, which see the whole query.
type ConnectOptions struct {
	// Pool is the pool to run in.
	Pool string
	// Wait: queue when no instance is free, instead of failing at once.
	Wait bool
	// Labels restrict placement to farms that carry them all.
	Labels map[string]string
	// Resume is the resume token of a session to continue (GET /ws).
	Resume string
	// Model is the model a stream instance starts with (GET /stream).
	Model string
}

// Limits of the connect options. They are generous; they keep a query from
// making the manager hold or compare unbounded strings.
const (
	MaxPoolName    = 128
	MaxResumeToken = 256
	MaxModel       = 1024
	MaxLabels      = 32
	MaxLabelKey    = 128
	MaxLabelValue  = 256
)

// ParseConnectOptions reads the connect options of a query:
//
//	pool=NAME  wait=true|false  resume=TOKEN  model=M
//	labels=k=v,k2=v2  label.k=v
//
// defaults holds what applies to options the query leaves out (the
// manager's default pool; whether the endpoint waits by default). wait
// takes the words of strconv.ParseBool; an empty value means the default.
// A label.k parameter overrides the same key in labels. An option given
// twice, a value over its limit or with control characters is an error,
// a *Error with code bad_request and a message fit for the client.
func ParseConnectOptions(q url.Values, defaults ConnectOptions) (ConnectOptions, error) {
	o := defaults
	o.Labels = nil
	for k, v := range defaults.Labels {
		o.setLabel(k, v)
	}
	var err error
	if o.Pool, err = single(q, "pool", o.Pool, MaxPoolName); err != nil {
		return ConnectOptions{}, err
	}
	if o.Resume, err = single(q, "resume", o.Resume, MaxResumeToken); err != nil {
		return ConnectOptions{}, err
	}
	if o.Model, err = single(q, "model", o.Model, MaxModel); err != nil {
		return ConnectOptions{}, err
	}
	switch ws := q["wait"]; {
	case len(ws) > 1:
		return ConnectOptions{}, badOption("wait", "is given more than once")
	case len(ws) == 1 && ws[0] != "":
		if o.Wait, err = strconv.ParseBool(ws[0]); err != nil {
			return ConnectOptions{}, badOption("wait", "must be true or false")
		}
	}
	for _, list := range q["labels"] {
		for kv := range strings.SplitSeq(list, ",") {
			k, v, _ := strings.Cut(kv, "=")
			if err := o.label(k, v); err != nil {
				return ConnectOptions{}, err
			}
		}
	}
	// label.k after labels, in a fixed order, so that the outcome does not
	// depend on map iteration.
	var keys []string
	for k := range q {
		if strings.HasPrefix(k, "label.") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		vs := q[k]
		if len(vs) > 1 {
			return ConnectOptions{}, badOption(k, "is given more than once")
		}
		if err := o.label(strings.TrimPrefix(k, "label."), vs[0]); err != nil {
			return ConnectOptions{}, err
		}
	}
	return o, nil
}

// single reads an option that may be given once.
func single(q url.Values, name, def string, limit int) (string, error) {
	vs := q[name]
	switch {
	case len(vs) == 0:
		return def, nil
	case len(vs) > 1:
		return "", badOption(name, "is given more than once")
	case len(vs[0]) > limit:
		return "", badOption(name, "is longer than "+strconv.Itoa(limit)+" bytes")
	case !plain(vs[0]):
		return "", badOption(name, "holds control characters or invalid UTF-8")
	case vs[0] == "":
		return def, nil
	}
	return vs[0], nil
}

// label adds one label, trimmed; an empty key is skipped.
func (o *ConnectOptions) label(k, v string) error {
	k, v = strings.TrimSpace(k), strings.TrimSpace(v)
	switch {
	case k == "":
		return nil
	case len(k) > MaxLabelKey:
		return badOption("labels", "has a key longer than "+strconv.Itoa(MaxLabelKey)+" bytes")
	case len(v) > MaxLabelValue:
		return badOption("labels", "has a value longer than "+strconv.Itoa(MaxLabelValue)+" bytes")
	case !plain(k) || !plain(v):
		return badOption("labels", "holds control characters or invalid UTF-8")
	case strings.ContainsAny(k, ",="):
		return badOption("labels", `has a key with "," or "="`)
	case strings.Contains(v, ","):
		return badOption("labels", `has a value with ","`)
	}
	if _, ok := o.Labels[k]; !ok && len(o.Labels) >= MaxLabels {
		return badOption("labels", "has more than "+strconv.Itoa(MaxLabels)+" labels")
	}
	o.setLabel(k, v)
	return nil
}

func (o *ConnectOptions) setLabel(k, v string) {
	if o.Labels == nil {
		o.Labels = map[string]string{}
	}
	o.Labels[k] = v
}

// Values is the query that asks for o; ParseConnectOptions reads it back
// as o.
func (o ConnectOptions) Values() url.Values {
	q := url.Values{}
	if o.Pool != "" {
		q.Set("pool", o.Pool)
	}
	q.Set("wait", strconv.FormatBool(o.Wait))
	if o.Resume != "" {
		q.Set("resume", o.Resume)
	}
	if o.Model != "" {
		q.Set("model", o.Model)
	}
	for k, v := range o.Labels {
		q.Set("label."+k, v)
	}
	return q
}

// plain: valid UTF-8 without control characters.
func plain(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

func badOption(name, problem string) *Error {
	if len(name) > 64 || !plain(name) {
		name = "label"
	}
	return NewError(CodeBadRequest, "connect option "+strconv.Quote(name)+" "+problem)
}
