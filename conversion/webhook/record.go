package webhook

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"time"
)

// Payload is the body of a webhook, the HOOPS conversion server's: the
// item's id and name, its conversionState and the names of its outputs.
type Payload struct {
	ID              string   `json:"id"`
	Name            string   `json:"name"`
	ConversionState string   `json:"conversionState"`
	Files           []string `json:"files"`
}

// body is the JSON sent, the same bytes on every attempt: files is [] when
// there are none, as the original sent it, never null.
func (p Payload) body() ([]byte, error) {
	if p.Files == nil {
		p.Files = []string{}
	}
	return json.Marshal(p)
}

// Delivery is a webhook to deliver.
type Delivery struct {
	// ID is the delivery id, sent as Drover-Delivery on every attempt.
	// Empty: Send makes a random one.
	ID      string  `json:"id"`
	URL     string  `json:"url"`
	Payload Payload `json:"payload"`
}

// State is where a delivery is.
type State string

// The states of a delivery.
const (
	// StatePending: not delivered yet, an attempt is due at NextAttempt.
	StatePending State = "pending"
	// StateDelivered: an attempt got a 2xx answer. Final.
	StateDelivered State = "delivered"
	// StateFailed: the receiver refused it (a 4xx other than 408 and 429,
	// or a 3xx), the URL or its address was refused, or it was still not
	// delivered when Options.RetryFor ran out. Final.
	StateFailed State = "failed"
)

// Error classes a record's LastError holds: what went wrong, in words that
// can be shown to users.
const (
	ClassTimeout        = "timeout"
	ClassRefused        = "connection refused"
	ClassReset          = "connection reset"
	ClassHostNotFound   = "host not found"
	ClassDNS            = "name resolution failed"
	ClassTLS            = "tls handshake failed"
	ClassNetwork        = "network error"
	ClassNotAllowed     = "address not allowed"
	ClassBadURL         = "url not allowed"
	ClassRedirect       = "redirect not followed"
	ClassHTTP           = "http error"
	ClassInterrupted    = "interrupted by shutdown"
	ClassRetryAfterLong = "retry-after beyond the retry period"
)

// Record is a delivery and how it went: what Options.Report hands its
// owner after every attempt, Pending and Stop return, and Resume takes
// back. It marshals to JSON as it is, for an owner to save.
type Record struct {
	Delivery
	// Created is when the delivery was sent; retries end at Created plus
	// Options.RetryFor.
	Created time.Time `json:"created"`
	State   State     `json:"state"`
	// Attempts made so far.
	Attempts int `json:"attempts"`
	// LastStatus is the HTTP status of the last attempt, 0 when it got
	// none.
	LastStatus int `json:"lastStatus,omitempty"`
	// LastError is one of the Class constants for a last attempt that
	// failed, empty for one that delivered.
	LastError   string    `json:"lastError,omitempty"`
	LastAttempt time.Time `json:"lastAttempt,omitzero"`
	// NextAttempt is when the next attempt is due; zero once final.
	NextAttempt time.Time `json:"nextAttempt,omitzero"`
}

// Public is the record as an item's data shows it: without the URL (the
// item shows its webhook already, and a URL may hold a token in its path)
// and without the payload.
func (r Record) Public() Record {
	r.URL = ""
	r.Payload = Payload{}
	return r
}

// Final reports whether the record will not change again.
func (r Record) Final() bool { return r.State == StateDelivered || r.State == StateFailed }

// newID is a random delivery id.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// Secret is a signing secret. It prints, formats and logs as [redacted],
// so a configuration printed whole does not show it.
type Secret string

const redacted = "[redacted]"

// String, GoString, LogValue and MarshalText print a Secret as
// "[redacted]", whichever way it is formatted, logged or encoded.
func (Secret) String() string { return redacted }

// GoString redacts %#v.
func (Secret) GoString() string { return redacted }

// LogValue redacts slog.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// MarshalText redacts JSON and YAML.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
