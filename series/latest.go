package series

import (
	"context"
	"errors"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
)

// Value is the latest reading of one metric.
type Value struct {
	Metric string    `json:"metric" example:"temperature"`
	Value  float64   `json:"value" example:"21.5"`
	Time   time.Time `json:"time"`
}

// DeviceLatest is a device's latest readings, one per metric.
type DeviceLatest struct {
	DeviceID string  `json:"device_id"`
	Name     string  `json:"name,omitempty"`
	Kind     string  `json:"kind,omitempty"`
	Values   []Value `json:"values"`
}

// The latest values are durable in readings_latest (written in each commit's
// transaction) and cached in front of it: in-process by default, in Redis when configured.
// A cache entry is a device's metrics plus a "complete" mark set only when it was filled
// from PostgreSQL; commits merge their newer values into entries (creating partial ones),
// and a read serves only complete entries, so an entry never hides a metric or a newer
// value. Other nodes' commits arrive as notifications that drop the affected entries.

type cacheEntry struct {
	tenant   uuid.UUID
	values   map[string]latestValue
	complete bool
	expires  time.Time
}

const stripes = 4096

type latestCache struct {
	s     *Service
	mu    sync.Mutex
	m     map[uuid.UUID]*cacheEntry
	epoch atomic.Uint64
	// stripes count invalidations per device hash: a fill from PostgreSQL is kept only if
	// no invalidation happened while it read.
	stripes [stripes]atomic.Uint64

	redisDirty atomic.Bool // a Redis write failed: Redis is not trusted until its generation is bumped
	redisWrite chan []*message
	hits       atomic.Int64
	misses     atomic.Int64
}

func newLatestCache(s *Service) *latestCache {
	c := &latestCache{s: s, m: map[uuid.UUID]*cacheEntry{}}
	if s.redis != nil {
		c.redisWrite = make(chan []*message, 64)
	}
	return c
}

func stripeOf(device uuid.UUID) int { return int(device[15]) | int(device[14]&0x0f)<<8 }

// apply merges a committed batch into the cache (and queues it for Redis).
func (c *latestCache) apply(batch []*message) {
	newest := newestPerSeries(batch)
	if len(newest) == 0 {
		return
	}
	if c.redisWrite != nil {
		select {
		case c.redisWrite <- batch:
		default:
			c.redisDirty.Store(true) // Redis is too slow to keep up: stop trusting it
			c.s.metrics.cacheErrors.Inc()
		}
		return
	}
	expires := c.s.now().Add(c.s.cfg.LatestTTL)
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, v := range newest {
		e := c.m[k.device]
		if e == nil {
			if len(c.m) >= c.s.cfg.CacheDevices {
				c.evictLocked()
			}
			e = &cacheEntry{tenant: k.tenant, values: map[string]latestValue{}}
			c.m[k.device] = e
		}
		if cur, ok := e.values[k.metric]; !ok || !v.ts.Before(cur.ts) {
			e.values[k.metric] = v
		}
		e.expires = expires
	}
}

// evictLocked drops about a sixteenth of the entries, chosen at random (map order).
func (c *latestCache) evictLocked() {
	n := max(1, len(c.m)/16)
	for k := range c.m {
		delete(c.m, k)
		if n--; n == 0 {
			return
		}
	}
}

func (c *latestCache) forgetDevice(device uuid.UUID) {
	c.stripes[stripeOf(device)].Add(1)
	c.mu.Lock()
	delete(c.m, device)
	c.mu.Unlock()
	if c.s.redis != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := c.s.redis.Eval(ctx, redisForget, []string{redisGenKey}, redisPrefix, device.String()).Err(); err != nil {
			c.redisDirty.Store(true)
		}
	}
}

func (c *latestCache) forgetTenant(tenant uuid.UUID) {
	c.epoch.Add(1)
	c.mu.Lock()
	for k, e := range c.m {
		if e.tenant == tenant {
			delete(c.m, k)
		}
	}
	c.mu.Unlock()
}

