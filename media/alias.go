package media

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Media is an alias with what it names.
type Media struct {
	Alias     string    `json:"alias"`
	Hash      string    `json:"hash" doc:"SHA-256 of the bytes, hex."`
	CreatedAt time.Time `json:"created_at" doc:"When the alias was made."`
	Details   Details   `json:"details"`
	// identifier is the blob's name in the store.
	identifier string
}

// MediaGet returns an alias's details (read on "media:<alias>"); 404 alias_not_found
// when the tenant has no such alias.
func (s *Service) MediaGet(ctx context.Context, tenant, alias string) (Media, error) {
	if err := s.authorize(ctx, tenant, resource(alias), auth.PermRead); err != nil {
		return Media{}, err
	}
	return s.lookup(ctx, tenant, alias)
}

func (s *Service) lookup(ctx context.Context, tenant, alias string) (Media, error) {
	m := Media{Alias: alias}
	var sum []byte
	err := s.pool.QueryRow(ctx, `SELECT a.hash, a.created_at, h.identifier, d.details
		FROM media_aliases a JOIN media_hashes h USING (tenant_id, hash) JOIN media_details d USING (tenant_id, hash)
		WHERE a.tenant_id = $1 AND a.alias = $2`, tenant, alias).Scan(&sum, &m.CreatedAt, &m.identifier, &m.Details)
	if errors.Is(err, pgx.ErrNoRows) {
		return Media{}, aliasNotFound(alias)
	}
	if err != nil {
		return Media{}, db.Translate(err, "media")
	}
	m.Hash = hex.EncodeToString(sum)
	return m, nil
}

// MediaOpen opens an alias's original bytes (read on "media:<alias>"), with its details.
// The caller closes the blob. A record whose blob is missing from the store answers 404
// blob_missing (an admin's HashPruneMissing removes such records).
func (s *Service) MediaOpen(ctx context.Context, tenant, alias string) (Blob, Media, error) {
	m, err := s.MediaGet(ctx, tenant, alias)
	if err != nil {
		return nil, Media{}, err
	}
	b, err := s.open(ctx, m)
	return b, m, err
}

func (s *Service) open(ctx context.Context, m Media) (Blob, error) {
	b, err := s.store.Open(ctx, m.identifier)
	if errors.Is(err, ErrBlobNotFound) {
		return nil, problem.NotFound("blob_missing", "the bytes of media %q are missing from the store", m.Alias)
	}
	return b, err
}

// MediaDelete deletes an alias with its delete token (write on "media:<alias>"): 403
// wrong_delete_token for another token (compared in constant time); an alias that does
// not exist counts as already deleted (nil). The last alias of a hash takes the hash's
// variants, details and blob with it.
func (s *Service) MediaDelete(ctx context.Context, tenant, alias, token string) error {
	if err := s.authorize(ctx, tenant, resource(alias), auth.PermWrite); err != nil {
		return err
	}
	var gone []string
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		gone, err = s.mediaDeleteTx(ctx, tx, tenant, alias, token)
		return err
	})
	if err != nil {
		return db.Translate(err, "media")
	}
	s.deleteBlobs(ctx, gone)
	return nil
}

// MediaDeleteTx is MediaDelete in the caller's transaction. The removed blobs are
// deleted from the store by the next prune after the transaction commits.
func (s *Service) MediaDeleteTx(ctx context.Context, tx pgx.Tx, tenant, alias, token string) error {
	if err := s.authorize(ctx, tenant, resource(alias), auth.PermWrite); err != nil {
		return err
	}
	_, err := s.mediaDeleteTx(ctx, tx, tenant, alias, token)
	return db.Translate(err, "media")
}

