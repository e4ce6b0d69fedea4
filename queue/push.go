package queue

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/problem"
)

// copyThreshold is the batch size from which a push without unique keys or groups is
// written with COPY instead of one INSERT over unnest.
const copyThreshold = 500

// JobPush adds one job to a queue (write on the queue), creating the queue on first use,
// and wakes workers on every node. With a unique key held by a live job it returns that
// job's id with Existing set.
func (c *Client) JobPush(ctx context.Context, tenant, queue string, in JobInput) (Pushed, error) {
	if in.GroupKey == "" {
		return c.pushOne(ctx, tenant, queue, in)
	}
	out, err := c.JobPushMany(ctx, tenant, queue, []JobInput{in})
	if err != nil {
		return Pushed{}, err
	}
	return out[0], nil
}

// JobPushTx adds one job inside the caller's transaction: it exists, and workers hear
// of it, only if the transaction commits (an outbox).
func (c *Client) JobPushTx(ctx context.Context, tx pgx.Tx, tenant, queue string, in JobInput) (Pushed, error) {
	out, err := c.JobPushManyTx(ctx, tx, tenant, queue, []JobInput{in})
	if err != nil {
		return Pushed{}, err
	}
	return out[0], nil
}

// JobPushMany adds jobs to a queue in one transaction (COPY for large batches without
// unique keys or groups, one INSERT over unnest otherwise), answering in input order.
// One audit entry records the whole batch.
func (c *Client) JobPushMany(ctx context.Context, tenant, queue string, in []JobInput) ([]Pushed, error) {
	var out []Pushed
	var ref queueRef
	err := c.inTx(ctx, func(tx pgx.Tx) error {
		var err error
		out, ref, err = c.pushMany(ctx, tx, tenant, queue, in, false)
		return err
	})
	if err != nil {
		return nil, err
	}
	c.notify(ref)
	return out, nil
}

// JobPushManyTx adds jobs inside the caller's transaction (an outbox). Jobs of a FIFO
// group lock their group until the transaction ends, so pushes to one group commit in
// push order.
func (c *Client) JobPushManyTx(ctx context.Context, tx pgx.Tx, tenant, queue string, in []JobInput) ([]Pushed, error) {
	out, _, err := c.pushMany(ctx, tx, tenant, queue, in, true)
	return out, err
}

// pushMany adds jobs within tx; with notifyInTx the notification is part of tx (sent if
// it commits), otherwise the caller notifies after committing.
func (c *Client) pushMany(ctx context.Context, tx pgx.Tx, tenant, queue string, in []JobInput, notifyInTx bool) ([]Pushed, queueRef, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermWrite); err != nil {
		return nil, queueRef{}, err
	}
	if len(in) == 0 {
		return []Pushed{}, queueRef{}, nil
	}
	now := time.Now()
	rows := make([]row, len(in))
	var groups []string
	unique := false
	for i, j := range in {
		idx := i
		if len(in) == 1 {
			idx = -1
		}
		r, err := c.prepare(idx, j, now)
		if err != nil {
			return nil, queueRef{}, err
		}
		rows[i] = r
		if r.groupKey != nil {
			groups = append(groups, *r.groupKey)
		}
		unique = unique || r.uniqueKey != nil
	}
	ref, err := c.queues.get(ctx, tenant, queue, true)
	if err != nil {
		return nil, ref, err
	}
	var out []Pushed
	for range 3 {
		out, err = c.insert(ctx, tx, ref, rows, groups, unique, notifyInTx)
		if !errors.Is(err, errQueueGone) {
			break
		}
		c.queues.forgetRef(ref)
		if ref, err = c.queues.get(ctx, tenant, queue, true); err != nil {
			return nil, ref, err
		}
	}
	if err != nil {
		return nil, ref, db.Translate(err, "job")
	}
	err = audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "queue.push", ResourceType: "queue", ResourceID: queue,
		Details: pushDetails(in, out)})
	return out, ref, db.Translate(err, "job")
}

func pushDetails(in []JobInput, out []Pushed) map[string]any {
	d := map[string]any{"count": len(in)}
	if len(out) == 1 {
		d["id"] = out[0].ID
		d["kind"] = in[0].Kind
		if out[0].Existing {
			d["existing"] = true
		}
	}
	return d
}