// flushLocal empties the in-process cache (after the notification connection was lost:
// other nodes' commits may have been missed).
func (c *latestCache) flushLocal() {
	c.epoch.Add(1)
	c.mu.Lock()
	clear(c.m)
	c.mu.Unlock()
}

// lookup returns the cached complete entries of devices, and the devices it lacks.
func (c *latestCache) lookup(ctx context.Context, tenant uuid.UUID, devices []uuid.UUID) (map[uuid.UUID]map[string]latestValue, []uuid.UUID) {
	out := map[uuid.UUID]map[string]latestValue{}
	if c.s.redis != nil {
		if c.redisDirty.Load() {
			return out, devices
		}
		got, err := c.redisLookup(ctx, tenant, devices)
		if err != nil {
			c.s.metrics.cacheErrors.Inc()
			return out, devices
		}
		out = got
	} else if c.s.listener.Healthy() {
		now := c.s.now()
		c.mu.Lock()
		for _, d := range devices {
			if e := c.m[d]; e != nil && e.complete && e.tenant == tenant && now.Before(e.expires) {
				vals := make(map[string]latestValue, len(e.values))
				for k, v := range e.values {
					vals[k] = v
				}
				out[d] = vals
			}
		}
		c.mu.Unlock()
	}
	var missing []uuid.UUID
	for _, d := range devices {
		if _, ok := out[d]; !ok {
			missing = append(missing, d)
		}
	}
	c.hits.Add(int64(len(devices) - len(missing)))
	c.misses.Add(int64(len(missing)))
	return out, missing
}

type fillMark struct {
	epoch   uint64
	stripes map[uuid.UUID]uint64
}

func (c *latestCache) mark(devices []uuid.UUID) fillMark {
	m := fillMark{epoch: c.epoch.Load(), stripes: make(map[uuid.UUID]uint64, len(devices))}
	for _, d := range devices {
		m.stripes[d] = c.stripes[stripeOf(d)].Load()
	}
	return m
}

// fill stores what was read from PostgreSQL as complete entries, merging with values
// committed meanwhile, unless an invalidation happened since mark.
func (c *latestCache) fill(ctx context.Context, tenant uuid.UUID, mark fillMark, vals map[uuid.UUID]map[string]latestValue) {
	if c.s.redis != nil {
		if !c.redisDirty.Load() {
			if err := c.redisFill(ctx, tenant, vals); err != nil {
				c.redisDirty.Store(true)
				c.s.metrics.cacheErrors.Inc()
			}
		}
		return
	}
	if c.epoch.Load() != mark.epoch {
		return
	}
	expires := c.s.now().Add(c.s.cfg.LatestTTL)
	c.mu.Lock()
	defer c.mu.Unlock()
	for d, v := range vals {
		if c.stripes[stripeOf(d)].Load() != mark.stripes[d] {
			continue
		}
		e := c.m[d]
		if e == nil {
			if len(c.m) >= c.s.cfg.CacheDevices {
				c.evictLocked()
			}
			e = &cacheEntry{tenant: tenant, values: map[string]latestValue{}, expires: expires}
			c.m[d] = e
		}
		for metric, lv := range v {
			if cur, ok := e.values[metric]; !ok || lv.ts.After(cur.ts) {
				e.values[metric] = lv
			}
		}
		e.complete = true
	}
}

// Redis keys: strata:latest:<generation>:<device> is a hash of metric → "<unix µs>|<value>",
// with "_t" the tenant and "_c" set once filled from PostgreSQL. Bumping the generation
// (strata:latest:gen) abandons every key at once; they expire within LatestTTL.
const (
	redisGenKey = "strata:latest:gen"
	redisPrefix = "strata:latest:"
)

