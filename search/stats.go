package search

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Stats are query and performance statistics of a collection's searches.
type Stats struct {
	Since       time.Time        `json:"since"`
	Searches    int64            `json:"searches"`
	ByMode      map[string]int64 `json:"by_mode"`
	ByPath      map[string]int64 `json:"by_path" doc:"How vector searches were answered: exact, index, index+widened, …"`
	P50MS       float64          `json:"p50_ms"`
	P95MS       float64          `json:"p95_ms"`
	P99MS       float64          `json:"p99_ms"`
	ZeroResults int64            `json:"zero_results"`
	// TopQueries are the most frequent query texts, and ZeroResultQueries the most
	// frequent of those that found nothing (up to 20 each).
	TopQueries        []QueryCount `json:"top_queries"`
	ZeroResultQueries []QueryCount `json:"zero_result_queries"`
}

// QueryCount is a query text and how often it was searched.
type QueryCount struct {
	Query string `json:"query"`
	Count int64  `json:"count"`
}

// Stats summarizes a collection's searches since a time (default: the last day) from the
// query log (read on the collection). The log is written within a fraction of a second.
func (s *Store) Stats(ctx context.Context, tenant, coll string, since time.Time) (Stats, error) {
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return Stats{}, err
	}
	if since.IsZero() {
		since = time.Now().Add(-24 * time.Hour)
	}
	out := Stats{Since: since, ByMode: map[string]int64{}, ByPath: map[string]int64{}, TopQueries: []QueryCount{}, ZeroResultQueries: []QueryCount{}}
	err = s.pool.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE results = 0),
			coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY took_us), 0) / 1000,
			coalesce(percentile_cont(0.95) WITHIN GROUP (ORDER BY took_us), 0) / 1000,
			coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY took_us), 0) / 1000
		FROM search_queries WHERE collection_id = $1 AND at >= $2`, collID, since).
		Scan(&out.Searches, &out.ZeroResults, &out.P50MS, &out.P95MS, &out.P99MS)
	if err != nil {
		return Stats{}, db.Translate(err, "search statistics")
	}
	rows, err := s.pool.Query(ctx, `SELECT 'mode', mode, count(*) FROM search_queries WHERE collection_id = $1 AND at >= $2 GROUP BY mode
		UNION ALL SELECT 'path', path, count(*) FROM search_queries WHERE collection_id = $1 AND at >= $2 AND path <> 'text' GROUP BY path`, collID, since)
	if err != nil {
		return Stats{}, db.Translate(err, "search statistics")
	}
	var kind, key string
	var n int64
	if _, err := pgx.ForEachRow(rows, []any{&kind, &key, &n}, func() error {
		if kind == "mode" {
			out.ByMode[key] = n
		} else {
			out.ByPath[key] = n
		}
		return nil
	}); err != nil {
		return Stats{}, db.Translate(err, "search statistics")
	}
	for _, c := range []struct {
		cond string
		dst  *[]QueryCount
	}{{"", &out.TopQueries}, {" AND results = 0", &out.ZeroResultQueries}} {
		rows, err := s.pool.Query(ctx, `SELECT query, count(*) FROM search_queries WHERE collection_id = $1 AND at >= $2 AND query <> ''`+c.cond+`
			GROUP BY query ORDER BY count(*) DESC, query LIMIT 20`, collID, since)
		if err != nil {
			return Stats{}, db.Translate(err, "search statistics")
		}
		list, err := pgx.CollectRows(rows, pgx.RowToStructByPos[QueryCount])
		if err != nil {
			return Stats{}, db.Translate(err, "search statistics")
		}
		*c.dst = append(*c.dst, list...)
	}
	return out, nil
}

// Rebuild rebuilds a collection's search indexes from its documents (admin on the
// collection), in the background; it returns their state.
func (s *Store) Rebuild(ctx context.Context, tenant, coll string) ([]IndexState, error) {
	collID, err := s.docs.CollectionID(ctx, tenant, coll, auth.PermAdmin)
	if err != nil {
		return nil, err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var gen int64
		err := tx.QueryRow(ctx, `UPDATE search_settings SET generation = generation + 1 WHERE collection_id = $1 RETURNING generation`, collID).Scan(&gen)
		if errors.Is(err, pgx.ErrNoRows) {
			return problem.NotFound("search_not_configured", "collection %q has no search settings", coll)
		}
		if err != nil {
			return err
		}
		s.forget(collID)
		st, err := s.settingsOf(ctx, collID)
		if err != nil || st == nil {
			return err
		}
		if err := s.startBuilds(ctx, tx, tenant, collID, gen, st); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", settingsChannel, collID); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "search.rebuild", ResourceType: "collection", ResourceID: coll})
	})
	if err != nil {
		return nil, db.Translate(err, "search indexes")
	}
	s.forget(collID)
	return s.Indexes(ctx, tenant, coll)
}
