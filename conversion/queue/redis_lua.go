package queue

import "github.com/redis/go-redis/v9"

// The scripts. Each call that changes more than one key is one script, so
// that a job is never half moved: its record (job:<id>), its stream entry
// and pending-list entry, its delayed-set member and the counters change
// together or not at all, whichever manager runs it. The scripts build the
// keys of the jobs they find from the prefix (ARGV), so they need one
// server, not a cluster.
//
// Times are the server's (TIME), in milliseconds since the epoch, written
// as decimal strings: Lua numbers are doubles, and Redis would print them
// in its own way.
//
// The attempt is the delivery count of the job's pending entry: each
// attempt has its own stream entry (a retry or a reclaimed job is added
// anew, at the tail), and Lease sets the entry's delivery count to the
// attempt with XCLAIM RETRYCOUNT, so XPENDING shows it and Reclaim reads it
// back. A lease's length is the entry's idle time: XAUTOCLAIM takes entries
// idle for MaxLease, and Lease and Renew set the idle time to MaxLease −
// the lease's length (XCLAIM IDLE), so the entry becomes claimable exactly
// when the lease expires.
const luaLib = `
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%d', n) end
-- ready adds the job's entry at the stream's tail.
local function ready(stream, jk, id)
  local sid = redis.call('XADD', stream, '*', 'j', id)
  redis.call('HSET', jk, 'state', 'pending', 'sid', sid)
  redis.call('HDEL', jk, 'token', 'exp', 'due')
  return sid
end
-- promote moves due delayed jobs into the stream and counts them.
local function promote(stream, delayed, prefix, now)
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 256)
  for _, id in ipairs(due) do
    redis.call('ZREM', delayed, id)
    local jk = prefix .. id
    if redis.call('HGET', jk, 'state') == 'delayed' then ready(stream, jk, id) end
  end
  return #due
end
-- finish records the job's end, with more fields; the record expires
-- after the retention.
local function finish(jk, stats, state, now, retention, more)
  redis.call('HSET', jk, 'state', state, 'ended', int(now), unpack(more))
  redis.call('HDEL', jk, 'token', 'sid', 'payload', 'exp', 'due')
  redis.call('PEXPIRE', jk, retention)
  redis.call('HINCRBY', stats, state, 1)
end
-- memo is the fields that keep the outcome an attempt's Complete or Fail
-- returned, for its repeated calls.
local function memo(token, call, o)
  return {'ltok', token, 'lcall', call, 'lstate', o[2], 'lattempt', o[3], 'lconsumer', o[5],
    'lreason', o[6], 'lretry', o[7]}
end
-- holder checks that token holds the job's lease; else the reply.
local function holder(jk, token, call)
  local h = redis.call('HMGET', jk, 'state', 'token', 'attempts', 'item', 'consumer', 'ltok', 'lcall',
    'lstate', 'lattempt', 'lconsumer', 'lreason', 'lretry')
  if not h[1] then return nil, {'notfound'} end
  if h[1] == 'leased' and h[2] == token then return h, nil end
  if h[6] == token and h[7] == call then
    return nil, {'dup', h[8], h[9], h[4] or '', h[10] or '', h[11] or '', h[12] or ''}
  end
  return nil, {'lost'}
end
`

func script(body string) *redis.Script { return redis.NewScript(luaLib + body) }

