package store

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
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
	// state use the same one. Default "drover:".
	Prefix string
	// OpTimeout bounds every call whose context has no earlier deadline,
	// and each dial and socket read or write. Default 1 s.
	OpTimeout time.Duration
	// FarmTTL is how long a farm's records outlive its last registration
	// or heartbeat: a backstop so that a farm nobody removes does not stay
	// forever. Liveness is the managers' call, from Seen. Default 24 h.
	FarmTTL time.Duration
	// Logger hears what a subscription cannot return (a malformed event).
	// Default slog.Default().
	Logger *slog.Logger
}

// Redis is a Store in a Redis server, shared by the managers that use the
// same server and prefix. Every change of more than one record is a Lua
// script, so a single Redis server (or a primary with replicas) is needed,
// not a cluster.
//
// Times (Farm.Seen, Slot.Since) come from the server's clock (TIME), in
// microseconds, so that all managers' records share one clock; a manager
// that compares them with its own clock assumes the two agree. Session and
// liveness ttls are server-side expiries.
//
// Keys, after the prefix: farms (set of farm ids), farm:<id> (hash: the
// registration, seen, draining, a count of busy slots), slots:<id> (hash:
// slot id → JSON), session:<token hash> and manager:<id> (expiring
// strings); events is the pub/sub channel. Farm records expire FarmTTL
// after their last registration or heartbeat.
//
// Calls fail with an error wrapping ErrUnavailable (and the go-redis error)
// when the server cannot be reached or does not answer within OpTimeout.
// Subscriptions survive outages: go-redis reconnects and subscribes again,
// and events published meanwhile are lost.
type Redis struct {
	c       *redisx.Client
	farmTTL int64 // ms
	log     *slog.Logger

	prefix, farms, channel string

	mu     sync.Mutex
	closed bool
	done   chan struct{} // closed by Close: subscriptions end
	wg     sync.WaitGroup
	once   sync.Once
	cerr   error
}

var _ Store = (*Redis)(nil)

// redisLog sends go-redis's own messages (a failed dial, a reconnecting
// subscription) to a slog logger at debug level: during an outage they come
// by the hundred, and the store's callers report the outage once.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, "redis client: "+fmt.Sprintf(format, v...))
}

var setRedisLog sync.Once