// errQueueGone means the queue row vanished (its tenant is being deleted) after the cache
// named it.
var errQueueGone = errors.New("queue gone")

// insert writes rows into the queue within tx, then promotes FIFO group heads, and
// with notify notifies in tx. It returns errQueueGone when the queue row no longer
// exists.
func (c *Client) insert(ctx context.Context, tx pgx.Tx, ref queueRef, rows []row, groups []string, unique, notify bool) ([]Pushed, error) {
	if len(groups) > 0 {
		if err := lockGroups(ctx, tx, ref.ID, groups); err != nil {
			return nil, err
		}
	}
	var out []Pushed
	var err error
	if len(groups) == 0 && !unique && len(rows) >= copyThreshold {
		out, err = c.insertCopy(ctx, tx, ref, rows, notify)
	} else {
		out, err = c.insertUnnest(ctx, tx, ref, rows, notify)
	}
	if err != nil {
		return nil, err
	}
	if len(groups) > 0 {
		if _, err := promote(ctx, tx, []int64{ref.ID}, groups); err != nil {
			return nil, err
		}
	}
	return out, nil
}

const insertUnnestSQL = `
WITH q AS (
    SELECT id FROM queues WHERE id = $1 FOR KEY SHARE
), input AS (
    SELECT nextval('jobs_id_seq') AS id, u.*
    FROM unnest($3::text[], $4::jsonb[], $5::smallint[], $6::timestamptz[], $7::int[], $8::text[], $9::text[])
        WITH ORDINALITY AS u(kind, payload, priority, run_at, max_attempts, unique_key, group_key, ord)
    WHERE EXISTS (SELECT 1 FROM q)
), ins AS (
    INSERT INTO jobs (id, queue_id, tenant_id, state, kind, payload, priority, run_at, max_attempts, unique_key, group_key)
    SELECT id, $1, $2, CASE WHEN group_key IS NULL THEN 'available' ELSE 'blocked' END::job_state,
        kind, payload, priority, coalesce(run_at, now()), max_attempts, unique_key, group_key
    FROM input ORDER BY ord
    ON CONFLICT (queue_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id, state = 'available' AND run_at <= now() AS ready
)
SELECT i.ord, i.id, ins.id IS NOT NULL, i.unique_key,
    (SELECT count(*) FROM (SELECT pg_notify($10, $11) FROM ins WHERE ready AND $12 LIMIT 1) n),
    EXISTS (SELECT 1 FROM q)
FROM input i LEFT JOIN ins ON ins.id = i.id
UNION ALL
SELECT 0, 0, false, NULL, 0, false WHERE NOT EXISTS (SELECT 1 FROM q)
ORDER BY 1`

// insertUnnest inserts rows with one statement; rows whose unique key is held answer the
// holder's id.
func (c *Client) insertUnnest(ctx context.Context, tx pgx.Tx, ref queueRef, rows []row, notify bool) ([]Pushed, error) {
	out := make([]Pushed, len(rows))
	pending := make([]int, len(rows)) // indexes of rows still to place
	for i := range pending {
		pending[i] = i
	}
	for range 5 {
		held, err := c.insertRows(ctx, tx, ref, rows, pending, out, notify)
		if err != nil || len(held) == 0 {
			return out, err
		}
		// Read the holders; a holder that finished meanwhile leaves its row to insert again.
		keys := make([]string, 0, len(held))
		for k := range held {
			keys = append(keys, k)
		}
		found, err := tx.Query(ctx, `SELECT unique_key, id FROM jobs WHERE queue_id = $1 AND unique_key = ANY($2)`, ref.ID, keys)
		if err != nil {
			return nil, err
		}
		var k string
		var id int64
		_, err = pgx.ForEachRow(found, []any{&k, &id}, func() error {
			for _, i := range held[k] {
				out[i] = Pushed{ID: JobID(id), Existing: true}
			}
			delete(held, k)
			return nil
		})
		if err != nil {
			return nil, err
		}
		pending = pending[:0]
		for _, is := range held {
			pending = append(pending, is...)
		}
		if len(pending) == 0 {
			return out, nil
		}
		slices.Sort(pending)
	}
	return nil, problem.Conflict("transaction_conflict", "unique keys were taken and released concurrently; retry")
}

