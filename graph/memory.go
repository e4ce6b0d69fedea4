package graph

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The in-memory adjacency index. Each node (process) holds, per tenant, that tenant's live
// edges as compact adjacency lists, loaded from PostgreSQL on the tenant's first eligible
// traversal and kept current from the change feed: before each in-memory traversal, one
// query reads the tenant's edge changes past the index's watermark together with those
// committed but not yet numbered (position IS NULL), and the current rows of those edges,
// which are applied idempotently. A traversal therefore sees every edge write committed
// before it started, on any node. While a tenant's index loads (or when it does not fit
// the budget, or a traversal needs what it does not hold: as_of, filters, weights),
// traversals use the SQL walker; so does one that cannot have the index's locks within
// memory.lockWait (a catch-up under way, or an edge write waiting for a long traversal to
// end): no traversal, and no other tenant's, waits on another's.

// IndexStats describes this process's in-memory adjacency indexes.
type IndexStats struct {
	// Enabled is false when Config.MemoryEdges disables the indexes.
	Enabled bool `json:"enabled"`
	// Budget is the most nodes plus edges held, across tenants.
	Budget int64 `json:"budget"`
	// Tenants are the indexes loaded.
	Tenants []TenantIndexStats `json:"tenants"`
	// Traversals counts traversals answered from memory; Fallbacks those that could have
	// been but went to SQL (the index loading, too large, or failing to catch up).
	Traversals int64 `json:"traversals"`
	Fallbacks  int64 `json:"fallbacks"`
	// Loads counts completed loads; LoadFailures loads that failed or did not fit.
	Loads        int64 `json:"loads"`
	LoadFailures int64 `json:"load_failures"`
}

// TenantIndexStats describes one tenant's index.
type TenantIndexStats struct {
	Tenant string `json:"tenant"`
	Nodes  int    `json:"nodes"`
	Edges  int64  `json:"edges"`
	// Overlay is the edges added since the load; Dead those deleted since.
	Overlay int `json:"overlay"`
	Dead    int `json:"dead"`
	// Bytes estimates the memory held.
	Bytes int64 `json:"bytes"`
	// LoadTime is how long the load took.
	LoadTime time.Duration `json:"load_time"`
}

// memory is the registry of a Store's indexes.
type memory struct {
	s          *Store
	budget     int64         // nodes plus edges held at most, across tenants; ≤ 0: disabled
	wait       time.Duration // how long a traversal waits for a load before using SQL
	maxCatchUp int           // the fewest changed edges a catch-up may apply; past its limit, the index reloads
	lockWait   time.Duration // how long a traversal waits for an index's locks before using SQL
	reloadWait time.Duration // the first pause between reloads of a tenant; it doubles, to retryAfter

	mu      sync.Mutex
	indexes map[string]*tenantIndex
	loading map[string]chan struct{} // closed when the load ends
	refused map[string]time.Time     // tenants whose load failed or did not fit, and when
	reloads map[string]reloadState   // tenants reloaded lately

	traversals, fallbacks, loads, loadFailures atomic.Int64
}

// retryAfter is how long a tenant whose load failed or did not fit waits for another try.
const retryAfter = 5 * time.Minute

// reloadState is when a tenant's last reload started and how long the next one waits.
type reloadState struct {
	at   time.Time
	wait time.Duration
}

func newMemory(s *Store, budget int64) *memory {
	return &memory{s: s, budget: budget, wait: 100 * time.Millisecond, maxCatchUp: 100_000,
		lockWait: 50 * time.Millisecond, reloadWait: time.Second,
		indexes: map[string]*tenantIndex{}, loading: map[string]chan struct{}{}, refused: map[string]time.Time{},
		reloads: map[string]reloadState{}}
}

// tenantIndex is one tenant's index.
type tenantIndex struct {
	tenant   string
	loadTime time.Duration
	used     atomic.Int64 // unix nanoseconds of the last traversal

	// syncMu serializes catching up; watermark, syncStarted and stale go with it.
	syncMu      sync.Mutex
	watermark   int64     // every change at or below it is applied
	syncStarted time.Time // when the last successful catch-up started
	stale       bool      // a catch-up could not apply the changes: only a reload helps

	// mu guards g: catch-ups write (briefly), traversals read. Neither waits for it more
	// than memory.lockWait (TryLock: a writer waiting never holds readers back).
	mu sync.RWMutex
	g  *adjacency

	// What the registry and the stats read without mu, set with g: the nodes plus live
	// edges held, the tenant's stats, and the collection ids g numbers (a prefix of
	// g.colls, which only grows).
	held  atomic.Int64
	stat  atomic.Pointer[TenantIndexStats]
	colls atomic.Pointer[[]string]

	setsMu sync.Mutex
	sets   []*visitSet // idle visit sets, reused across traversals
}