var (
	// KEYS job, stream, delayed; ARGV id, item, payload, delay ms, channel.
	scriptEnqueue = script(`
local st = redis.call('HGET', KEYS[1], 'state')
if st then
  if st ~= 'done' and st ~= 'failed' then return 'exists' end
  redis.call('DEL', KEYS[1])
end
local now = now_ms()
local d = tonumber(ARGV[4])
if d > 0 then
  redis.call('ZADD', KEYS[3], now + d, ARGV[1])
  redis.call('HSET', KEYS[1], 'item', ARGV[2], 'payload', ARGV[3], 'attempts', '0', 'created', int(now),
    'state', 'delayed', 'due', int(now + d))
else
  local sid = redis.call('XADD', KEYS[2], '*', 'j', ARGV[1])
  redis.call('HSET', KEYS[1], 'item', ARGV[2], 'payload', ARGV[3], 'attempts', '0', 'created', int(now),
    'state', 'pending', 'sid', sid)
  redis.call('PUBLISH', ARGV[5], '1')
end
return 'ok'`)

	// KEYS stream, delayed; ARGV group, consumer, max, lease ms,
	// MaxLease ms, job key prefix, channel. Reply {next due ms or '',
	// {{id, item, payload, attempt, token, expires ms}…}}.
	scriptLease = script(`
local now = now_ms()
local promoted = promote(KEYS[1], KEYS[2], ARGV[6], now)
local max, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local idle = tonumber(ARGV[5]) - lease
local out = {}
local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', max, 'STREAMS', KEYS[1], '>')
if r then
  for _, e in ipairs(r[1][2]) do
    local sid, id = e[1], e[2][2]
    local jk = ARGV[6] .. id
    local h = redis.call('HMGET', jk, 'sid', 'attempts', 'item', 'payload')
    if h[1] ~= sid then
      -- an entry of a job deleted or moved on: drop it
      redis.call('XACK', KEYS[1], ARGV[1], sid)
      redis.call('XDEL', KEYS[1], sid)
    else
      local attempt = tonumber(h[2]) + 1
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, sid, 'IDLE', idle, 'RETRYCOUNT', attempt, 'JUSTID')
      local exp = int(now + lease)
      redis.call('HSET', jk, 'state', 'leased', 'attempts', int(attempt), 'token', sid, 'consumer', ARGV[2], 'exp', exp)
      out[#out + 1] = {id, h[3] or '', h[4] or '', attempt, sid, exp}
    end
  end
end
if promoted > 0 and #out == max then redis.call('PUBLISH', ARGV[7], int(promoted)) end
local next = ''
if #out == 0 then
  local z = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  if z[2] then next = z[2] end
end
return {next, out}`)

	// KEYS job, stream; ARGV token, group, lease ms, MaxLease ms.
	// Reply {'ok', expires ms} or {'notfound'} or {'lost'}.
	scriptRenew = script(`
local h = redis.call('HMGET', KEYS[1], 'state', 'token', 'consumer')
if not h[1] then return {'notfound'} end
if h[1] ~= 'leased' or h[2] ~= ARGV[1] then return {'lost'} end
local now = now_ms()
local idle = tonumber(ARGV[4]) - tonumber(ARGV[3])
local c = redis.call('XCLAIM', KEYS[2], ARGV[2], h[3], 0, ARGV[1], 'IDLE', idle, 'JUSTID')
if #c == 0 then return {'lost'} end
local exp = int(now + tonumber(ARGV[3]))
redis.call('HSET', KEYS[1], 'exp', exp)
return {'ok', exp}`)

	// KEYS job, stream, stats; ARGV token, group, retention ms.
	// Reply {'ok'|'dup', state, attempt, item, consumer, reason, retry ms}
	// or {'notfound'} or {'lost'}.
	scriptComplete = script(`
local h, verdict = holder(KEYS[1], ARGV[1], 'complete')
if not h then return verdict end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
local o = {'ok', 'done', h[3], h[4] or '', h[5] or '', '', ''}
finish(KEYS[1], KEYS[3], 'done', now_ms(), ARGV[3], memo(ARGV[1], 'complete', o))
return o`)

	// KEYS job, stream, delayed, stats; ARGV token, group, reason, final
	// (1 or 0), MaxAttempts, backoff base ms, backoff max ms, jitter,
	// random draw, retention ms, id, channel. Reply as scriptComplete's.
	scriptFail = script(`
local h, verdict = holder(KEYS[1], ARGV[1], 'fail')
if not h then return verdict end
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.call('XDEL', KEYS[2], ARGV[1])
local now = now_ms()
local attempt = tonumber(h[3])
local o = {'ok', 'failed', h[3], h[4] or '', h[5] or '', ARGV[3], ''}
if ARGV[4] == '1' or attempt >= tonumber(ARGV[5]) then
  local more = memo(ARGV[1], 'fail', o)
  more[#more + 1], more[#more + 2] = 'reason', ARGV[3]
  finish(KEYS[1], KEYS[4], 'failed', now, ARGV[10], more)
  return o
end
local base, cap = tonumber(ARGV[6]), tonumber(ARGV[7])
local d = cap
if attempt < 63 then d = math.min(base * math.pow(2, attempt - 1), cap) end
local jitter = tonumber(ARGV[8])
if jitter > 0 then d = d - d * jitter * tonumber(ARGV[9]) end
d = math.floor(d)
o[2], o[7] = 'delayed', int(now + d)
redis.call('HSET', KEYS[1], 'reason', ARGV[3], unpack(memo(ARGV[1], 'fail', o)))
if d > 0 then
  redis.call('HSET', KEYS[1], 'state', 'delayed', 'due', o[7])
  redis.call('HDEL', KEYS[1], 'token', 'sid', 'exp')
  redis.call('ZADD', KEYS[3], now + d, ARGV[11])
else
  ready(KEYS[2], KEYS[1], ARGV[11])
  redis.call('PUBLISH', ARGV[12], '1')
end
return o`)

	// KEYS stream, delayed, stats; ARGV group, reclaiming consumer,
	// MaxLease ms, cursor, count, job key prefix, MaxAttempts, retention
	// ms, channel. Reply {next cursor, {{id, item, consumer, attempt,
	// state}…}}.
	scriptReclaim = script(`
local now = now_ms()
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], 'COUNT', ARGV[5], 'JUSTID')
local out, woke = {}, 0
for _, sid in ipairs(r[2]) do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], sid, sid, 1)
  local attempt = 0
  if p[1] then attempt = tonumber(p[1][4]) end
  local e = redis.call('XRANGE', KEYS[1], sid, sid)
  redis.call('XACK', KEYS[1], ARGV[1], sid)
  redis.call('XDEL', KEYS[1], sid)
  if e[1] then
    local id = e[1][2][2]
    local jk = ARGV[6] .. id
    local h = redis.call('HMGET', jk, 'state', 'token', 'item', 'consumer')
    if h[1] == 'leased' and h[2] == sid then
      redis.call('HSET', jk, 'reason', 'lease expired', 'attempts', int(attempt))
      local state = 'pending'
      if attempt >= tonumber(ARGV[7]) then
        state = 'failed'
        finish(jk, KEYS[3], 'failed', now, ARGV[8], {})
      else
        ready(KEYS[1], jk, id)
        woke = woke + 1
      end
      out[#out + 1] = {id, h[3] or '', h[4] or '', attempt, state}
    end
  end
end
woke = woke + promote(KEYS[1], KEYS[2], ARGV[6], now)
if woke > 0 then redis.call('PUBLISH', ARGV[9], int(woke)) end
return {r[1], out}`)

	// KEYS stream; ARGV group, idle ms. Deletes the group's consumers that
	// hold no entry and were idle that long (farms gone), and counts them.
	scriptPrune = script(`
local n = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  local m = {}
  for i = 1, #c, 2 do m[c[i]] = c[i + 1] end
  if m.pending == 0 and m.idle >= tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], m.name)
    n = n + 1
  end
end
return n`)

	// KEYS job, stream, delayed; ARGV group, id. Reply 'ok' or 'notfound'.
	scriptDelete = script(`
local h = redis.call('HMGET', KEYS[1], 'state', 'sid')
if not h[1] then return 'notfound' end
if h[2] then
  redis.call('XACK', KEYS[2], ARGV[1], h[2])
  redis.call('XDEL', KEYS[2], h[2])
end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 'ok'`)

	// KEYS stream, delayed, stats; ARGV group. Reply {pending, delayed,
	// leased, done, failed}. Every stream entry is pending or leased: an
	// entry leaves the pending list and the stream together.
	scriptStats = script(`
local len = redis.call('XLEN', KEYS[1])
local leased = redis.call('XPENDING', KEYS[1], ARGV[1])[1]
local s = redis.call('HMGET', KEYS[3], 'done', 'failed')
return {len - leased, redis.call('ZCARD', KEYS[2]), leased, tonumber(s[1]) or 0, tonumber(s[2]) or 0}`)
)
