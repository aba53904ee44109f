// Package webhook delivers conversion webhooks: it signs a HOOPS-style
// body, {id, name, conversionState, files}, POSTs it to the item's webhook
// URL from a bounded pool of workers, retries it with backoff for a
// configurable period, and reports a delivery record after every attempt.
// It guards the way out: only http and https URLs, and no loopback,
// link-local (cloud metadata included), private, shared, unspecified,
// multicast or reserved address unless the host is allow-listed, checked
// on the very address dialled.
//
// It owns delivery: signing, attempts, retries, their records and the
// outbound checks. It does not own items, when a webhook is due, or where
// records are kept: its owner (the conversion API) calls Send when an item
// reaches its final state, keeps the records Options.Report hands it (the
// item's data shows Record.Public), and passes saved records to Resume
// after a restart. It serves no HTTP routes.
//
// # Signature
//
// Every attempt carries three headers:
//
//	Drover-Delivery:  9f1c…            one id per delivery, the same on every retry
//	Drover-Timestamp: 1767225600       the attempt's time, unix seconds
//	Drover-Signature: v1=5d41…         hex HMAC-SHA256(secret, timestamp + "." + body)
//
// A receiver verifies with Verify, or by hand as for Stripe's and GitHub's
// webhooks:
//  1. take the raw request body, before any JSON decoding;
//  2. compute HMAC-SHA256 with the shared secret over the timestamp header,
//     a ".", and the body; hex-encode it;
//  3. compare it in constant time with each v1= entry of the signature
//     header (entries are comma separated; there are several while secrets
//     rotate, one per secret; ignore schemes other than v1);
//  4. refuse a timestamp more than a few minutes from the receiver's clock
//     (Verify's tolerance, DefaultTolerance by default): an old message is a
//     replay;
//  5. within that window, drop a Drover-Delivery already processed: a retry
//     after a lost response and a replay both look like that.
//
// The timestamp is signed, so it cannot be moved without breaking the
// signature; every retry is signed afresh with its own timestamp.
//
// # Attempts and retries
//
// An attempt has Options.AttemptTimeout to get response headers and its
// body. A 2xx response delivers. Network errors, timeouts, 408, 429 and
// 5xx are retried after an exponential backoff with jitter (Options.
// MinBackoff doubling up to Options.MaxBackoff), or after Retry-After when
// the receiver asks for longer, until Options.RetryFor has passed since
// the delivery was sent; then it fails. Any other status ends the delivery
// failed at once: the receiver said no. Redirects are never followed: a
// 3xx ends the delivery failed, with the status in the record, since
// following one would send a signed body wherever the first host points
// (a POST cannot be safely re-sent after 301 or 302 anyway). Configure the
// final URL. A refused address also ends it failed.
//
// A record names what went wrong in plain words ("timeout", "connection
// refused", "address not allowed", …) or by the HTTP status; never an
// address, a URL or a Go error chain, so it can be shown to users.
//
// # Outbound safety
//
// ValidateURL checks a URL when an item is created and Send checks it
// again: http or https, a host, no credentials, and a host that is not an
// address (or a name such as localhost) of the refused kinds unless
// allow-listed. A name cannot be judged before it is resolved, and may
// resolve differently later (DNS rebinding), so the sender resolves every
// host itself when it dials, drops the refused addresses, and dials the
// address it checked (a net.Dialer Control checks it once more). Nothing
// is sent towards a refused address. No HTTP proxy is used: a proxy would
// resolve names beyond the check.
//
// # Lifecycle
//
// New builds a Sender, Start starts its workers and Stop(ctx) ends them:
// no attempt starts after Stop is called; Stop waits for the attempts in
// flight until ctx ends, then cancels them. An attempt cut off that way
// counts, and its delivery stays pending. Stop returns every delivery still
// pending, and nothing retries them afterwards: an owner that wants them
// delivered saves them and passes them to the next Sender's Resume. Pending
// lists them at any time; and since every Report carries the whole record,
// an owner that saves each report loses nothing to a crash either: the
// attempt in flight at the crash is repeated after Resume, and receivers
// drop the duplicate by its Drover-Delivery id.
package webhook