// acquire returns the tenant's index, caught up with every edge write committed before
// the call, not locked (see memWalkOf), or nil when the traversal must use SQL.
func (m *memory) acquire(ctx context.Context, tenant string) *tenantIndex {
	if m.budget <= 0 {
		return nil
	}
	started := time.Now()
	idx := m.get(tenant)
	if idx == nil {
		done := m.load(tenant, false)
		if done != nil {
			timer := time.NewTimer(m.wait)
			select {
			case <-done:
			case <-timer.C:
			case <-ctx.Done():
			}
			timer.Stop()
			idx = m.get(tenant)
		}
	}
	if idx == nil {
		m.fallbacks.Add(1)
		return nil
	}
	if err := idx.catchUp(ctx, m, started); err != nil {
		if ctx.Err() == nil && !errors.Is(err, errBusy) && !errors.Is(err, errStale) {
			m.s.log.Warn("graph: catching up the in-memory index failed; traversing in SQL", "tenant", tenant, "err", err)
		}
		m.fallbacks.Add(1)
		return nil
	}
	idx.used.Store(time.Now().UnixNano())
	return idx
}

// errBusy: a lock of the index could not be had within memory.lockWait.
var errBusy = errors.New("the in-memory index is busy")

// lockWithin takes a lock with try, retrying for at most m.lockWait and never past ctx.
func (m *memory) lockWithin(ctx context.Context, try func() bool) bool {
	if try() {
		return true
	}
	timer := time.NewTimer(m.lockWait)
	defer timer.Stop()
	tick := time.NewTicker(time.Millisecond / 2)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return try()
		case <-tick.C:
			if try() {
				return true
			}
		}
	}
}

// publish sets what is read of the index without its lock. The caller holds mu for
// writing, or the index is not shared yet.
func (idx *tenantIndex) publish() {
	g := idx.g
	idx.held.Store(int64(len(g.num)) + g.live)
	idx.stat.Store(&TenantIndexStats{Tenant: idx.tenant, Nodes: len(g.num), Edges: g.live, Overlay: len(g.x),
		Dead: g.deadCount, Bytes: g.bytes(), LoadTime: idx.loadTime})
	colls := g.colls
	idx.colls.Store(&colls)
}

func (m *memory) get(tenant string) *tenantIndex {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.indexes[tenant]
}

// drop forgets a tenant's index (the tenant is gone), and its reloads.
func (m *memory) drop(idx *tenantIndex) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.indexes[idx.tenant] == idx {
		delete(m.indexes, idx.tenant)
		delete(m.reloads, idx.tenant)
	}
}

// load starts loading a tenant's index in the background, unless it is loading already
// or was refused lately (a reload, of an index in service, also waits for the tenant's
// last reload to be long enough ago: a second after the first, then twice as long each
// time, to retryAfter), and returns a channel closed when it ends, or nil. The index in
// service, if any, serves until the new one replaces it.
func (m *memory) load(tenant string, reload bool) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ch, ok := m.loading[tenant]; ok {
		return ch
	}
	if at, ok := m.refused[tenant]; ok && time.Since(at) < retryAfter {
		return nil
	}
	if reload {
		r := m.reloads[tenant]
		since := time.Since(r.at)
		if since < r.wait {
			return nil
		}
		switch {
		case r.wait == 0 || since > 2*r.wait:
			r.wait = m.reloadWait // quiet for a while: start over
		default:
			r.wait = min(2*r.wait, retryAfter)
		}
		m.reloads[tenant] = reloadState{at: time.Now(), wait: r.wait}
	}
	ch := make(chan struct{})
	m.loading[tenant] = ch
	go m.run(tenant, ch)
	return ch
}

