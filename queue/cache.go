package queue

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// queueRef names a queue row. A tenant's queue keeps its id until it is deleted (with
// its tenant), so the cache needs forgetting only then.
type queueRef struct {
	ID     int64
	Tenant string
	Name   string
}

// queueCache maps tenant and name to the queue row's id, creating queues on first use.
type queueCache struct {
	pool   *pgxpool.Pool
	mu     sync.Mutex
	refs   map[string]queueRef // tenant|name
	limits map[int64]limitState
}

// limitState caches whether a queue has a running or rate limit.
type limitState struct {
	limited bool
	at      time.Time
}

func newQueueCache(pool *pgxpool.Pool) *queueCache {
	return &queueCache{pool: pool, refs: map[string]queueRef{}, limits: map[int64]limitState{}}
}

// limited reports whether queue id has a running or rate limit (cached for 5 seconds,
// and forgotten at once when its settings change): its workers then look for work
// again soon after each claim came back short, and wake each other when a job ends.
func (qc *queueCache) limited(ctx context.Context, id int64) bool {
	qc.mu.Lock()
	st, ok := qc.limits[id]
	qc.mu.Unlock()
	if ok && time.Since(st.at) < 5*time.Second {
		return st.limited
	}
	st = limitState{at: time.Now()}
	if err := qc.pool.QueryRow(ctx, `SELECT max_running IS NOT NULL OR max_starts_per_second IS NOT NULL FROM queues WHERE id = $1`,
		id).Scan(&st.limited); err != nil {
		return false
	}
	qc.mu.Lock()
	qc.limits[id] = st
	qc.mu.Unlock()
	return st.limited
}

func queueNotFound(name string) error {
	return problem.NotFound("queue_not_found", "queue %q not found", name)
}

// get returns the queue, creating it when create is set; otherwise a missing queue is
// 404 queue_not_found.
func (qc *queueCache) get(ctx context.Context, tenant, name string, create bool) (queueRef, error) {
	key := tenant + "|" + name
	qc.mu.Lock()
	ref, ok := qc.refs[key]
	qc.mu.Unlock()
	if ok {
		return ref, nil
	}
	ref = queueRef{Tenant: tenant, Name: name}
	for range 3 {
		err := qc.pool.QueryRow(ctx, `SELECT id FROM queues WHERE tenant_id = $1 AND name = $2`, tenant, name).Scan(&ref.ID)
		if err == nil {
			qc.mu.Lock()
			qc.refs[key] = ref
			qc.mu.Unlock()
			return ref, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return ref, db.Translate(err, "queue")
		}
		if !create {
			return ref, queueNotFound(name)
		}
		// A concurrent creator wins the conflict; the next round reads its row.
		if _, err := qc.pool.Exec(ctx, `INSERT INTO queues (tenant_id, name) VALUES ($1, $2) ON CONFLICT (tenant_id, name) DO NOTHING`,
			tenant, name); err != nil {
			return ref, db.Translate(err, "queue")
		}
	}
	return ref, problem.Conflict("transaction_conflict", "queue %q was created and deleted concurrently; retry", name)
}

// forget drops the queue with the id in payload (it changed or was deleted).
func (qc *queueCache) forget(payload string) {
	id, err := strconv.ParseInt(payload, 10, 64)
	if err != nil {
		return
	}
	qc.mu.Lock()
	defer qc.mu.Unlock()
	delete(qc.limits, id)
	for k, r := range qc.refs {
		if r.ID == id {
			delete(qc.refs, k)
		}
	}
}

// forgetRef drops one entry (its queue was found gone).
func (qc *queueCache) forgetRef(ref queueRef) {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	delete(qc.refs, ref.Tenant+"|"+ref.Name)
}

func (qc *queueCache) forgetAll() {
	qc.mu.Lock()
	defer qc.mu.Unlock()
	clear(qc.refs)
	clear(qc.limits)
}
