package limits

import (
	"hash/maphash"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultMaxKeys is how many keys a Keyed remembers when Config.MaxKeys
// is 0. At about 200 bytes a key (measured: 163 and the key), some 13 MiB
// at most per limiter, of which Config has six.
const DefaultMaxKeys = 65536

// shardCount spreads keys over locks, so that tasks of different users
// rarely wait for each other.
const shardCount = 16

// sweepPerCall bounds how many idle keys one Allow drops, so that no call
// pays for a long quiet spell of many keys.
const sweepPerCall = 4

// Keyed is a token-bucket rate limiter per key (golang.org/x/time/rate).
//
// Its memory is bounded. A key whose bucket has filled up again is
// dropped, as it would behave exactly as a new one: keys idle for
// Burst/PerSecond seconds cost nothing. Each call drops a few such keys,
// least recently used first, and Sweep drops them all. Past MaxKeys, the
// least recently used key is dropped even if its bucket is not full: a
// flood of new keys can then give an old key a fresh bucket, but never
// grow memory. A nil *Keyed allows everything.
type Keyed struct {
	limit    rate.Limit
	burst    int
	perShard int
	seed     maphash.Seed
	shards   [shardCount]shard
	// now is time.Now; tests replace it.
	now func() time.Time
}

type shard struct {
	mu sync.Mutex
	m  map[string]*entry
	// A list by last use: head most recent, tail the least.
	head, tail *entry
}

type entry struct {
	key        string
	lim        *rate.Limiter
	prev, next *entry
}

// NewKeyed returns a limiter of r per key remembering at most maxKeys
// keys (DefaultMaxKeys when maxKeys <= 0), or nil when r is unlimited.
func NewKeyed(r Rate, maxKeys int) *Keyed {
	if r.Unlimited() {
		return nil
	}
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	k := &Keyed{limit: r.limit(), burst: r.burst(), perShard: max(1, (maxKeys+shardCount-1)/shardCount),
		seed: maphash.MakeSeed(), now: time.Now}
	for i := range k.shards {
		k.shards[i].m = map[string]*entry{}
	}
	return k
}

// Allow takes one event from key's bucket. When the bucket is empty it
// reports false and how long until the next event would be allowed.
func (k *Keyed) Allow(key string) (allowed bool, retryAfter time.Duration) {
	if k == nil {
		return true, 0
	}
	now := k.now()
	sh := &k.shards[maphash.String(k.seed, key)%shardCount]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[key]
	if e != nil {
		sh.unlink(e)
	}
	k.sweep(sh, now, sweepPerCall)
	if e == nil {
		if len(sh.m) >= k.perShard {
			old := sh.tail
			sh.unlink(old)
			delete(sh.m, old.key)
		}
		e = &entry{key: key, lim: rate.NewLimiter(k.limit, k.burst)}
		sh.m[key] = e
	}
	sh.pushFront(e)
	if e.lim.AllowN(now, 1) {
		return true, 0
	}
	return false, k.wait(e.lim.TokensAt(now))
}

// wait is how long the bucket takes to refill from tokens to one.
func (k *Keyed) wait(tokens float64) time.Duration {
	if k.limit == rate.Inf || tokens >= 1 {
		return 0
	}
	return time.Duration((1 - tokens) / float64(k.limit) * float64(time.Second))
}

// sweep drops up to n keys with full buckets from the tail of sh; it
// stops at the first key whose bucket is not full.
func (k *Keyed) sweep(sh *shard, now time.Time, n int) {
	for ; n > 0 && sh.tail != nil; n-- {
		e := sh.tail
		if e.lim.TokensAt(now) < float64(k.burst) {
			return
		}
		sh.unlink(e)
		delete(sh.m, e.key)
	}
}

// Sweep drops the keys whose buckets have filled up again, least recently
// used first, stopping in each shard at the first that has not.
func (k *Keyed) Sweep() {
	if k == nil {
		return
	}
	now := k.now()
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		k.sweep(sh, now, len(sh.m))
		sh.mu.Unlock()
	}
}

// Len is how many keys k remembers.
func (k *Keyed) Len() int {
	if k == nil {
		return 0
	}
	n := 0
	for i := range k.shards {
		sh := &k.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}

func (sh *shard) unlink(e *entry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (sh *shard) pushFront(e *entry) {
	e.next = sh.head
	if sh.head != nil {
		sh.head.prev = e
	}
	sh.head = e
	if sh.tail == nil {
		sh.tail = e
	}
}
