package search

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/queue"
)

// Search's background work runs as jobs on each tenant's queue of this name: index builds
// ("build") and embedding ("embed"). The queue gives them retries with backoff, leases
// taken over from a crashed node, and visibility (GET /v1/t/{tenant}/queues/strata.search).
const (
	jobQueue  = "strata.search"
	kindBuild = "build"
	kindEmbed = "embed"
)

// embedBatch is how many documents one embedding job carries; dispatchBatch how many
// pending documents one dispatch transaction moves into jobs.
const (
	embedBatch    = 64
	dispatchBatch = 1024
)

// embedChannel wakes the dispatcher: documents are waiting for their vectors.
const embedChannel = "strata_search_embed"

type buildJob struct {
	Collection string `json:"collection_id"`
	Name       string `json:"name"`
	Generation int64  `json:"generation"`
}

type embedJob struct {
	Collection string   `json:"collection_id"`
	Field      string   `json:"field"`
	IDs        []string `json:"ids"`
}

// queueEmbeds records, in a write's transaction, that documents need an embedded field
// computed, and wakes the dispatcher when the transaction commits.
func queueEmbeds(ctx context.Context, q doc.Execer, tenant, collID, field string, ids []string) error {
	if _, err := q.Exec(ctx, `INSERT INTO search_embed_pending (collection_id, field, doc_id, tenant_id)
		SELECT $1, $2, unnest($3::text[]), $4 ON CONFLICT DO NOTHING`, collID, field, ids, tenant); err != nil {
		return err
	}
	_, err := q.Exec(ctx, `SELECT pg_notify($1, '')`, embedChannel)
	return err
}

// pushBuilds adds a build job per index within tx (the settings change's transaction).
func (s *Store) pushBuilds(ctx context.Context, tx pgx.Tx, tenant, collID string, gen int64, names []string) error {
	jobs := make([]queue.JobInput, len(names))
	for i, n := range names {
		payload, _ := json.Marshal(buildJob{Collection: collID, Name: n, Generation: gen})
		jobs[i] = queue.JobInput{Kind: kindBuild, Payload: payload, MaxAttempts: 5}
	}
	_, err := s.queue.JobPushManyTx(auth.System(ctx), tx, tenant, jobQueue, jobs)
	return err
}

// dispatch moves pending embeddings into jobs until none are left.
func (s *Store) dispatch(ctx context.Context) error {
	for {
		n, err := s.dispatchOnce(ctx)
		if err != nil || n < dispatchBatch {
			return err
		}
	}
}

// dispatchOnce moves up to dispatchBatch pending embeddings into jobs of embedBatch
// documents, in one transaction: a crash leaves them pending, never lost or doubled.
func (s *Store) dispatchOnce(ctx context.Context) (int, error) {
	n := 0
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `DELETE FROM search_embed_pending p
			USING (SELECT collection_id, field, doc_id FROM search_embed_pending
				ORDER BY tenant_id, collection_id, field LIMIT $1 FOR UPDATE SKIP LOCKED) x
			WHERE p.collection_id = x.collection_id AND p.field = x.field AND p.doc_id = x.doc_id
			RETURNING p.tenant_id::text, p.collection_id::text, p.field, p.doc_id`, dispatchBatch)
		if err != nil {
			return err
		}
		type key struct{ tenant, coll, field string }
		byKey := map[key][]string{}
		var order []key
		var k key
		var id string
		if _, err := pgx.ForEachRow(rows, []any{&k.tenant, &k.coll, &k.field, &id}, func() error {
			if _, ok := byKey[k]; !ok {
				order = append(order, k)
			}
			byKey[k] = append(byKey[k], id)
			n++
			return nil
		}); err != nil {
			return err
		}
		jobs := map[string][]queue.JobInput{}
		var tenants []string
		for _, k := range order {
			ids := byKey[k]
			for start := 0; start < len(ids); start += embedBatch {
				payload, _ := json.Marshal(embedJob{Collection: k.coll, Field: k.field, IDs: ids[start:min(start+embedBatch, len(ids))]})
				if _, ok := jobs[k.tenant]; !ok {
					tenants = append(tenants, k.tenant)
				}
				jobs[k.tenant] = append(jobs[k.tenant], queue.JobInput{Kind: kindEmbed, Payload: payload})
			}
		}
		for _, t := range tenants {
			if _, err := s.queue.JobPushManyTx(auth.System(ctx), tx, t, jobQueue, jobs[t]); err != nil {
				return err
			}
		}
		return nil
	})
	return n, err
}