// insertRows inserts rows[pending...] and records their ids in out; it returns the rows
// not inserted because their unique key is held, by key.
func (c *Client) insertRows(ctx context.Context, tx pgx.Tx, ref queueRef, rows []row, pending []int, out []Pushed, notify bool) (map[string][]int, error) {
	n := len(pending)
	kinds, payloads := make([]string, n), make([][]byte, n)
	prios, attempts := make([]int16, n), make([]int32, n)
	runAts := make([]*time.Time, n)
	uniques, groups := make([]*string, n), make([]*string, n)
	for i, p := range pending {
		r := rows[p]
		kinds[i], payloads[i], prios[i], runAts[i], attempts[i], uniques[i], groups[i] =
			r.kind, r.payload, r.priority, r.runAt, r.maxAttempts, r.uniqueKey, r.groupKey
	}
	res, err := tx.Query(ctx, insertUnnestSQL, ref.ID, ref.Tenant, kinds, payloads, prios, runAts, attempts, uniques, groups,
		channelJobs, notifyPayload(ref.ID, ref.Name), notify)
	if err != nil {
		return nil, err
	}
	held := map[string][]int{}
	gone := false
	var ord, id, notified int64
	var inserted, queueOK bool
	var key *string
	_, err = pgx.ForEachRow(res, []any{&ord, &id, &inserted, &key, &notified, &queueOK}, func() error {
		if !queueOK {
			gone = true
			return nil
		}
		p := pending[ord-1]
		if inserted {
			out[p] = Pushed{ID: JobID(id)}
		} else if key != nil {
			held[*key] = append(held[*key], p)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if gone {
		return nil, errQueueGone
	}
	return held, nil
}

// insertCopy writes rows (no unique keys, no groups) with COPY under ids taken in
// advance, in three round trips whatever the batch size.
func (c *Client) insertCopy(ctx context.Context, tx pgx.Tx, ref queueRef, rows []row, notify bool) ([]Pushed, error) {
	for _, r := range rows {
		if r.runAt != nil { // the database's clock decides "now": only the unnest path mixes them
			return c.insertUnnest(ctx, tx, ref, rows, notify)
		}
	}
	tid, err := uuid.Parse(ref.Tenant)
	if err != nil {
		return nil, err
	}
	tenant := pgtype.UUID{Bytes: tid, Valid: true} // encoded directly; uuid.UUID goes through driver.Valuer
	var queueID *int64
	var ids []int64
	err = tx.QueryRow(ctx, `SELECT (SELECT id FROM queues WHERE id = $1 FOR KEY SHARE),
		array(SELECT nextval('jobs_id_seq') FROM generate_series(1, $2))`, ref.ID, len(rows)).Scan(&queueID, &ids)
	if err != nil {
		return nil, err
	}
	if queueID == nil {
		return nil, errQueueGone
	}
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i == len(rows) {
			return nil, nil
		}
		r := rows[i]
		v := []any{ids[i], ref.ID, tenant, r.kind, r.payload, r.priority, r.maxAttempts}
		i++
		return v, nil
	})
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"jobs"}, []string{"id", "queue_id", "tenant_id", "kind", "payload", "priority", "max_attempts"}, src); err != nil {
		return nil, err
	}
	if notify {
		if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, channelJobs, notifyPayload(ref.ID, ref.Name)); err != nil {
			return nil, err
		}
	}
	out := make([]Pushed, len(rows))
	for i, id := range ids {
		out[i].ID = JobID(id)
	}
	return out, nil
}

const pushOneSQL = `
WITH q AS (
    SELECT id FROM queues WHERE id = $1 FOR KEY SHARE
), ins AS (
    INSERT INTO jobs (queue_id, tenant_id, kind, payload, priority, run_at, max_attempts, unique_key)
    SELECT q.id, $2, $3, $4, $5, coalesce($6, now()), $7, $8 FROM q
    ON CONFLICT (queue_id, unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id, run_at <= now() AS ready
)
SELECT id, ready, true FROM ins
UNION ALL
SELECT 0, false, false WHERE NOT EXISTS (SELECT 1 FROM q)`

