package queue

import (
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Decoding of what Redis returns. A record written by another version of
// drover, or by hand, must give an error, never a panic or a lease with a
// made-up attempt: these functions check every field.

// integer reads an integer reply or a decimal string.
func integer(v any) (int64, error) {
	switch x := v.(type) {
	case int64:
		return x, nil
	case string:
		n, err := strconv.ParseInt(x, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("not an integer: %q", x)
		}
		return n, nil
	}
	return 0, fmt.Errorf("not an integer: %T", v)
}

// attempt reads an attempt number: positive, and small enough for an int
// on any platform.
func attempt(v any) (int, error) {
	n, err := integer(v)
	if err != nil {
		return 0, err
	}
	if n < 1 || n > 1<<31-1 {
		return 0, fmt.Errorf("attempt %d out of range", n)
	}
	return int(n), nil
}

// msTime reads a time in milliseconds since the epoch; "" is the zero time.
func msTime(v any) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	var n int64
	switch x := v.(type) {
	case string:
		// Scores come back as floats ("1.7e12" is not likely, but legal).
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("not a time: %q", x)
		}
		n = int64(f)
	default:
		var err error
		if n, err = integer(v); err != nil {
			return time.Time{}, err
		}
	}
	// Before 1970 or after 9999: not a time the queue wrote.
	if n < 0 || n > 253402300799999 {
		return time.Time{}, fmt.Errorf("time %d ms out of range", n)
	}
	return time.UnixMilli(n), nil
}

func str(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("not a string: %T", v)
	}
	return s, nil
}

func state(v any) (State, error) {
	s, err := str(v)
	if err != nil {
		return "", err
	}
	if !State(s).valid() {
		return "", fmt.Errorf("unknown state %q", s)
	}
	return State(s), nil
}

// decodeLeases reads the lease script's reply: {next due ms or "",
// {{id, item, payload, attempt, token, expires ms}…}}.
func decodeLeases(v any, consumer string) ([]Lease, time.Time, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return nil, time.Time{}, fmt.Errorf("reply %T of %d", v, len(a))
	}
	next, err := msTime(a[0])
	if err != nil {
		return nil, time.Time{}, err
	}
	list, ok := a[1].([]any)
	if !ok {
		return nil, time.Time{}, fmt.Errorf("leases: %T", a[1])
	}
	if len(list) == 0 {
		return nil, next, nil
	}
	out := make([]Lease, 0, len(list))
	for _, e := range list {
		f, ok := e.([]any)
		if !ok || len(f) != 6 {
			return nil, time.Time{}, fmt.Errorf("lease: %v", e)
		}
		l := Lease{Consumer: consumer}
		var payload string
		for i, p := range []*string{&l.JobID, &l.Item, &payload, nil, &l.Token} {
			if p != nil {
				if *p, err = str(f[i]); err != nil {
					return nil, time.Time{}, err
				}
			}
		}
		l.Payload = []byte(payload)
		if l.Attempt, err = attempt(f[3]); err != nil {
			return nil, time.Time{}, err
		}
		if l.Expires, err = msTime(f[5]); err != nil {
			return nil, time.Time{}, err
		}
		out = append(out, l)
	}
	return out, next, nil
}

// decodeOutcome reads the reply of Complete or Fail after its verdict:
// {'ok'|'dup', state, attempt, item, consumer, reason, retry ms}.
func decodeOutcome(jobID string, a []any) (Outcome, error) {
	if len(a) != 7 {
		return Outcome{}, fmt.Errorf("outcome of %d fields", len(a))
	}
	o := Outcome{JobID: jobID}
	var err error
	if o.State, err = state(a[1]); err != nil {
		return Outcome{}, err
	}
	if o.Attempt, err = attempt(a[2]); err != nil {
		return Outcome{}, err
	}
	for i, p := range []*string{&o.Item, &o.Consumer, &o.Reason} {
		if *p, err = str(a[3+i]); err != nil {
			return Outcome{}, err
		}
	}
	if o.RetryAt, err = msTime(a[6]); err != nil {
		return Outcome{}, err
	}
	return o, nil
}

// decodeReclaim reads the reclaim script's reply: {cursor, {{id, item,
// consumer, attempt, state}…}}.
func decodeReclaim(v any) (string, []Outcome, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 2 {
		return "", nil, fmt.Errorf("reply %T of %d", v, len(a))
	}
	cursor, err := str(a[0])
	if err != nil {
		return "", nil, err
	}
	list, ok := a[1].([]any)
	if !ok {
		return "", nil, fmt.Errorf("outcomes: %T", a[1])
	}
	var out []Outcome
	for _, e := range list {
		f, ok := e.([]any)
		if !ok || len(f) != 5 {
			return "", nil, fmt.Errorf("outcome: %v", e)
		}
		o := Outcome{Reason: ReasonLeaseExpired}
		for i, p := range []*string{&o.JobID, &o.Item, &o.Consumer} {
			if *p, err = str(f[i]); err != nil {
				return "", nil, err
			}
		}
		if o.Attempt, err = attempt(f[3]); err != nil {
			return "", nil, err
		}
		if o.State, err = state(f[4]); err != nil {
			return "", nil, err
		}
		out = append(out, o)
	}
	return cursor, out, nil
}

// decodeInfo reads a job's hash.
func decodeInfo(id string, h map[string]string) (Info, error) {
	in := Info{ID: id, Item: h["item"], Consumer: h["consumer"], Reason: h["reason"]}
	var err error
	if in.State, err = state(h["state"]); err != nil {
		return Info{}, err
	}
	n, err := integer(h["attempts"])
	if err != nil {
		return Info{}, fmt.Errorf("attempts: %w", err)
	}
	if n < 0 || n > 1<<31-1 {
		return Info{}, fmt.Errorf("attempts %d out of range", n)
	}
	in.Attempts = int(n)
	for _, f := range []struct {
		field string
		to    *time.Time
		need  bool
	}{
		{"created", &in.Created, true},
		{"exp", &in.Expires, in.State == StateLeased},
		{"due", &in.Due, in.State == StateDelayed},
		{"ended", &in.Ended, in.State.Ended()},
	} {
		v, ok := h[f.field]
		if !ok || v == "" {
			if f.need {
				return Info{}, fmt.Errorf("%s state without %s", in.State, f.field)
			}
			continue
		}
		if *f.to, err = msTime(v); err != nil {
			return Info{}, fmt.Errorf("%s: %w", f.field, err)
		}
	}
	if in.State == StateLeased && in.Attempts == 0 {
		return Info{}, errors.New("leased without an attempt")
	}
	return in, nil
}
