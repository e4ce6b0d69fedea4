package db

import (
	"context"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Batch queues statements into a pgx.Batch instead of running them, so that code written
// against an Exec method (audit.Record, feed.Append, write hooks) can join a write sent in
// one round trip. Its Exec reports no rows affected; the statements run, as one implicit
// transaction, when the batch is sent.
type Batch struct{ B *pgx.Batch }

// Exec queues sql with args.
func (q Batch) Exec(_ context.Context, sql string, args ...any) (pgconn.CommandTag, error) {
	q.B.Queue(sql, args...)
	return pgconn.CommandTag{}, nil
}