var (
	// ARGV: prefix, ttl seconds, complete flag, then per device: device, tenant, n, then n × (metric, µs, value).
	redisMerge = redis.NewScript(`
local gen = redis.call('GET', KEYS[1]) or '0'
local ttl = tonumber(ARGV[2])
local i = 4
while i <= #ARGV do
  local key = ARGV[1] .. gen .. ':' .. ARGV[i]
  redis.call('HSET', key, '_t', ARGV[i+1])
  local n = tonumber(ARGV[i+2])
  i = i + 3
  for j = 1, n do
    local cur = redis.call('HGET', key, ARGV[i])
    if (not cur) or tonumber(string.match(cur, '^(%d+)|')) <= tonumber(ARGV[i+1]) then
      redis.call('HSET', key, ARGV[i], ARGV[i+1] .. '|' .. ARGV[i+2])
    end
    i = i + 3
  end
  if ARGV[3] == '1' then redis.call('HSET', key, '_c', '1') end
  redis.call('EXPIRE', key, ttl)
end
return gen`)
	// ARGV: prefix, devices…; returns one flat HGETALL array per device.
	redisRead = redis.NewScript(`
local gen = redis.call('GET', KEYS[1]) or '0'
local out = {}
for i = 2, #ARGV do out[i-1] = redis.call('HGETALL', ARGV[1] .. gen .. ':' .. ARGV[i]) end
return out`)
)

const redisForget = `local gen = redis.call('GET', KEYS[1]) or '0'
return redis.call('DEL', ARGV[1] .. gen .. ':' .. ARGV[2])`

func (c *latestCache) redisMergeArgs(complete bool, groups map[uuid.UUID]struct {
	tenant uuid.UUID
	vals   map[string]latestValue
}) []any {
	flag := "0"
	if complete {
		flag = "1"
	}
	args := []any{redisPrefix, int(c.s.cfg.LatestTTL.Seconds()), flag}
	for d, g := range groups {
		args = append(args, d.String(), g.tenant.String(), len(g.vals))
		for m, v := range g.vals {
			args = append(args, m, strconv.FormatInt(v.ts.UnixMicro(), 10), strconv.FormatFloat(v.value, 'g', -1, 64))
		}
	}
	return args
}

type redisGroup = struct {
	tenant uuid.UUID
	vals   map[string]latestValue
}

func (c *latestCache) redisApply(ctx context.Context, batch []*message) error {
	groups := map[uuid.UUID]redisGroup{}
	for k, v := range newestPerSeries(batch) {
		g, ok := groups[k.device]
		if !ok {
			g = redisGroup{tenant: k.tenant, vals: map[string]latestValue{}}
			groups[k.device] = g
		}
		g.vals[k.metric] = v
	}
	return redisMerge.Run(ctx, c.s.redis, []string{redisGenKey}, c.redisMergeArgs(false, groups)...).Err()
}

func (c *latestCache) redisFill(ctx context.Context, tenant uuid.UUID, vals map[uuid.UUID]map[string]latestValue) error {
	if len(vals) == 0 {
		return nil
	}
	groups := map[uuid.UUID]redisGroup{}
	for d, v := range vals {
		groups[d] = redisGroup{tenant: tenant, vals: v}
	}
	return redisMerge.Run(ctx, c.s.redis, []string{redisGenKey}, c.redisMergeArgs(true, groups)...).Err()
}

func (c *latestCache) redisLookup(ctx context.Context, tenant uuid.UUID, devices []uuid.UUID) (map[uuid.UUID]map[string]latestValue, error) {
	args := make([]any, 0, len(devices)+1)
	args = append(args, redisPrefix)
	for _, d := range devices {
		args = append(args, d.String())
	}
	res, err := redisRead.Run(ctx, c.s.redis, []string{redisGenKey}, args...).Slice()
	if err != nil {
		return nil, err
	}
	out := map[uuid.UUID]map[string]latestValue{}
	for i, r := range res {
		flat, _ := r.([]any)
		if i >= len(devices) || len(flat) == 0 {
			continue
		}
		vals := map[string]latestValue{}
		complete, ownTenant := false, false
		for j := 0; j+1 < len(flat); j += 2 {
			k, _ := flat[j].(string)
			v, _ := flat[j+1].(string)
			switch k {
			case "_c":
				complete = v == "1"
			case "_t":
				ownTenant = v == tenant.String()
			default:
				us, val, ok := strings.Cut(v, "|")
				micro, err1 := strconv.ParseInt(us, 10, 64)
				f, err2 := strconv.ParseFloat(val, 64)
				if ok && err1 == nil && err2 == nil {
					vals[k] = latestValue{time.UnixMicro(micro).UTC(), f}
				}
			}
		}
		if complete && ownTenant {
			out[devices[i]] = vals
		}
	}
	return out, nil
}