// NewRedis connects to the server at o.URL and checks that it answers.
// The first call routes go-redis's process-wide log to o.Logger (debug).
func NewRedis(ctx context.Context, o RedisOptions) (*Redis, error) {
	if o.OpTimeout < 0 || o.FarmTTL < 0 {
		return nil, errors.New("store: negative redis timeout")
	}
	if o.Prefix == "" {
		o.Prefix = "drover:"
	}
	if o.OpTimeout == 0 {
		o.OpTimeout = time.Second
	}
	if o.FarmTTL == 0 {
		o.FarmTTL = 24 * time.Hour
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	c, err := redisx.New(redisx.Options{URL: o.URL, OpTimeout: o.OpTimeout, Pkg: "store", Unavailable: ErrUnavailable})
	if err != nil {
		return nil, err
	}
	setRedisLog.Do(func() { redis.SetLogger(redisLog{o.Logger}) })
	r := &Redis{
		c:       c,
		farmTTL: o.FarmTTL.Milliseconds(),
		log:     o.Logger,
		prefix:  o.Prefix,
		farms:   o.Prefix + "farms",
		channel: o.Prefix + "events",
		done:    make(chan struct{}),
	}
	if err := r.Ping(ctx); err != nil {
		_ = r.c.Close()
		return nil, err
	}
	return r, nil
}

func (r *Redis) farmKey(id string) string    { return r.prefix + "farm:" + id }
func (r *Redis) slotsKey(id string) string   { return r.prefix + "slots:" + id }
func (r *Redis) sessionKey(th string) string { return r.prefix + "session:" + th }
func (r *Redis) managerKey(id string) string { return r.prefix + "manager:" + id }

func (r *Redis) run(ctx context.Context, name string, sc *redis.Script, keys []string, args ...any) (any, error) {
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	v, err := sc.Run(octx, r.c, keys, args...).Result()
	if err != nil {
		return nil, r.c.Fail(ctx, name, err)
	}
	return v, nil
}

// status turns a script's verdict into an error about what.
func status(v any, what string) error {
	switch v {
	case "ok":
		return nil
	case "notfound":
		return fmt.Errorf("%w: %s", ErrNotFound, what)
	case "full":
		return fmt.Errorf("%w: %s", ErrFull, what)
	case "draining":
		return fmt.Errorf("%w: %s", ErrDraining, what)
	case "conflict":
		return fmt.Errorf("%w: %s", ErrConflict, what)
	}
	return fmt.Errorf("store: redis: unexpected reply %v about %s", v, what)
}

func ms(ttl time.Duration) int64 { return max(ttl.Milliseconds(), 1) }

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// The scripts build the keys of farms they find from the prefix (ARGV), so
// they need one server. Lua numbers are doubles and cjson prints 14
// digits: microsecond times travel as decimal strings.
const luaLib = `
local function now()
  local t = redis.call('TIME')
  return t[1] .. string.format('%06d', tonumber(t[2]))
end
local function busy(s)
  return s.state == 'bound' or (s.state == 'starting' and type(s.session) == 'string' and s.session ~= '')
end
-- id, spec, owner, slots, draining, seen (µs), used, busy
local function farm(fk, sk)
  local h = redis.call('HMGET', fk, 'id', 'spec', 'owner', 'slots', 'draining', 'seen', 'busy')
  return {h[1], h[2], h[3], tonumber(h[4]), h[5], h[6], redis.call('HLEN', sk), tonumber(h[7])}
end
`

func script(body string) *redis.Script { return redis.NewScript(luaLib + body) }

var (
	// KEYS farms, farm, slots; ARGV id, spec, owner, slots, draining, ttl.
	scriptPutFarm = script(`
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HSET', KEYS[2], 'id', ARGV[1], 'spec', ARGV[2], 'owner', ARGV[3], 'slots', ARGV[4],
  'draining', ARGV[5], 'seen', now(), 'busy', 0)
redis.call('PEXPIRE', KEYS[2], ARGV[6])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return 'ok'`)

	// KEYS farms, farm, slots; ARGV id, draining, ttl.
	scriptTouchFarm = script(`
if redis.call('EXISTS', KEYS[2]) == 0 then return 'notfound' end
redis.call('HSET', KEYS[2], 'seen', now())
if ARGV[2] == '1' then redis.call('HSET', KEYS[2], 'draining', '1') end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return farm(KEYS[2], KEYS[3])`)

	// KEYS farm.
	scriptDrainFarm = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 'notfound' end
redis.call('HSET', KEYS[1], 'draining', '1')
return 'ok'`)

	// KEYS farms, farm, slots; ARGV id. Returns whether the farm was there.
	scriptRemoveFarm = script(`
local n = redis.call('DEL', KEYS[2])
redis.call('DEL', KEYS[3])
redis.call('SREM', KEYS[1], ARGV[1])
return n`)

	// KEYS farms; ARGV prefix. Forgets ids whose record expired.
	scriptFarms = script(`
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local fk = ARGV[1] .. 'farm:' .. id
  if redis.call('EXISTS', fk) == 1 then
    out[#out + 1] = farm(fk, ARGV[1] .. 'slots:' .. id)
  else
    redis.call('SREM', KEYS[1], id)
  end
end
return out`)

	// KEYS farms; ARGV prefix. Returns slots, used, busy.
	scriptCapacity = script(`
local slots, used, nbusy = 0, 0, 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local h = redis.call('HMGET', ARGV[1] .. 'farm:' .. id, 'slots', 'draining', 'busy')
  if h[1] and h[2] ~= '1' then
    slots = slots + tonumber(h[1])
    used = used + redis.call('HLEN', ARGV[1] .. 'slots:' .. id)
    nbusy = nbusy + tonumber(h[3] or 0)
  end
end
return {slots, used, nbusy}`)

	// KEYS farm, slots; ARGV slot JSON, ttl. The farm's busy field counts
	// its busy slots, kept by every script that changes a slot.
	scriptReserve = script(`
local f = redis.call('HMGET', KEYS[1], 'slots', 'draining')
if not f[1] then return 'notfound' end
local s = cjson.decode(ARGV[1])
local old = redis.call('HGET', KEYS[2], s.id)
if old then
  if cjson.decode(old).owner == s.owner then return 'ok' end
  return 'conflict'
end
if f[2] == '1' then return 'draining' end
if redis.call('HLEN', KEYS[2]) >= tonumber(f[1]) then return 'full' end
s.since = now()
redis.call('HSET', KEYS[2], s.id, cjson.encode(s))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if busy(s) then redis.call('HINCRBY', KEYS[1], 'busy', 1) end
return 'ok'`)

	// KEYS farm, slots; ARGV id, owner, from, instance, state, session.
	scriptUpdateSlot = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 'notfound' end
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 'notfound' end
local s = cjson.decode(raw)
if s.owner ~= ARGV[2] or s.state ~= ARGV[3] then return 'conflict' end
local was = busy(s)
s.instance = ARGV[4]
s.state = ARGV[5]
if ARGV[6] == '' then s.session = nil else s.session = ARGV[6] end
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(s))
local is = busy(s)
if was ~= is then redis.call('HINCRBY', KEYS[1], 'busy', is and 1 or -1) end
return 'ok'`)

	// KEYS farm, slots; ARGV id.
	scriptFreeSlot = script(`
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 'ok' end
redis.call('HDEL', KEYS[2], ARGV[1])
if busy(cjson.decode(raw)) and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'busy', -1)
end
return 'ok'`)

	// KEYS farm, slots.
	scriptSlots = script(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 'notfound' end
return redis.call('HVALS', KEYS[2])`)

	// KEYS session keys; ARGV owner, ttl.
	scriptTouchSessions = script(`
for _, k in ipairs(KEYS) do
  local raw = redis.call('GET', k)
  if raw and cjson.decode(raw).owner == ARGV[1] then redis.call('PEXPIRE', k, ARGV[2]) end
end
return 'ok'`)

	// KEYS session; ARGV owner, ttl, prefix. Returns {the session as it
	// was}. The slot changes owner only if it still serves the session.
	scriptClaimSession = script(`
local raw = redis.call('GET', KEYS[1])
if not raw then return 'notfound' end
local s = cjson.decode(raw)
s.owner = ARGV[1]
redis.call('SET', KEYS[1], cjson.encode(s), 'PX', ARGV[2])
if type(s.farm) == 'string' and type(s.slot) == 'string' then
  local sk = ARGV[3] .. 'slots:' .. s.farm
  local sr = redis.call('HGET', sk, s.slot)
  if sr then
    local sl = cjson.decode(sr)
    if sl.session == s.id then
      sl.owner = ARGV[1]
      redis.call('HSET', sk, s.slot, cjson.encode(sl))
    end
  end
end
return {raw}`)

	// KEYS session; ARGV owner.
	scriptDeleteSession = script(`
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw).owner == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 'ok'`)
)

// slotRecord is a Slot as the scripts keep it: Since is microseconds of
// the server's clock, set by Reserve.
type slotRecord struct {
	ID       string    `json:"id"`
	Owner    string    `json:"owner"`
	Pool     string    `json:"pool"`
	Instance string    `json:"instance"`
	State    SlotState `json:"state"`
	Session  string    `json:"session,omitempty"`
	Since    string    `json:"since,omitempty"`
}

func micros(s string) (time.Time, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("store: redis: bad time %q", s)
	}
	return time.UnixMicro(n), nil
}

// parseFarm reads the array the scripts' farm function returns.
func parseFarm(v any) (Farm, error) {
	a, ok := v.([]any)
	if !ok || len(a) != 8 {
		return Farm{}, fmt.Errorf("store: redis: malformed farm record %v", v)
	}
	str := func(i int) string { s, _ := a[i].(string); return s }
	num := func(i int) int { n, _ := a[i].(int64); return int(n) }
	f := Farm{ID: str(0), Owner: str(2), Slots: num(3), Draining: str(4) == "1", Used: num(6), Busy: num(7)}
	if spec := str(1); spec != "" {
		f.Spec = []byte(spec)
	}
	var err error
	f.Seen, err = micros(str(5))
	return f, err
}

// PutFarm implements Store.
func (r *Redis) PutFarm(ctx context.Context, f Farm) error {
	if f.ID == "" {
		return errors.New("store: farm without id")
	}
	v, err := r.run(ctx, "put farm", scriptPutFarm, []string{r.farms, r.farmKey(f.ID), r.slotsKey(f.ID)},
		f.ID, f.Spec, f.Owner, f.Slots, flag(f.Draining), r.farmTTL)
	if err != nil {
		return err
	}
	return status(v, "farm "+strconv.Quote(f.ID))
}

// TouchFarm implements Store; the farm comes back with Used and Busy.
func (r *Redis) TouchFarm(ctx context.Context, id string, draining bool) (Farm, error) {
	v, err := r.run(ctx, "touch farm", scriptTouchFarm, []string{r.farms, r.farmKey(id), r.slotsKey(id)},
		id, flag(draining), r.farmTTL)
	if err != nil {
		return Farm{}, err
	}
	if _, ok := v.(string); ok {
		return Farm{}, status(v, "farm "+strconv.Quote(id))
	}
	return parseFarm(v)
}

// DrainFarm implements Store.
func (r *Redis) DrainFarm(ctx context.Context, id string) error {
	v, err := r.run(ctx, "drain farm", scriptDrainFarm, []string{r.farmKey(id)})
	if err != nil {
		return err
	}
	return status(v, "farm "+strconv.Quote(id))
}

// RemoveFarm implements Store.
func (r *Redis) RemoveFarm(ctx context.Context, id string) (bool, error) {
	v, err := r.run(ctx, "remove farm", scriptRemoveFarm, []string{r.farms, r.farmKey(id), r.slotsKey(id)}, id)
	if err != nil {
		return false, err
	}
	return v == int64(1), nil
}

// Farms implements Store.
func (r *Redis) Farms(ctx context.Context) ([]Farm, error) {
	v, err := r.run(ctx, "farms", scriptFarms, []string{r.farms}, r.prefix)
	if err != nil {
		return nil, err
	}
	a, _ := v.([]any)
	farms := make([]Farm, 0, len(a))
	for _, fv := range a {
		f, err := parseFarm(fv)
		if err != nil {
			return nil, err
		}
		farms = append(farms, f)
	}
	slices.SortFunc(farms, func(a, b Farm) int { return cmp.Compare(a.ID, b.ID) })
	return farms, nil
}

// Reserve implements Store. Reserving a slot id the owner already holds on
// the farm succeeds and changes nothing, so that go-redis may retry a call
// whose reply it lost; one another owner holds is ErrConflict.
func (r *Redis) Reserve(ctx context.Context, farm string, s Slot) error {
	if s.ID == "" {
		return errors.New("store: slot without id")
	}
	b, err := json.Marshal(slotRecord{ID: s.ID, Owner: s.Owner, Pool: s.Pool, Instance: s.Instance,
		State: s.State, Session: s.Session})
	if err != nil {
		return err
	}
	v, err := r.run(ctx, "reserve", scriptReserve, []string{r.farmKey(farm), r.slotsKey(farm)}, b, r.farmTTL)
	if err != nil {
		return err
	}
	return status(v, fmt.Sprintf("slot %q of farm %q", s.ID, farm))
}

// UpdateSlot implements Store.
func (r *Redis) UpdateSlot(ctx context.Context, farm string, s Slot, from SlotState) error {
	v, err := r.run(ctx, "update slot", scriptUpdateSlot, []string{r.farmKey(farm), r.slotsKey(farm)},
		s.ID, s.Owner, string(from), s.Instance, string(s.State), s.Session)
	if err != nil {
		return err
	}
	return status(v, fmt.Sprintf("slot %q of farm %q", s.ID, farm))
}

// FreeSlot implements Store.
func (r *Redis) FreeSlot(ctx context.Context, farm, slot string) error {
	_, err := r.run(ctx, "free slot", scriptFreeSlot, []string{r.farmKey(farm), r.slotsKey(farm)}, slot)
	return err
}

// Slots implements Store. ErrNotFound for an unknown farm.
func (r *Redis) Slots(ctx context.Context, farm string) ([]Slot, error) {
	v, err := r.run(ctx, "slots", scriptSlots, []string{r.farmKey(farm), r.slotsKey(farm)})
	if err != nil {
		return nil, err
	}
	if _, ok := v.(string); ok {
		return nil, status(v, "farm "+strconv.Quote(farm))
	}
	a, _ := v.([]any)
	slots := make([]Slot, 0, len(a))
	for _, sv := range a {
		raw, _ := sv.(string)
		var rec slotRecord
		if err := json.Unmarshal([]byte(raw), &rec); err != nil {
			return nil, fmt.Errorf("store: redis: slot of farm %q: %w", farm, err)
		}
		since, err := micros(rec.Since)
		if err != nil {
			return nil, err
		}
		slots = append(slots, Slot{ID: rec.ID, Owner: rec.Owner, Pool: rec.Pool, Instance: rec.Instance,
			State: rec.State, Session: rec.Session, Since: since})
	}
	slices.SortFunc(slots, func(a, b Slot) int { return cmp.Compare(a.ID, b.ID) })
	return slots, nil
}

// Capacity implements Store.
func (r *Redis) Capacity(ctx context.Context) (Capacity, error) {
	v, err := r.run(ctx, "capacity", scriptCapacity, []string{r.farms}, r.prefix)
	if err != nil {
		return Capacity{}, err
	}
	a, _ := v.([]any)
	if len(a) != 3 {
		return Capacity{}, fmt.Errorf("store: redis: malformed capacity %v", v)
	}
	n := func(i int) int { x, _ := a[i].(int64); return int(x) }
	return Capacity{Slots: n(0), Used: n(1), Busy: n(2)}, nil
}

// PutSession implements Store.
func (r *Redis) PutSession(ctx context.Context, s Session, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	if err := r.c.Set(octx, r.sessionKey(s.TokenHash), b, time.Duration(ms(ttl))*time.Millisecond).Err(); err != nil {
		return r.c.Fail(ctx, "put session", err)
	}
	return nil
}

// TouchSessions implements Store.
func (r *Redis) TouchSessions(ctx context.Context, owner string, tokenHashes []string, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	if len(tokenHashes) == 0 {
		return nil
	}
	keys := make([]string, len(tokenHashes))
	for i, th := range tokenHashes {
		keys[i] = r.sessionKey(th)
	}
	_, err := r.run(ctx, "touch sessions", scriptTouchSessions, keys, owner, ms(ttl))
	return err
}

// ClaimSession implements Store. The session's slot changes owner only if
// it still serves the session; a slot that is gone or serves another
// session is left alone.
func (r *Redis) ClaimSession(ctx context.Context, tokenHash, owner string, ttl time.Duration) (Session, error) {
	if err := checkTTL(ttl); err != nil {
		return Session{}, err
	}
	v, err := r.run(ctx, "claim session", scriptClaimSession, []string{r.sessionKey(tokenHash)}, owner, ms(ttl), r.prefix)
	if err != nil {
		return Session{}, err
	}
	a, ok := v.([]any)
	if !ok || len(a) != 1 {
		return Session{}, status(v, "session")
	}
	raw, _ := a[0].(string)
	var s Session
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return Session{}, fmt.Errorf("store: redis: session: %w", err)
	}
	return s, nil
}

// DeleteSession implements Store.
func (r *Redis) DeleteSession(ctx context.Context, tokenHash, owner string) error {
	_, err := r.run(ctx, "delete session", scriptDeleteSession, []string{r.sessionKey(tokenHash)}, owner)
	return err
}

// Alive implements Store.
func (r *Redis) Alive(ctx context.Context, id string, ttl time.Duration) error {
	if err := checkTTL(ttl); err != nil {
		return err
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	if err := r.c.Set(octx, r.managerKey(id), "1", time.Duration(ms(ttl))*time.Millisecond).Err(); err != nil {
		return r.c.Fail(ctx, "alive", err)
	}
	return nil
}

// ManagerAlive implements Store.
func (r *Redis) ManagerAlive(ctx context.Context, id string) (bool, error) {
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	n, err := r.c.Exists(octx, r.managerKey(id)).Result()
	if err != nil {
		return false, r.c.Fail(ctx, "manager alive", err)
	}
	return n == 1, nil
}

// Gone implements Store.
func (r *Redis) Gone(ctx context.Context, id string) error {
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	if err := r.c.Del(octx, r.managerKey(id)).Err(); err != nil {
		return r.c.Fail(ctx, "manager gone", err)
	}
	return nil
}

// Publish implements Store.
func (r *Redis) Publish(ctx context.Context, e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	if err := r.c.Publish(octx, r.channel, b).Err(); err != nil {
		return r.c.Fail(ctx, "publish", err)
	}
	return nil
}

// Subscribe implements Store. It returns once the server confirmed the
// subscription, so every event published after it returns is delivered
// unless the connection breaks. The channel also closes when the store
// does. A subscriber more than subscriberBuffer events behind loses the
// newer ones: the server's connection is drained regardless, so that a slow
// manager does not get disconnected for its output buffer.
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

// forward passes events from ps to out until ctx ends or the store closes.
// go-redis's channel stays open across reconnections; it closes only with
// ps.
func (r *Redis) forward(ctx context.Context, ps *redis.PubSub, out chan<- Event) {
	defer r.wg.Done()
	defer close(out)
	defer func() { _ = ps.Close() }()
	msgs := ps.Channel()
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
			var e Event
			if err := json.Unmarshal([]byte(m.Payload), &e); err != nil {
				r.log.Warn("store: malformed event", "channel", m.Channel, "err", err)
				continue
			}
			select {
			case out <- e:
			default:
			}
		}
	}
}

// Ping implements Store.
func (r *Redis) Ping(ctx context.Context) error {
	octx, cancel := r.c.Op(ctx)
	defer cancel()
	if err := r.c.Ping(octx).Err(); err != nil {
		return r.c.Fail(ctx, "ping", err)
	}
	return nil
}

// Close ends every subscription, waits for them and closes the client;
// later calls fail with ErrUnavailable. Closing again returns the first
// result.
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
