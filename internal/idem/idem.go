// Package idem implements Idempotency-Key for creating requests: the first request with a
// key does the work and stores its answer in the same transaction; a retry with the same
// key and the same request gets that answer again instead of a second creation; the same
// key with a different request is refused. Keys are kept 24 hours.
package idem

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/json"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/problem"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the idempotency-key table, required by modules that honour the header.
var Schema = &migrate.Module{Name: "idempotency", FS: migrate.Dir(migrations, "migrations"), Requires: []*migrate.Module{auth.Schema}}

// MaxKeyLength bounds an Idempotency-Key.
const MaxKeyLength = 255

// Hash fingerprints a request, so a reused key with different content is caught.
func Hash(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		var n [8]byte
		l := len(p)
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write(p)
	}
	return h.Sum(nil)
}

// Claim takes key for scope in tx. When the key was used before it returns the stored
// response (replay is true), or a 422 idempotency_key_reused when the request differs.
// A concurrent request with the same key waits for the first one's transaction.
func Claim(ctx context.Context, tx pgx.Tx, tenant, scope, key string, requestHash []byte, response any) (replay bool, err error) {
	if len(key) > MaxKeyLength {
		return false, problem.Invalid("invalid_idempotency_key", "an Idempotency-Key has at most %d characters", MaxKeyLength)
	}
	tag, err := tx.Exec(ctx, `INSERT INTO idempotency_keys (tenant_id, scope, key, request_hash) VALUES ($1, $2, $3, $4)
		ON CONFLICT DO NOTHING`, tenant, scope, key, requestHash)
	if err != nil {
		return false, err
	}
	if tag.RowsAffected() == 1 {
		return false, nil
	}
	var stored []byte
	var hash []byte
	err = tx.QueryRow(ctx, `SELECT request_hash, response FROM idempotency_keys WHERE tenant_id = $1 AND scope = $2 AND key = $3`,
		tenant, scope, key).Scan(&hash, &stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, problem.Conflict("idempotency_key_in_flight", "a request with this Idempotency-Key did not finish; retry")
	}
	if err != nil {
		return false, err
	}
	if string(hash) != string(requestHash) {
		return false, problem.Unprocessable("idempotency_key_reused", "this Idempotency-Key was used for a different request")
	}
	if stored == nil {
		return false, problem.Conflict("idempotency_key_in_flight", "a request with this Idempotency-Key did not finish; retry")
	}
	return true, json.Unmarshal(stored, response)
}

// Store records the response to replay for key, in the same transaction as the work.
func Store(ctx context.Context, tx pgx.Tx, tenant, scope, key string, response any) error {
	b, err := json.Marshal(response)
	if err != nil {
		return err
	}
	_, err = tx.Exec(ctx, `UPDATE idempotency_keys SET response = $4 WHERE tenant_id = $1 AND scope = $2 AND key = $3`, tenant, scope, key, b)
	return err
}

// Prune deletes keys older than 24 hours.
func Prune(ctx context.Context, pool *pgxpool.Pool) (int64, error) {
	tag, err := pool.Exec(ctx, `DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours'`)
	return tag.RowsAffected(), err
}