// redisWriter applies committed batches to Redis, off the acknowledgement path. A failed
// write marks Redis untrusted: reads go to PostgreSQL until watchRedis bumps the
// generation, abandoning whatever Redis held.
func (c *latestCache) redisWriter(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-c.redisWrite:
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := c.redisApply(wctx, batch); err != nil {
				c.redisDirty.Store(true)
				c.s.metrics.cacheErrors.Inc()
			}
			cancel()
		}
	}
}

// watchRedis checks, once a second, an untrusted Redis: when it
// answers again, it bumps the generation and trusts it again.
func (c *latestCache) watchRedis(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if !c.redisDirty.Load() {
				continue
			}
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			err := c.s.redis.Incr(wctx, redisGenKey).Err()
			cancel()
			if err == nil {
				c.redisDirty.Store(false)
				c.s.log.Info("series: Redis answers again; its latest values were abandoned and are refilled from PostgreSQL")
			}
		}
	}
}

// remoteCommit handles another node's commit notice: drop the cached entries it names and
// feed live streams.
func (s *Service) remoteCommit(payload string) {
	node, rest, _ := strings.Cut(payload, "|")
	if node == s.cfg.NodeID {
		return
	}
	kind, list, _ := strings.Cut(rest, "|")
	switch kind {
	case "d":
		var changed []devicePair
		for _, item := range strings.Split(list, ",") {
			t, d, ok := strings.Cut(item, ".")
			tu, e1 := decodeID(t)
			du, e2 := decodeID(d)
			if ok && e1 == nil && e2 == nil {
				s.latest.forgetLocal(du)
				changed = append(changed, devicePair{tu, du})
			}
		}
		s.live.remote(s, changed, nil)
	case "t":
		var tenants []uuid.UUID
		for _, t := range strings.Split(list, ",") {
			if tu, err := decodeID(t); err == nil {
				s.latest.forgetTenant(tu)
				tenants = append(tenants, tu)
			}
		}
		s.live.remote(s, nil, tenants)
	default:
		s.latest.flushLocal()
		s.live.remote(s, nil, nil)
	}
}

// forgetLocal drops a device's in-process entry (Redis is shared, so it stays).
func (c *latestCache) forgetLocal(device uuid.UUID) {
	if c.s.redis != nil {
		return
	}
	c.stripes[stripeOf(device)].Add(1)
	c.mu.Lock()
	delete(c.m, device)
	c.mu.Unlock()
}

type devicePair struct{ tenant, device uuid.UUID }

func decodeID(s string) (uuid.UUID, error) {
	var u uuid.UUID
	b, err := base64RawURL(s)
	if err != nil || len(b) != 16 {
		return u, errors.New("bad id")
	}
	copy(u[:], b)
	return u, nil
}

// afterCommit runs on the acknowledging goroutine after each commit: the cache learns the
// new values before any message of the batch is acknowledged.
func (s *Service) afterCommit(batch []*message) {
	s.latest.apply(batch)
	s.live.publish(batch)
	for _, m := range batch {
		if m.reason != "" {
			s.metrics.rejected.WithLabelValues(string(m.source), m.reason).Inc()
		} else {
			s.metrics.messages.WithLabelValues(string(m.source)).Inc()
			s.metrics.readings.WithLabelValues(string(m.source)).Add(float64(len(m.points)))
		}
	}
}