func (s *Service) mediaDeleteTx(ctx context.Context, tx pgx.Tx, tenant, alias, token string) ([]string, error) {
	var stored []byte
	err := tx.QueryRow(ctx, `SELECT token_hash FROM media_aliases WHERE tenant_id = $1 AND alias = $2 FOR UPDATE`, tenant, alias).Scan(&stored)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil // already deleted
	}
	if err != nil {
		return nil, err
	}
	given := sha256.Sum256([]byte(token))
	if subtle.ConstantTimeCompare(given[:], stored) != 1 {
		return nil, problem.Forbidden("wrong_delete_token", "the delete token does not match")
	}
	gone, err := aliasRemoveTx(ctx, tx, tenant, alias)
	if err != nil {
		return nil, err
	}
	return gone, audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.delete", ResourceType: "media", ResourceID: alias,
		Details: map[string]any{"blobs_removed": len(gone)}})
}

// aliasRemoveTx removes an alias and its proxies; when it was the hash's last alias, the
// hash with its variants and details too, children first, recording the removed blobs'
// identifiers in media_gone. It answers those identifiers.
func aliasRemoveTx(ctx context.Context, tx pgx.Tx, tenant, alias string) ([]string, error) {
	if _, err := tx.Exec(ctx, `DELETE FROM media_proxies WHERE tenant_id = $1 AND alias = $2`, tenant, alias); err != nil {
		return nil, err
	}
	var sum []byte
	err := tx.QueryRow(ctx, `DELETE FROM media_aliases WHERE tenant_id = $1 AND alias = $2 RETURNING hash`, tenant, alias).Scan(&sum)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	// Lock the hash, then look for other aliases: an upload adding one holds the hash
	// FOR SHARE until it commits, and this statement sees its alias afterwards.
	var ident string
	err = tx.QueryRow(ctx, `SELECT identifier FROM media_hashes WHERE tenant_id = $1 AND hash = $2 FOR UPDATE`, tenant, sum).Scan(&ident)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var others bool
	if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM media_aliases WHERE tenant_id = $1 AND hash = $2)`, tenant, sum).Scan(&others); err != nil {
		return nil, err
	}
	if others {
		return nil, nil
	}
	return hashRemoveTx(ctx, tx, tenant, sum)
}

// hashRemoveTx removes a hash and everything hanging off it — proxies, aliases, variants,
// details, then the hash — and records the blobs in media_gone.
func hashRemoveTx(ctx context.Context, tx pgx.Tx, tenant string, sum []byte) ([]string, error) {
	rows, err := tx.Query(ctx, `SELECT identifier FROM media_variants WHERE tenant_id = $1 AND hash = $2
		UNION ALL SELECT identifier FROM media_hashes WHERE tenant_id = $1 AND hash = $2`, tenant, sum)
	if err != nil {
		return nil, err
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO media_gone (identifier, tenant_id) SELECT unnest($2::text[]), $1
		ON CONFLICT DO NOTHING`, tenant, gone); err != nil {
		return nil, err
	}
	steps := []string{
		`DELETE FROM media_proxies p USING media_aliases a
		  WHERE p.tenant_id = $1 AND a.tenant_id = $1 AND a.hash = $2 AND p.alias = a.alias`,
		`DELETE FROM media_aliases WHERE tenant_id = $1 AND hash = $2`,
		`DELETE FROM media_variants WHERE tenant_id = $1 AND hash = $2`,
		`DELETE FROM media_details WHERE tenant_id = $1 AND hash = $2`,
		`DELETE FROM media_hashes WHERE tenant_id = $1 AND hash = $2`,
	}
	for _, q := range steps {
		if _, err := tx.Exec(ctx, q, tenant, sum); err != nil {
			return nil, err
		}
	}
	return gone, nil
}

// deleteBlobs deletes removed blobs from the store and their media_gone rows; failures
// are left to the prune.
func (s *Service) deleteBlobs(ctx context.Context, ids []string) {
	if len(ids) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	done := make([]string, 0, len(ids))
	for _, id := range ids {
		if err := s.store.Delete(ctx, id); err != nil {
			s.log.Warn("deleting a removed blob", "identifier", id, "err", err)
			continue
		}
		done = append(done, id)
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM media_gone WHERE identifier = ANY($1)`, done); err != nil {
		s.log.Warn("forgetting removed blobs", "err", err)
	}
}
