// Package redisx owns what drover's Redis-backed packages (store,
// conversion/queue, conversion/items) do alike with go-redis: building the
// client from a URL without showing its password in errors, bounding each
// call by a timeout, telling a server that cannot be used from one that
// answered with an error, wrapping the former in the package's own
// ErrUnavailable, and starting a pub/sub subscription that the server has
// confirmed. The keys, scripts and subscription bookkeeping stay with each
// package.
package redisx

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Options configure New.
type Options struct {
	// URL is redis://[:password@]host:port/db (rediss:// for TLS), read by
	// redis.ParseURL, query options included.
	URL string
	// OpTimeout bounds each call (Op) and, unless the URL sets them, each
	// dial and socket read or write. It must be positive.
	OpTimeout time.Duration
	// RESP2 makes the client speak RESP2 unless the URL asks for another
	// protocol: go-redis looks for push notifications around every command
	// under RESP3, which costs a client that needs none.
	RESP2 bool
	// Pkg starts every error message: "store" gives "store: redis ping: …".
	Pkg string
	// Unavailable is the package's sentinel that Fail wraps when the server
	// cannot be used.
	Unavailable error
}

// Client is a go-redis client with its package's timeout and errors.
type Client struct {
	*redis.Client
	opTimeout   time.Duration
	pkg         string
	unavailable error
}

// New makes a client of the server at o.URL; it does not connect yet.
// Context deadlines reach the sockets, and a refused connection is an
// answer: one dial per attempt, so that a call fails with it (after
// go-redis's few quick retries) rather than with the deadline.
func New(o Options) (*Client, error) {
	if o.OpTimeout <= 0 {
		return nil, fmt.Errorf("%s: redis timeout %v is not positive", o.Pkg, o.OpTimeout)
	}
	opt, err := redis.ParseURL(o.URL)
	if err != nil {
		return nil, urlError(o.Pkg, o.URL)
	}
	opt.ContextTimeoutEnabled = true
	if o.RESP2 && opt.Protocol == 0 {
		opt.Protocol = 2
	}
	if opt.DialerRetries == 0 {
		opt.DialerRetries = 1
	}
	// Without a deadline (dials, pub/sub health pings) these hold; a
	// timeout set in the URL's query wins.
	for _, d := range []*time.Duration{&opt.DialTimeout, &opt.ReadTimeout, &opt.WriteTimeout, &opt.PoolTimeout} {
		if *d == 0 {
			*d = o.OpTimeout
		}
	}
	return &Client{Client: redis.NewClient(opt), opTimeout: o.OpTimeout, pkg: o.Pkg, unavailable: o.Unavailable}, nil
}

// urlError describes a URL that redis.ParseURL rejected without repeating
// the password: url.Parse errors quote the whole URL, and go-redis's quote
// parts of it, so the message comes from parsing the URL again with its
// user information replaced.
func urlError(pkg, raw string) error {
	red := raw
	start := strings.Index(raw, "://") + len("://")
	if start < len("://") {
		start = 0
	}
	if at := strings.LastIndex(raw[start:], "@"); at >= 0 {
		red = raw[:start] + "xxxxx" + raw[start+at:]
	}
	if _, err := redis.ParseURL(red); err != nil {
		return fmt.Errorf("%s: redis URL %q: %w", pkg, red, err)
	}
	return fmt.Errorf("%s: redis URL %q is invalid (percent-encode reserved characters in the password)", pkg, red)
}

// Op bounds a call by the client's timeout.
func (c *Client) Op(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.opTimeout)
}

// Fail wraps err, which the call op returned. Anything but a reply from a
// working server (see Unavailable) wraps the package's ErrUnavailable as
// well; a caller that cancelled gets its context error alone.
func (c *Client) Fail(ctx context.Context, op string, err error) error {
	if errors.Is(ctx.Err(), context.Canceled) || !Unavailable(err) {
		return fmt.Errorf("%s: redis %s: %w", c.pkg, op, err)
	}
	return fmt.Errorf("%w: redis %s: %w", c.unavailable, op, err)
}

// Unavailable reports whether err means the server cannot be used: a
// network error, a deadline, a closed client, or a server that is loading,
// refuses writes, is busy, out of memory or of clients, or refused the
// credentials. A reply such as a script's error is not.
func Unavailable(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return true
	}
	return redis.IsLoadingError(err) || redis.IsReadOnlyError(err) || redis.IsMasterDownError(err) ||
		redis.IsTryAgainError(err) || redis.IsClusterDownError(err) || redis.IsMaxClientsError(err) ||
		redis.IsAuthError(err) || redis.IsOOMError(err) || redis.HasErrorPrefix(err, "BUSY")
}

// SubscribeConfirmed subscribes to channel and returns once the server
// confirmed it (within the timeout), so that every message published after
// it returns is delivered unless the connection breaks. The subscription
// does not end with ctx: go-redis reconnects and subscribes again until
// the caller closes it.
func (c *Client) SubscribeConfirmed(ctx context.Context, channel string) (*redis.PubSub, error) {
	octx, cancel := c.Op(ctx)
	defer cancel()
	ps := c.Subscribe(octx, channel)
	if _, err := ps.Receive(octx); err != nil {
		_ = ps.Close()
		return nil, c.Fail(ctx, "subscribe", err)
	}
	return ps, nil
}
