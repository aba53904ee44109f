package items

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/drover-dev/drover/internal/lib/redisx"
)

// RedisOptions configure NewRedis.
type RedisOptions struct {
	// URL is redis://[:password@]host:port/db (rediss:// for TLS), read by
	// redis.ParseURL, query options included.
	URL string
	// Prefix starts every key and the event channel; managers that share
	// items use the same one. Default DefaultRedisPrefix.
	Prefix string
	// OpTimeout bounds every call whose context has no earlier deadline,
	// and each dial and socket read or write. Default 3 s: conversion calls
	// are not latency-bound, and a burst of uploads on a loaded host waits
	// for a pooled connection longer than a second.
	OpTimeout time.Duration
	// Logger hears what no call can return (a malformed event). Default
	// slog.Default().
	Logger *slog.Logger
}

// DefaultRedisPrefix is RedisOptions.Prefix's default.
const DefaultRedisPrefix = "drover:items:"

// listBatch is how many items List reads per round trip.
const listBatch = 256

// Redis is a Store in a Redis server, shared by the managers that use the
// same server and prefix. Every change is one Lua script, so a single
// server (or a primary with replicas) is needed, not a cluster.
//
// Keys, after the prefix:
//
//	item:<id>  hash: data (the item's JSON without its times), created
//	           and updated (ms since the epoch, by the server's clock)
//	index      sorted set of ids by created: List's order
//	updated    LastUpdated, ms since the epoch
//	events     the pub/sub channel of item events
//
// Update reads the item, applies fn, and writes with a script that checks
// first that the item's updated is still the one read: every change moves
// it, so a concurrent write in between makes Update read and apply fn
// again (optimistic, like WATCH/MULTI, in one round trip). UpdateFrom
// skips the read when its caller holds the current version. Every
// script takes its time from the server, strictly after the last change,
// and publishes the event in the same step, so events arrive in the order
// of their LastUpdated.
//
// Calls fail with an error wrapping ErrUnavailable (and the go-redis
// error) when the server cannot be reached or does not answer within
// OpTimeout. Subscriptions survive outages: go-redis reconnects and
// subscribes again, and the subscriber gets EventResync for the events it
// missed.
type Redis struct {
	c   *redisx.Client
	log *slog.Logger

	prefix, index, updated, channel string

	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close: subscriptions end
	wg     sync.WaitGroup
	once   sync.Once
	cerr   error
}

var _ Store = (*Redis)(nil)

// NewRedis connects to the server at o.URL and checks that it answers.
func NewRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	if o.OpTimeout < 0 {
		return nil, errors.New("items: negative redis timeout")
	}
	if o.Prefix == "" {
		o.Prefix = DefaultRedisPrefix
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = 3 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c, err := redisx.New(redisx.Options{URL: o.URL, OpTimeout: o.OpTimeout, Pkg: "items", Unavailable: ErrUnavailable})
	if err != nil {
		return nil, err
	}
	r := &Redis{
		c:       c,
		log:     o.Logger,
		prefix:  o.Prefix,
		index:   o.Prefix + "index",
		updated: o.Prefix + "updated",
		channel: o.Prefix + "events",
		done:    make(chan struct{}),
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	if err := r.c.Ping(octx).Err(); err != nil {
		_ = r.c.Close()
		return nil, r.c.Fail(ctx, "ping", err)
	}
	return r, nil
}

func (r *Redis) itemKey(id string) string { return r.prefix + "item:" + id }

func (r *Redis) check(ctx context.Context) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return errClosed
	}
	return ctx.Err()
}

// The scripts. tick takes the time of a change from the server's clock,
// strictly after the last change, and stores it as LastUpdated. Times are
// ms since the epoch, exact in Lua's doubles; they travel as decimal
// strings. Ids are validated (letters, digits, '-', '_'), so the event
// JSON is built by concatenation; the item's JSON is embedded as is.
const luaLib = `
local function tick(k)
  local tm = redis.call('TIME')
  local now = tonumber(tm[1]) * 1000 + math.floor(tonumber(tm[2]) / 1000)
  local last = tonumber(redis.call('GET', k) or '0')
  if now <= last then now = last + 1 end
  local s = string.format('%.0f', now)
  redis.call('SET', k, s)
  return s
end
local function event(ch, typ, id, at, created, data)
  local m = '{"type":"' .. typ .. '","id":"' .. id .. '","at":' .. at
  if data then m = m .. ',"created":' .. created .. ',"item":' .. data end
  redis.call('PUBLISH', ch, m .. '}')
end
`

