package auth

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisKeyStore keeps API keys in Redis, so that the managers sharing the
// server share the keys: a key created or revoked on one is seen by every
// one on its next lookup. Each key is a hash <prefix>apikey:<id>; the set
// <prefix>apikeys lists the ids. Keys are never deleted, only revoked.
type RedisKeyStore struct {
	c      redis.UniversalClient
	prefix string
}

var _ KeyStore = (*RedisKeyStore)(nil)

// NewRedisKeyStore keeps keys in c under prefix (e.g. "drover:"). The
// caller owns c.
func NewRedisKeyStore(c redis.UniversalClient, prefix string) *RedisKeyStore {
	return &RedisKeyStore{c: c, prefix: prefix}
}

func (s *RedisKeyStore) keyOf(id string) string { return s.prefix + "apikey:" + id }
func (s *RedisKeyStore) index() string          { return s.prefix + "apikeys" }

// Create implements KeyStore.
func (s *RedisKeyStore) Create(ctx context.Context, k APIKey) (string, APIKey, error) {
	k, secret, hash, err := prepareKey(k)
	if err != nil {
		return "", APIKey{}, err
	}
	roles, err := json.Marshal(k.Roles)
	if err != nil {
		return "", APIKey{}, err
	}
	_, err = s.c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.keyOf(k.ID),
			"name", k.Name, "tenant", k.Tenant, "roles", string(roles),
			"read_only", k.ReadOnly, "created", k.Created.Format(time.RFC3339Nano),
			"revoked", false, "hash", hash)
		p.SAdd(ctx, s.index(), k.ID)
		return nil
	})
	if err != nil {
		return "", APIKey{}, fmt.Errorf("auth: api key store: %w", err)
	}
	return secret, cloneKey(k), nil
}

// List implements KeyStore.
func (s *RedisKeyStore) List(ctx context.Context) ([]APIKey, error) {
	ids, err := s.c.SMembers(ctx, s.index()).Result()
	if err != nil {
		return nil, fmt.Errorf("auth: api key store: %w", err)
	}
	cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.HGetAll(ctx, s.keyOf(id))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("auth: api key store: %w", err)
	}
	keys := make([]APIKey, 0, len(ids))
	for i, c := range cmds {
		k, _, err := decodeRedisKey(ids[i], c.(*redis.MapStringStringCmd).Val())
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	sortKeys(keys)
	return keys, nil
}

// revokeScript marks a key revoked if it exists.
var revokeScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'revoked', '1')
  return 1
end
return 0`)

// Revoke implements KeyStore.
func (s *RedisKeyStore) Revoke(ctx context.Context, id string) error {
	if !validID(id) {
		return ErrUnknownKey
	}
	n, err := revokeScript.Run(ctx, s.c, []string{s.keyOf(id)}).Int()
	if err != nil {
		return fmt.Errorf("auth: api key store: %w", err)
	}
	if n == 0 {
		return ErrUnknownKey
	}
	return nil
}

// Lookup implements KeyStore.
func (s *RedisKeyStore) Lookup(ctx context.Context, secret string) (APIKey, error) {
	id, ok := secretID(secret)
	if !ok {
		return APIKey{}, ErrUnknownKey
	}
	m, err := s.c.HGetAll(ctx, s.keyOf(id)).Result()
	if err != nil {
		return APIKey{}, fmt.Errorf("auth: api key store: %w", err)
	}
	if len(m) == 0 {
		return APIKey{}, ErrUnknownKey
	}
	k, hash, err := decodeRedisKey(id, m)
	if err != nil {
		return APIKey{}, err
	}
	if !sameHash(hash, hashSecret(secret)) || k.Revoked {
		return APIKey{}, ErrUnknownKey
	}
	return k, nil
}

// decodeRedisKey reads the hash of key id.
func decodeRedisKey(id string, m map[string]string) (APIKey, string, error) {
	k := APIKey{ID: id, Name: m["name"], Tenant: m["tenant"], ReadOnly: m["read_only"] == "1", Revoked: m["revoked"] == "1"}
	bad := func(what string) (APIKey, string, error) {
		return APIKey{}, "", fmt.Errorf("auth: api key store: key %s has a bad %s", id, what)
	}
	if err := json.Unmarshal([]byte(m["roles"]), &k.Roles); err != nil {
		return bad("roles field")
	}
	var err error
	if k.Created, err = time.Parse(time.RFC3339Nano, m["created"]); err != nil {
		return bad("created field")
	}
	if len(m["hash"]) != 64 {
		return bad("hash field")
	}
	return k, m["hash"], nil
}