// LatestDevice returns a device's latest readings (read on device:<id>), from the cache or,
// on a miss or while the cache is untrusted, from PostgreSQL.
func (s *Service) LatestDevice(ctx context.Context, tenant, device string) (DeviceLatest, error) {
	if _, err := s.authorizeDevice(ctx, tenant, device, auth.PermRead); err != nil {
		return DeviceLatest{}, err
	}
	tu, du := uuid.MustParse(tenant), uuid.MustParse(device)
	if got, missing := s.latest.lookup(ctx, tu, []uuid.UUID{du}); len(missing) == 0 {
		if st, err := s.registry.get(ctx, device); err == nil && st.exists && st.tenant == tu {
			return DeviceLatest{DeviceID: device, Values: sortedValues(got[du])}, nil
		}
	}
	mark := s.latest.mark([]uuid.UUID{du})
	rows, err := s.pool.Query(ctx, `SELECT l.metric, l.ts, l.value FROM devices d
		LEFT JOIN readings_latest l ON l.tenant_id = d.tenant_id AND l.device_id = d.id
		WHERE d.tenant_id = $1 AND d.id = $2`, tu, du)
	if err != nil {
		return DeviceLatest{}, db.Translate(err, "device")
	}
	vals := map[string]latestValue{}
	found := false
	for rows.Next() {
		found = true
		var metric *string
		var ts *time.Time
		var v *float64
		if err := rows.Scan(&metric, &ts, &v); err != nil {
			rows.Close()
			return DeviceLatest{}, db.Translate(err, "device")
		}
		if metric != nil {
			vals[*metric] = latestValue{ts.UTC(), *v}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return DeviceLatest{}, db.Translate(err, "device")
	}
	if !found {
		return DeviceLatest{}, errDeviceNotFound()
	}
	s.latest.fill(ctx, tu, mark, map[uuid.UUID]map[string]latestValue{du: vals})
	return DeviceLatest{DeviceID: device, Values: sortedValues(vals)}, nil
}

// LatestTenant returns the latest readings of every device of the tenant (read on
// device:*), like seed 002's /houses/{id}/data: devices in creation order, each with its
// name, kind and latest values (none yet: an empty list).
func (s *Service) LatestTenant(ctx context.Context, tenant string) ([]DeviceLatest, error) {
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); err != nil {
		return nil, err
	}
	tu := uuid.MustParse(tenant)
	rows, err := s.pool.Query(ctx, `SELECT id, name, kind FROM devices WHERE tenant_id = $1 ORDER BY id LIMIT 10000`, tu)
	if err != nil {
		return nil, db.Translate(err, "devices")
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (DeviceLatest, error) {
		var d DeviceLatest
		err := r.Scan(&d.DeviceID, &d.Name, &d.Kind)
		return d, err
	})
	if err != nil {
		return nil, db.Translate(err, "devices")
	}
	ids := make([]uuid.UUID, len(out))
	for i := range out {
		ids[i] = uuid.MustParse(out[i].DeviceID)
	}
	got, missing := s.latest.lookup(ctx, tu, ids)
	if len(missing) > 0 {
		mark := s.latest.mark(missing)
		rows, err := s.pool.Query(ctx, `SELECT device_id, metric, ts, value FROM readings_latest WHERE tenant_id = $1 AND device_id = ANY($2)`,
			tu, missing)
		if err != nil {
			return nil, db.Translate(err, "latest values")
		}
		filled := make(map[uuid.UUID]map[string]latestValue, len(missing))
		for _, d := range missing {
			filled[d] = map[string]latestValue{}
		}
		for rows.Next() {
			var d uuid.UUID
			var metric string
			var lv latestValue
			if err := rows.Scan(&d, &metric, &lv.ts, &lv.value); err != nil {
				rows.Close()
				return nil, db.Translate(err, "latest values")
			}
			lv.ts = lv.ts.UTC()
			filled[d][metric] = lv
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, db.Translate(err, "latest values")
		}
		s.latest.fill(ctx, tu, mark, filled)
		for d, v := range filled {
			got[d] = v
		}
	}
	for i := range out {
		out[i].Values = sortedValues(got[ids[i]])
	}
	return out, nil
}

func sortedValues(m map[string]latestValue) []Value {
	out := make([]Value, 0, len(m))
	for k, v := range m {
		out = append(out, Value{Metric: k, Value: v.value, Time: v.ts})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Metric < out[j].Metric })
	return out
}

// CacheStats reports the latest-value cache's hits and misses since start.
func (s *Service) CacheStats() (hits, misses int64) {
	return s.latest.hits.Load(), s.latest.misses.Load()
}