// runJobs works the search queues of every tenant until ctx ends, and dispatches pending
// embeddings when woken (and every few seconds, in case a wake-up was lost).
func (s *Store) runJobs(ctx context.Context) {
	w := s.queue.NewWorker(queue.WorkerConfig{Queues: map[string]int{jobQueue: 2}, Name: "search", Logger: s.log})
	w.Handle(kindBuild, s.runBuild)
	w.Handle(kindEmbed, s.runEmbed)
	if err := w.Start(auth.System(ctx)); err != nil {
		if ctx.Err() == nil {
			s.log.Error("search: starting the job worker", "err", err)
		}
		return
	}
	defer func() {
		stop, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = w.Stop(stop)
	}()
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	for {
		if err := s.dispatch(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("search: dispatching embeddings", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.embedWake:
		case <-tick.C:
		}
	}
}

// runBuild runs one index build job.
func (s *Store) runBuild(ctx context.Context, j *queue.Job) error {
	var b buildJob
	if err := j.Bind(&b); err != nil {
		return queue.Discard(err)
	}
	if err := s.jobTenant(ctx, j, b.Collection); err != nil {
		return err
	}
	err := s.buildOne(ctx, b.Collection, b.Name, b.Generation)
	if err != nil && ctx.Err() == nil {
		if j.Attempt >= j.MaxAttempts {
			_, _ = s.pool.Exec(ctx, `UPDATE search_indexes SET status = 'failed', error = $4, finished_at = now()
				WHERE collection_id = $1 AND name = $2 AND generation = $3`, b.Collection, b.Name, b.Generation, err.Error())
		}
		s.log.Warn("search: index build failed", "collection", b.Collection, "index", b.Name, "attempt", j.Attempt, "err", err)
	}
	return err
}

// jobTenant refuses a job whose collection is not its own tenant's: the queue is the
// tenant's, so a member could push a job naming another tenant's collection.
func (s *Store) jobTenant(ctx context.Context, j *queue.Job, collID string) error {
	var tenant string
	err := s.pool.QueryRow(ctx, `SELECT tenant_id::text FROM collections WHERE id::text = $1`, collID).Scan(&tenant)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return queue.Discard(fmt.Errorf("collection %s does not exist", collID))
	case err != nil:
		return err
	case tenant != j.Tenant:
		return queue.Discard(fmt.Errorf("collection %s is not tenant %s's", collID, j.Tenant))
	}
	return nil
}

// runEmbed computes one batch of embedded vectors.
func (s *Store) runEmbed(ctx context.Context, j *queue.Job) error {
	var e embedJob
	if err := j.Bind(&e); err != nil {
		return queue.Discard(err)
	}
	if err := s.jobTenant(ctx, j, e.Collection); err != nil {
		return err
	}
	st, err := s.settingsOf(ctx, e.Collection)
	if err != nil {
		return err
	}
	if st == nil {
		return nil // the settings (or the collection) are gone
	}
	v := st.vector(e.Field)
	if v == nil || v.Embed == nil {
		return nil // the field is gone or no longer embedded
	}
	return s.embedDocs(ctx, st, v, e.IDs)
}

// WaitIndexed waits, up to timeout, until a document written at version has the vectors
// of every embedded field of its collection stored (read on the collection). It reports
// whether they are; false means the embedding jobs are still pending (they run on, and
// the write stands). A field whose text is empty in the document has no vector to wait
// for. Text indexes need no waiting: they are written with the document.
func (s *Store) WaitIndexed(ctx context.Context, tenant, coll, id string, version int64, timeout time.Duration) (bool, error) {
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return false, err
	}
	st, err := s.settingsOf(ctx, collID)
	if err != nil || st == nil {
		return st == nil, err
	}
	var fields []string
	var body []byte
	for i := range st.Vectors {
		v := &st.Vectors[i]
		if v.Embed == nil {
			continue
		}
		if body == nil {
			if err := s.pool.QueryRow(ctx, `SELECT coalesce(body, '{}') FROM documents WHERE collection_id = $1 AND id = $2`, collID, id).Scan(&body); err != nil {
				return false, db.Translate(err, "document")
			}
		}
		if embedText(v.Embed, body) != "" {
			fields = append(fields, v.Name)
		}
	}
	if len(fields) == 0 {
		return true, nil
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		var done bool
		err := s.pool.QueryRow(ctx, `SELECT count(*) = cardinality($4::text[]) FROM search_vectors
			WHERE collection_id = $1 AND doc_id = $2 AND version >= $3 AND field = ANY($4)`, collID, id, version, fields).Scan(&done)
		switch {
		case done:
			return true, nil
		case ctx.Err() != nil:
			return false, nil
		case err != nil:
			return false, db.Translate(err, "search vectors")
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}