func (m *memory) run(tenant string, done chan struct{}) {
	defer close(done)
	// The load serves every later traversal, not the one that asked: it does not end
	// with that request.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	started := time.Now()
	g, watermark, err := m.s.loadAdjacency(ctx, tenant, m.budget)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.loading, tenant)
	if err != nil {
		m.loadFailures.Add(1)
		m.refused[tenant] = time.Now()
		if errors.Is(err, errTooLarge) {
			delete(m.indexes, tenant) // what is held is older than what did not fit
			m.s.log.Info("graph: a tenant's edges exceed the in-memory budget; its traversals use SQL", "tenant", tenant, "budget", m.budget)
		} else {
			m.s.log.Warn("graph: loading the in-memory index failed; traversals use SQL", "tenant", tenant, "err", err)
		}
		return
	}
	delete(m.refused, tenant)
	idx := &tenantIndex{tenant: tenant, g: g, watermark: watermark, loadTime: time.Since(started)}
	idx.publish()
	idx.used.Store(time.Now().UnixNano())
	m.indexes[tenant] = idx
	m.loads.Add(1)
	m.evict(idx)
}

// evict drops the least recently used other indexes while the nodes and edges held exceed
// the budget. The caller holds m.mu; no index's lock is taken.
func (m *memory) evict(keep *tenantIndex) {
	for {
		var held int64
		var lru *tenantIndex
		for _, idx := range m.indexes {
			held += idx.held.Load()
			if idx != keep && (lru == nil || idx.used.Load() < lru.used.Load()) {
				lru = idx
			}
		}
		if held <= m.budget || lru == nil {
			return
		}
		delete(m.indexes, lru.tenant)
	}
}

// stats reports the indexes.
func (m *memory) stats() IndexStats {
	st := IndexStats{Enabled: m.budget > 0, Budget: max(m.budget, 0), Tenants: []TenantIndexStats{},
		Traversals: m.traversals.Load(), Fallbacks: m.fallbacks.Load(), Loads: m.loads.Load(), LoadFailures: m.loadFailures.Load()}
	m.mu.Lock()
	idxs := make([]*tenantIndex, 0, len(m.indexes))
	for _, idx := range m.indexes {
		idxs = append(idxs, idx)
	}
	m.mu.Unlock()
	for _, idx := range idxs {
		st.Tenants = append(st.Tenants, *idx.stat.Load())
	}
	slices.SortFunc(st.Tenants, func(a, b TenantIndexStats) int { return cmp.Compare(a.Tenant, b.Tenant) })
	return st
}

// IndexStats reports this process's in-memory adjacency indexes: what is loaded, its
// size, and how many traversals they answered.
func (s *Store) IndexStats() IndexStats { return s.mem.stats() }

var errTooLarge = errors.New("the tenant's nodes and edges exceed the in-memory budget")

