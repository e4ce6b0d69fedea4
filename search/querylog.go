package search

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// queryLog records searches for statistics. Entries are buffered and written in batches
// off the search's path, so logging never slows a search; when the buffer is full (the
// database is far behind) entries are dropped and counted, never blocking.
type queryLog struct {
	pool    *pgxpool.Pool
	log     *slog.Logger
	entries chan logEntry
}

type logEntry struct {
	tenant, coll, mode, query, path string
	k, results                      int
	took                            time.Duration
	at                              time.Time
}

func newQueryLog(pool *pgxpool.Pool, log *slog.Logger) *queryLog {
	return &queryLog{pool: pool, log: log, entries: make(chan logEntry, 8192)}
}

func (q *queryLog) add(e logEntry) {
	select {
	case q.entries <- e:
	default:
	}
}

// run writes entries every 200 ms (or 500 at a time) and prunes those older than
// retention hourly, until ctx ends; what is buffered at the end is written.
func (q *queryLog) run(ctx context.Context, retention time.Duration) {
	flush := time.NewTicker(200 * time.Millisecond)
	prune := time.NewTicker(time.Hour)
	defer flush.Stop()
	defer prune.Stop()
	var batch []logEntry
	write := func(ctx context.Context) {
		if len(batch) == 0 {
			return
		}
		rows := make([][]any, len(batch))
		for i, e := range batch {
			rows[i] = []any{e.tenant, e.coll, e.at, e.mode, e.query, e.k, e.results, e.took.Microseconds(), e.path}
		}
		if _, err := q.pool.CopyFrom(ctx, pgx.Identifier{"strata", "search_queries"},
			[]string{"tenant_id", "collection_id", "at", "mode", "query", "k", "results", "took_us", "path"}, pgx.CopyFromRows(rows)); err != nil {
			q.log.Warn("search: writing the query log", "err", err, "entries", len(batch))
		}
		batch = batch[:0]
	}
	for {
		select {
		case <-ctx.Done():
			for {
				select {
				case e := <-q.entries:
					batch = append(batch, e)
				default:
					stop, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					write(stop)
					cancel()
					return
				}
			}
		case e := <-q.entries:
			batch = append(batch, e)
			if len(batch) >= 500 {
				write(ctx)
			}
		case <-flush.C:
			write(ctx)
		case <-prune.C:
			if _, err := q.pool.Exec(ctx, `DELETE FROM search_queries WHERE at < now() - $1::interval`, retention.String()); err != nil && ctx.Err() == nil {
				q.log.Warn("search: pruning the query log", "err", err)
			}
		}
	}
}
