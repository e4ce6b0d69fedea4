package auth

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// cache holds values loaded from the database, kept current by invalidations. It is only
// trusted while trusted() is true (the notification listener is connected): otherwise every
// get loads afresh. A load that overlaps an invalidation is not stored, so a value read
// before a change can never be cached after it.
type cache[K comparable, V any] struct {
	m       *ttlMap[K, V]
	trusted func() bool
	gen     atomic.Uint64
	mu      sync.Mutex
}

func newCache[K comparable, V any](trusted func() bool, size int, ttl time.Duration) *cache[K, V] {
	return &cache[K, V]{m: newTTLMap[K, V](size, ttl), trusted: trusted}
}

// get returns the cached value for k, or loads, caches and returns it.
func (c *cache[K, V]) get(ctx context.Context, k K, load func(context.Context, K) (V, error)) (V, error) {
	if c.trusted() {
		if v, ok := c.m.get(k); ok {
			return v, nil
		}
	}
	gen := c.gen.Load()
	v, err := load(ctx, k)
	if err != nil {
		return v, err
	}
	c.mu.Lock()
	if c.gen.Load() == gen && c.trusted() {
		c.m.put(k, v)
	}
	c.mu.Unlock()
	return v, nil
}

func (c *cache[K, V]) remove(k K) {
	c.mu.Lock()
	c.gen.Add(1)
	c.m.remove(k)
	c.mu.Unlock()
}

func (c *cache[K, V]) removeIf(match func(K) bool) {
	c.mu.Lock()
	c.gen.Add(1)
	c.m.removeIf(match)
	c.mu.Unlock()
}

func (c *cache[K, V]) purge() {
	c.mu.Lock()
	c.gen.Add(1)
	c.m.purge()
	c.mu.Unlock()
}

// touchThrottle lets an action through at most once per interval per key (recording an
// API key's last use without a write on every request).
type touchThrottle struct {
	mu       sync.Mutex
	last     map[string]time.Time
	interval time.Duration
}

func newTouchThrottle(interval time.Duration) *touchThrottle {
	return &touchThrottle{last: map[string]time.Time{}, interval: interval}
}

func (t *touchThrottle) allow(key string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.last[key]) < t.interval {
		return false
	}
	if len(t.last) > 100000 { // bounded: forget everything rather than grow
		clear(t.last)
	}
	t.last[key] = now
	return true
}

// ttlMap is a size-bounded map whose entries expire. It is written here rather than taken
// from golang-lru's expirable package because that one starts a goroutine per instance
// that never stops. Eviction is coarse (when full, expired entries go, then everything):
// these are caches of small rows that reload in one query.
type ttlMap[K comparable, V any] struct {
	mu   sync.Mutex
	m    map[K]ttlEntry[V]
	size int
	ttl  time.Duration
}

type ttlEntry[V any] struct {
	v       V
	expires time.Time
}

func newTTLMap[K comparable, V any](size int, ttl time.Duration) *ttlMap[K, V] {
	return &ttlMap[K, V]{m: map[K]ttlEntry[V]{}, size: size, ttl: ttl}
}

func (t *ttlMap[K, V]) get(k K) (V, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.m[k]
	if !ok || time.Now().After(e.expires) {
		var zero V
		return zero, false
	}
	return e.v, true
}

func (t *ttlMap[K, V]) put(k K, v V) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := time.Now()
	if len(t.m) >= t.size {
		for key, e := range t.m {
			if now.After(e.expires) {
				delete(t.m, key)
			}
		}
		if len(t.m) >= t.size {
			clear(t.m)
		}
	}
	t.m[k] = ttlEntry[V]{v: v, expires: now.Add(t.ttl)}
}

func (t *ttlMap[K, V]) remove(k K) {
	t.mu.Lock()
	delete(t.m, k)
	t.mu.Unlock()
}

func (t *ttlMap[K, V]) removeIf(match func(K) bool) {
	t.mu.Lock()
	for k := range t.m {
		if match(k) {
			delete(t.m, k)
		}
	}
	t.mu.Unlock()
}

func (t *ttlMap[K, V]) purge() {
	t.mu.Lock()
	clear(t.m)
	t.mu.Unlock()
}