var (
	// KEYS: item, index, updated. ARGV: id, data, channel.
	createScript = redis.NewScript(luaLib + `
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
local t = tick(KEYS[3])
redis.call('HSET', KEYS[1], 'data', ARGV[2], 'created', t, 'updated', t)
redis.call('ZADD', KEYS[2], t, ARGV[1])
event(ARGV[3], 'created', ARGV[1], t, t, ARGV[2])
return {'ok', t, '1'}
`)
	// KEYS: item, updated. ARGV: id, updated of the version changed (ms),
	// data, channel.
	updateScript = redis.NewScript(luaLib + `
local h = redis.call('HMGET', KEYS[1], 'updated', 'created')
if not h[1] then return {'notfound'} end
if h[1] ~= ARGV[2] then return {'conflict'} end
local t = tick(KEYS[2])
redis.call('HSET', KEYS[1], 'data', ARGV[3], 'updated', t)
event(ARGV[4], 'updated', ARGV[1], t, h[2], ARGV[3])
return {'ok', t}
`)
	// KEYS: item, index, updated. ARGV: id, channel.
	deleteScript = redis.NewScript(luaLib + `
if redis.call('DEL', KEYS[1]) == 0 then return {'notfound'} end
redis.call('ZREM', KEYS[2], ARGV[1])
local t = tick(KEYS[3])
event(ARGV[2], 'deleted', ARGV[1], t)
return {'ok', t}
`)
	// KEYS: item, index, updated. ARGV: id, channel, updated judged (ms).
	// The item's updated is unique to each of its versions: every change
	// ticks the store's clock.
	deleteUnchangedScript = redis.NewScript(luaLib + `
local u = redis.call('HGET', KEYS[1], 'updated')
if not u then return {'notfound'} end
if u ~= ARGV[3] then return {'changed', u} end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local t = tick(KEYS[3])
event(ARGV[2], 'deleted', ARGV[1], t)
return {'ok', t}
`)
)

// run runs a script and returns its reply: a verdict, then values.
func (r *Redis) run(ctx context.Context, name string, sc *redis.Script, keys []string, args ...any) ([]string, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	v, err := sc.Run(octx, r.c, keys, args...).StringSlice()
	if err != nil {
		return nil, r.c.Fail(ctx, name, err)
	}
	if len(v) == 0 {
		return nil, fmt.Errorf("items: redis %s: empty reply", name)
	}
	return v, nil
}

func millis(s string) (time.Time, error) {
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("items: redis: bad time %q", s)
	}
	return time.UnixMilli(ms).UTC(), nil
}

// Create implements Store.
func (r *Redis) Create(ctx context.Context, it Item) (Item, error) {
	if err := validateNew(&it); err != nil {
		return Item{}, err
	}
	data, err := marshalData(&it)
	if err != nil {
		return Item{}, err
	}
	v, err := r.run(ctx, "create", createScript, []string{r.itemKey(it.ID), r.index, r.updated}, it.ID, data, r.channel)
	if err != nil {
		return Item{}, err
	}
	switch v[0] {
	case "exists":
		return Item{}, fmt.Errorf("%w: %s", ErrExists, it.ID)
	case "ok":
	default:
		return Item{}, fmt.Errorf("items: redis create: unexpected reply %q", v[0])
	}
	t, err := millis(v[1])
	if err != nil {
		return Item{}, err
	}
	it = it.Clone()
	it.Created, it.Updated = t, t
	return it, nil
}