// loadAdjacency reads a tenant's nodes and live edges in one snapshot, with the feed
// position that snapshot is current to. maxHeld bounds the nodes plus edges read: past
// it, the reading stops (errTooLarge).
func (s *Store) loadAdjacency(ctx context.Context, tenant string, maxHeld int64) (*adjacency, int64, error) {
	tx, err := s.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, 0, err
	}
	defer func() { _ = tx.Rollback(ctx) }()
	// Every position up to last is visible in this snapshot (the sequencer numbers in
	// order, one transaction at a time), so the edges read reflect every change up to it;
	// changes after it, or committed but unnumbered, are applied on top (idempotently).
	var watermark int64
	if err := tx.QueryRow(ctx, `SELECT last FROM change_sequence`).Scan(&watermark); err != nil {
		return nil, 0, err
	}
	g := newAdjacency()
	rows, err := tx.Query(ctx, `SELECT node, collection_id::text, doc_id FROM graph_nodes WHERE tenant_id = $1 ORDER BY node`, tenant)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	for rows.Next() {
		raw := rows.RawValues()
		n, err := int8Of(rows.FieldDescriptions()[0], raw[0])
		if err != nil {
			rows.Close()
			return nil, 0, err
		}
		coll, ok := g.collIndex(string(raw[1]))
		if !ok || int64(len(g.num)) >= maxHeld {
			rows.Close()
			return nil, 0, errTooLarge
		}
		g.num = append(g.num, n)
		g.addNodeRec(coll, raw[2])
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	g.finishNodes()
	edges, err := tx.Query(ctx, `SELECT id, type_id, from_node, to_node FROM graph_edges WHERE tenant_id = $1 AND deleted_at IS NULL`, tenant)
	if err != nil {
		return nil, 0, err
	}
	defer edges.Close()
	rows = edges
	var e edgeList
	for rows.Next() {
		if int64(len(g.num)+len(e.id)) >= maxHeld {
			rows.Close()
			return nil, 0, errTooLarge
		}
		raw, fd := rows.RawValues(), rows.FieldDescriptions()
		var v [4]int64
		for i := range v {
			if v[i], err = int8Of(fd[i], raw[i]); err != nil {
				rows.Close()
				return nil, 0, err
			}
		}
		from, ok1 := g.dense(v[2])
		to, ok2 := g.dense(v[3])
		if !ok1 || !ok2 {
			rows.Close()
			return nil, 0, fmt.Errorf("edge %d joins nodes %d and %d, one of which the tenant does not have", v[0], v[2], v[3])
		}
		typ, ok := g.typeIndex(int32(v[1]))
		if !ok {
			rows.Close()
			return nil, 0, errTooLarge
		}
		e.id, e.typ, e.from, e.to = append(e.id, v[0]), append(e.typ, typ), append(e.from, from), append(e.to, to)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	g.buildLists(g.base, &e)
	return g, watermark, nil
}

// int8Of decodes an integer column, in binary (int2, int4, int8) or text format.
func int8Of(fd pgconn.FieldDescription, b []byte) (int64, error) {
	if fd.Format == pgx.BinaryFormatCode {
		switch len(b) {
		case 8:
			return int64(binary.BigEndian.Uint64(b)), nil
		case 4:
			return int64(int32(binary.BigEndian.Uint32(b))), nil
		case 2:
			return int64(int16(binary.BigEndian.Uint16(b))), nil
		}
		return 0, fmt.Errorf("column %s: unexpected %d-byte integer", fd.Name, len(b))
	}
	return strconv.ParseInt(string(b), 10, 64)
}

// catchUpSQL reads, in one snapshot: the feed's newest position and pruning watermark,
// whether the tenant still exists, and the current row of every edge the tenant's feed
// changed after position $2 or has committed without a position yet (up to $3 of them),
// with its ends' names when it is live. Positions are given in commit order, so every
// change at or below last is in this snapshot: last becomes the watermark. The keys read
// are bounded before they are made distinct (4 × $3): past that, over is true.
const catchUpSQL = `WITH c AS (
		SELECT key, keys FROM changes WHERE tenant_id = $1 AND position > $2 AND kind = 'edge'
		UNION ALL
		SELECT key, keys FROM changes WHERE position IS NULL AND tenant_id = $1 AND kind = 'edge'
	), raw AS MATERIALIZED (
		SELECT k.id FROM c, unnest(coalesce(c.keys, ARRAY[c.key])) AS k(id) LIMIT 4 * $3::bigint
	), ids AS (
		SELECT DISTINCT id::bigint AS id FROM raw LIMIT $3
	)
	SELECT s.last, s.pruned_through, EXISTS (SELECT 1 FROM tenants t WHERE t.id = $1),
		(SELECT count(*) FROM raw) >= 4 * $3::bigint,
		i.id, e.type_id, e.from_node, e.to_node, CASE WHEN e.id IS NOT NULL THEN e.deleted_at IS NULL END, fn.collection_id::text, fn.doc_id, tn.collection_id::text, tn.doc_id
	FROM change_sequence s LEFT JOIN (ids i
		LEFT JOIN graph_edges e ON e.id = i.id AND e.tenant_id = $1
		LEFT JOIN graph_nodes fn ON fn.node = e.from_node AND e.deleted_at IS NULL
		LEFT JOIN graph_nodes tn ON tn.node = e.to_node AND e.deleted_at IS NULL) ON true`

// quietSQL reads the feed's newest position and pruning watermark, whether any change
// awaits its number, and whether the tenant still exists: index probes, no scan.
const quietSQL = `SELECT s.last, s.pruned_through, EXISTS (SELECT 1 FROM changes WHERE position IS NULL),
	EXISTS (SELECT 1 FROM tenants t WHERE t.id = $1) FROM change_sequence s`

// changedEdge is an edge's row as a catch-up reads it.
type changedEdge struct {
	id                     *int64
	typ                    *int32
	from, to               *int64
	live                   *bool
	fcoll, fdoc, tcoll, td *string
}

var errStale = errors.New("the in-memory index must be reloaded")

// catchUp applies the edge changes committed since the index's watermark. A catch-up that
// started after the traversal did (another traversal's) already covers it.
func (idx *tenantIndex) catchUp(ctx context.Context, m *memory, started time.Time) error {
	if !m.lockWithin(ctx, idx.syncMu.TryLock) {
		return errBusy
	}
	defer idx.syncMu.Unlock()
	if idx.stale {
		m.load(idx.tenant, true) // retried as the reload backoff allows
		return errStale
	}
	if idx.syncStarted.After(started) {
		return nil
	}
	syncStarted := time.Now()
	// First the cheap question, in one snapshot: has the feed numbered anything since the
	// watermark, or does it hold anything committed and unnumbered, of any tenant? When
	// not, every committed change is at or below the watermark: applied.
	var last, pruned int64
	var pending, exists bool
	if err := m.s.pool.QueryRow(ctx, quietSQL, idx.tenant).Scan(&last, &pruned, &pending, &exists); err != nil {
		return err
	}
	if exists && !pending && last == idx.watermark && pruned <= idx.watermark {
		idx.syncStarted = syncStarted
		return nil
	}
	// A large index takes as many changes as a quarter of what it holds: reloading it
	// costs more (and a fresh one meets the changes made while it loaded).
	limit := max(m.maxCatchUp, int(idx.held.Load()/4))
	rows, err := m.s.pool.Query(ctx, catchUpSQL, idx.tenant, idx.watermark, limit+1)
	if err != nil {
		return err
	}
	defer rows.Close()
	var changed []changedEdge
	var over bool
	for rows.Next() {
		var c changedEdge
		if err := rows.Scan(&last, &pruned, &exists, &over, &c.id, &c.typ, &c.from, &c.to, &c.live, &c.fcoll, &c.fdoc, &c.tcoll, &c.td); err != nil {
			rows.Close()
			return err
		}
		if c.id != nil {
			changed = append(changed, c)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	switch {
	case !exists:
		m.drop(idx)
		return errors.New("the tenant is gone")
	case pruned > idx.watermark || over || len(changed) > limit:
		// Changes may have been pruned from the feed unseen, or are too many to apply
		// one by one: load afresh (traversals use SQL meanwhile).
		idx.stale = true
		m.load(idx.tenant, true)
		return errStale
	}
	if len(changed) > 0 {
		rebuild, err := idx.apply(ctx, m, changed)
		if errors.Is(err, errBusy) {
			return err // nothing applied: the next catch-up reads these changes again
		}
		if err != nil {
			idx.stale = true
			m.load(idx.tenant, true)
			return err
		}
		if rebuild {
			m.load(idx.tenant, true) // this index serves until the new one is ready
		}
	}
	idx.watermark = max(idx.watermark, last)
	idx.syncStarted = syncStarted
	return nil
}

// apply brings the held edges to the rows read: live ones are held, others are not. An
// edge's ends and type never change and its life only moves forward (live, deleted,
// gone), so applying a row again, or a newer one, is harmless. rebuild reports that the
// overlay (or the dead edges) grew large enough to be worth a reload into fresh lists.
// The write lock is taken as memory.lockWait allows (errBusy: nothing applied).
func (idx *tenantIndex) apply(ctx context.Context, m *memory, changed []changedEdge) (rebuild bool, err error) {
	if !m.lockWithin(ctx, idx.mu.TryLock) {
		return false, errBusy
	}
	defer idx.mu.Unlock()
	defer idx.publish()
	g := idx.g
	gone := map[int64]bool{}
	for _, c := range changed {
		switch {
		case c.live != nil && *c.live:
			if g.has(*c.id, *c.from) {
				continue
			}
			if c.fcoll == nil || c.tcoll == nil {
				return false, fmt.Errorf("edge %d has an end without a node", *c.id)
			}
			typ, ok := g.typeIndex(*c.typ)
			from, ok1 := g.node(*c.from, *c.fcoll, *c.fdoc)
			to, ok2 := g.node(*c.to, *c.tcoll, *c.td)
			if !ok || !ok1 || !ok2 {
				return false, errTooLarge
			}
			g.add(*c.id, from, to, typ)
		case c.live != nil:
			g.remove(*c.id, *c.from, *c.to)
		default:
			gone[*c.id] = true
		}
	}
	if len(gone) > 0 {
		g.removeAll(gone)
	}
	limit := max(1<<16, int(g.live/4))
	return len(g.x) > limit || g.deadCount > limit, nil
}
