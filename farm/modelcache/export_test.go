package modelcache

// Waiting is the number of Gets waiting for another's fill.
func (c *Cache) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting
}

// EntryName is the name of a new entry file of key.
func EntryName(key string) string { return entryName(hashKey(key)) }

// HashKey is the hash an entry of key is named by.
func HashKey(key string) string { return hashKey(key) }