// get reads an item and its data as stored.
func (r *Redis) get(ctx context.Context, id string) (Item, string, error) {
	if err := r.check(ctx); err != nil {
		return Item{}, "", err
	}
	if ValidateID(id) != nil { // no such key can exist
		return Item{}, "", fmt.Errorf("%w: %s", ErrNotFound, truncate(id))
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	v, err := r.c.HMGet(octx, r.itemKey(id), "data", "created", "updated").Result()
	if err != nil {
		return Item{}, "", r.c.Fail(ctx, "get", err)
	}
	it, ok, err := decode(v)
	if err != nil {
		return Item{}, "", fmt.Errorf("items: item %s: %w", id, err)
	}
	if !ok {
		return Item{}, "", fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	data, _ := v[0].(string)
	return it, data, nil
}

// marshalData is an item's JSON without created and updated, which the
// hash keeps in fields of their own, by the server's clock: the shallower
// fields hide the embedded item's.
func marshalData(it *Item) ([]byte, error) {
	return json.Marshal(struct {
		*Item
		Created *struct{} `json:"created,omitempty"`
		Updated *struct{} `json:"updated,omitempty"`
	}{Item: it})
}

// decode makes an item of the HMGET of data, created and updated;
// false if the item does not exist.
func decode(v []any) (Item, bool, error) {
	data, ok := v[0].(string)
	if !ok {
		return Item{}, false, nil
	}
	created, _ := v[1].(string)
	updated, _ := v[2].(string)
	var it Item
	if err := json.Unmarshal([]byte(data), &it); err != nil {
		return Item{}, false, err
	}
	var err error
	if it.Created, err = millis(created); err != nil {
		return Item{}, false, err
	}
	if it.Updated, err = millis(updated); err != nil {
		return Item{}, false, err
	}
	return it, true, nil
}

// Get implements Store.
func (r *Redis) Get(ctx context.Context, id string) (Item, error) {
	it, _, err := r.get(ctx, id)
	return it, err
}

// List implements Store. Items deleted while it reads are left out, and
// so are records that do not decode (logged).
func (r *Redis) List(ctx context.Context) ([]Item, error) {
	if err := r.check(ctx); err != nil {
		return nil, err
	}
	octx, cancel := r.c.Op(ctx)
	ids, err := r.c.ZRange(octx, r.index, 0, -1).Result()
	cancel()
	if err != nil {
		return nil, r.c.Fail(ctx, "list", err)
	}
	out := make([]Item, 0, len(ids))
	for start := 0; start < len(ids); start += listBatch {
		batch := ids[start:min(start+listBatch, len(ids))]
		octx, cancel := r.c.Op(ctx)
		pipe := r.c.Pipeline()
		cmds := make([]*redis.SliceCmd, len(batch))
		for i, id := range batch {
			cmds[i] = pipe.HMGet(octx, r.itemKey(id), "data", "created", "updated")
		}
		_, err := pipe.Exec(octx)
		cancel()
		if err != nil {
			return nil, r.c.Fail(ctx, "list", err)
		}
		for i, cmd := range cmds {
			it, ok, err := decode(cmd.Val())
			if err != nil { // one bad record does not hide the others
				r.log.Warn("items: unreadable item left out of the list", "id", batch[i], "err", err)
				continue
			}
			if ok {
				out = append(out, it)
			}
		}
	}
	return out, nil
}

// Update implements Store. fn is called again when another write to the
// item came between its read and this write.
func (r *Redis) Update(ctx context.Context, id string, fn func(*Item) error) (Item, error) {
	return r.update(ctx, id, nil, fn)
}

// UpdateFrom implements Store: a write without a read when cur is still
// the item's version, else Update.
func (r *Redis) UpdateFrom(ctx context.Context, cur Item, fn func(*Item) error) (Item, error) {
	return r.update(ctx, cur.ID, &cur, fn)
}

// update applies fn to the item, from known if given (the first time),
// else from a fresh read.
func (r *Redis) update(ctx context.Context, id string, known *Item, fn func(*Item) error) (Item, error) {
	for attempt := 0; ; attempt++ {
		var cur Item
		var stored []byte
		if known != nil && attempt == 0 {
			if err := r.check(ctx); err != nil {
				return Item{}, err
			}
			if ValidateID(id) != nil {
				return Item{}, fmt.Errorf("%w: %s", ErrNotFound, truncate(id))
			}
			cur = known.Clone()
			var err error
			if stored, err = marshalData(&cur); err != nil {
				return Item{}, err
			}
		} else {
			var data string
			var err error
			if cur, data, err = r.get(ctx, id); err != nil {
				return Item{}, err
			}
			stored = []byte(data)
		}
		next := cur.Clone()
		if err := fn(&next); err != nil {
			return Item{}, err
		}
		if err := ValidateUpdate(&cur, &next); err != nil {
			return Item{}, err
		}
		next.Updated = cur.Updated
		// The record as it would be written against the one read: one
		// encoding, not two (created and updated are not in it, and
		// cannot differ).
		data, err := marshalData(&next)
		if err != nil {
			return Item{}, err
		}
		if bytes.Equal(data, stored) {
			if known != nil && attempt == 0 {
				continue // no change from the caller's version, which may be old: read it
			}
			return cur, nil
		}
		v, err := r.run(ctx, "update", updateScript, []string{r.itemKey(id), r.updated}, id,
			strconv.FormatInt(cur.Updated.UnixMilli(), 10), data, r.channel)
		if err != nil {
			return Item{}, err
		}
		switch v[0] {
		case "ok":
			if next.Updated, err = millis(v[1]); err != nil {
				return Item{}, err
			}
			return next, nil
		case "notfound":
			return Item{}, fmt.Errorf("%w: %s", ErrNotFound, id)
		case "conflict":
			if known != nil && attempt == 0 {
				continue // the caller's version is old: read it
			}
			if err := backoff(ctx, attempt); err != nil {
				return Item{}, err
			}
		default:
			return Item{}, fmt.Errorf("items: redis update: unexpected reply %q", v[0])
		}
	}
}

// backoff waits a little after a lost write, more after several, at
// random so that the writers that lost spread out.
func backoff(ctx context.Context, attempt int) error {
	d := time.Duration(rand.Int64N(int64(min(attempt+1, 20)) * int64(200*time.Microsecond)))
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Delete implements Store.
func (r *Redis) Delete(ctx context.Context, id string) error {
	if ValidateID(id) != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, truncate(id))
	}
	v, err := r.run(ctx, "delete", deleteScript, []string{r.itemKey(id), r.index, r.updated}, id, r.channel)
	if err != nil {
		return err
	}
	switch v[0] {
	case "ok":
		return nil
	case "notfound":
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return fmt.Errorf("items: redis delete: unexpected reply %q", v[0])
}

// DeleteUnchanged implements Store: one script compares the item's
// updated and deletes it, so that a concurrent write or delete by another
// manager either comes before it (ErrChanged, ErrNotFound) or finds the
// item gone.
func (r *Redis) DeleteUnchanged(ctx context.Context, id string, updated time.Time) error {
	if ValidateID(id) != nil {
		return fmt.Errorf("%w: %s", ErrNotFound, truncate(id))
	}
	v, err := r.run(ctx, "delete", deleteUnchangedScript, []string{r.itemKey(id), r.index, r.updated}, id, r.channel,
		strconv.FormatInt(updated.UnixMilli(), 10))
	if err != nil {
		return err
	}
	switch v[0] {
	case "ok":
		return nil
	case "notfound":
		return fmt.Errorf("%w: %s", ErrNotFound, id)
	case "changed":
		return fmt.Errorf("%w: %s was updated since", ErrChanged, id)
	}
	return fmt.Errorf("items: redis delete: unexpected reply %q", v[0])
}

// LastUpdated implements Store.
func (r *Redis) LastUpdated(ctx context.Context) (time.Time, error) {
	if err := r.check(ctx); err != nil {
		return time.Time{}, err
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	s, err := r.c.Get(octx, r.updated).Result()
	if errors.Is(err, redis.Nil) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, r.c.Fail(ctx, "last updated", err)
	}
	return millis(s)
}

// wireEvent is an event as the scripts publish it.
type wireEvent struct {
	Type    EventType       `json:"type"`
	ID      string          `json:"id"`
	At      int64           `json:"at"`
	Created int64           `json:"created"`
	Item    json.RawMessage `json:"item"`
}

func (w *wireEvent) event() (Event, error) {
	e := Event{Type: w.Type, ID: w.ID, LastUpdated: time.UnixMilli(w.At).UTC()}
	if len(w.Item) > 0 {
		var it Item
		if err := json.Unmarshal(w.Item, &it); err != nil {
			return Event{}, err
		}
		it.Created, it.Updated = time.UnixMilli(w.Created).UTC(), e.LastUpdated
		e.Item = &it
	}
	return e, nil
}

// Subscribe implements Store. It returns once the server confirmed the
// subscription, so every change after it returns is delivered unless the
// connection breaks; then the subscriber gets EventResync once go-redis
// has subscribed again.
func (r *Redis) Subscribe(ctx context.Context) (<-chan Event, error) {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, errClosed
	}
	r.wg.Add(1) // under mu: Close cannot be waiting already
	r.mu.Unlock()

	ps, err := r.c.SubscribeConfirmed(ctx, r.channel)
	if err != nil {
		r.wg.Done()
		return nil, err
	}
	out := make(chan Event, subscriberBuffer)
	go r.forward(ctx, ps, out)
	return out, nil
}

// forward passes events from ps to out until ctx ends or the store
// closes. go-redis's channel stays open across reconnections and tells of
// each new subscription; it closes only with ps.
func (r *Redis) forward(ctx context.Context, ps *redis.PubSub, out chan Event) {
	defer r.wg.Done()
	defer close(out)
	defer func() { _ = ps.Close() }()
	msgs := ps.ChannelWithSubscriptions()
	s := &subscriber{ch: out}
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.done:
			return
		case m, ok := <-msgs:
			if !ok {
				return
			}
			switch m := m.(type) {
			case *redis.Subscription:
				if m.Kind == "subscribe" { // again, after a reconnection
					s.resync()
				}
			case *redis.Message:
				var w wireEvent
				err := json.Unmarshal([]byte(m.Payload), &w)
				var e Event
				if err == nil {
					e, err = w.event()
				}
				if err != nil {
					r.log.Warn("items: malformed event", "channel", m.Channel, "err", err,
						"payload", strings.ToValidUTF8(m.Payload[:min(len(m.Payload), 200)], "?"))
					continue
				}
				s.offer(e)
			}
		}
	}
}

// Close implements Store: it ends every subscription, waits for them and
// closes the client.
func (r *Redis) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		close(r.done)
		r.mu.Unlock()
		r.wg.Wait()
		r.cerr = r.c.Close()
	})
	return r.cerr
}