// pushOne adds one ungrouped job: the insert and its audit entry go in one round trip,
// as one transaction; workers are notified after the commit.
func (c *Client) pushOne(ctx context.Context, tenant, queue string, in JobInput) (Pushed, error) {
	if err := c.authorize(ctx, tenant, queue, auth.PermWrite); err != nil {
		return Pushed{}, err
	}
	r, err := c.prepare(-1, in, time.Now())
	if err != nil {
		return Pushed{}, err
	}
	for range 5 {
		ref, err := c.queues.get(ctx, tenant, queue, true)
		if err != nil {
			return Pushed{}, err
		}
		b := &pgx.Batch{}
		var out Pushed
		inserted, queueOK := false, true
		var ready bool
		b.Queue(pushOneSQL, ref.ID, ref.Tenant, r.kind, r.payload, r.priority, r.runAt, r.maxAttempts, r.uniqueKey).
			QueryRow(func(rw pgx.Row) error {
				err := rw.Scan(&out.ID, &ready, &queueOK)
				inserted = err == nil && queueOK
				if errors.Is(err, pgx.ErrNoRows) {
					return nil
				}
				return err
			})
		if err := audit.Record(ctx, db.Batch{B: b}, audit.Entry{Tenant: tenant, Action: "queue.push", ResourceType: "queue",
			ResourceID: queue, Details: map[string]any{"count": 1, "kind": r.kind}}); err != nil {
			return Pushed{}, err
		}
		if err := c.pool.SendBatch(ctx, b).Close(); err != nil {
			return Pushed{}, db.Translate(err, "job")
		}
		switch {
		case !queueOK:
			c.queues.forgetRef(ref)
			continue
		case inserted:
			if ready {
				c.notify(ref)
			}
			return out, nil
		}
		if r.uniqueKey == nil {
			return Pushed{}, problem.Internal(errors.New("a job without a unique key was not inserted"))
		}
		// The unique key is held: answer its holder, unless it finished meanwhile.
		err = c.pool.QueryRow(ctx, `SELECT id FROM jobs WHERE queue_id = $1 AND unique_key = $2`, ref.ID, *r.uniqueKey).Scan(&out.ID)
		if err == nil {
			out.Existing = true
			return out, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return Pushed{}, db.Translate(err, "job")
		}
	}
	return Pushed{}, problem.Conflict("transaction_conflict", "the unique key was taken and released concurrently; retry")
}

// inTx runs fn in a transaction on the pool.
func (c *Client) inTx(ctx context.Context, fn func(pgx.Tx) error) error {
	return db.Translate(pgx.BeginFunc(ctx, c.pool, fn), "job")
}

// JobPushManyOnce is JobPushMany under an idempotency key: the first call with key
// pushes and keeps its answer (24 hours); a retry with the same key and the same jobs
// gets that answer again instead of pushing twice (replay is set); the same key with
// other jobs is refused with 422 idempotency_key_reused.
func (c *Client) JobPushManyOnce(ctx context.Context, tenant, queue, key string, in []JobInput) (out []Pushed, replay bool, err error) {
	if key == "" {
		out, err = c.JobPushMany(ctx, tenant, queue, in)
		return out, false, err
	}
	if err := c.authorize(ctx, tenant, queue, auth.PermWrite); err != nil {
		return nil, false, err
	}
	body, err := json.Marshal(in)
	if err != nil {
		return nil, false, err
	}
	var ref queueRef
	err = c.inTx(ctx, func(tx pgx.Tx) error {
		if replay, err = idem.Claim(ctx, tx, tenant, resource(queue), key, idem.Hash(body), &out); err != nil || replay {
			return err
		}
		if out, ref, err = c.pushMany(ctx, tx, tenant, queue, in, false); err != nil {
			return err
		}
		return idem.Store(ctx, tx, tenant, resource(queue), key, out)
	})
	if err != nil {
		return nil, false, err
	}
	if !replay {
		c.notify(ref)
	}
	return out, replay, nil
}
