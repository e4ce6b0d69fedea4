package media

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Hash is a stored blob: its bytes' SHA-256, size, format and how many aliases name it.
type Hash struct {
	Hash      string    `json:"hash" doc:"SHA-256 of the bytes, hex."`
	Size      int64     `json:"size" doc:"Bytes."`
	Format    string    `json:"format"`
	Aliases   int       `json:"aliases" doc:"How many aliases name these bytes."`
	CreatedAt time.Time `json:"created_at"`
}

// HashPage is one page of hashes, newest first.
type HashPage struct {
	Items []Hash `json:"items"`
	// NextCursor continues the listing; empty on the last page.
	NextCursor string `json:"next_cursor,omitempty"`
}

// HashListOptions shape a listing. Nil means the defaults.
type HashListOptions struct {
	// Limit is the page size, 1 to 1000. Default 100.
	Limit int
	// Cursor is the NextCursor of the previous page; empty starts at the newest.
	Cursor string
	// Before, when not zero (and Cursor is empty), starts at the newest hash created at or
	// before this instant.
	Before time.Time
}

func hashNotFound(h string) error { return problem.NotFound("hash_not_found", "hash %q not found", h) }

func parseHash(h string) ([]byte, error) {
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		return nil, hashNotFound(h)
	}
	return b, nil
}

// Cursors carry the last item's (created_at in µs, hash): the listing's total order.
func hashCursor(at time.Time, h []byte) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(at.UnixMicro(), 10) + "." + hex.EncodeToString(h)))
}

func parseHashCursor(c string) (time.Time, []byte, error) {
	bad := problem.Invalid("invalid_cursor", "the cursor was not returned by this listing").WithField("query.cursor", "invalid")
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return time.Time{}, nil, bad
	}
	us, hx, ok := strings.Cut(string(raw), ".")
	n, err := strconv.ParseInt(us, 10, 64)
	h, herr := hex.DecodeString(hx)
	if !ok || err != nil || herr != nil || len(h) != 32 {
		return time.Time{}, nil, bad
	}
	return time.UnixMicro(n).UTC(), h, nil
}

// HashList lists the tenant's hashes newest first (admin on "media:*"), in the total
// order (created_at, hash) so no page boundary skips or repeats a hash.
func (s *Service) HashList(ctx context.Context, tenant string, o *HashListOptions) (HashPage, error) {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermAdmin); err != nil {
		return HashPage{}, err
	}
	var opt HashListOptions
	if o != nil {
		opt = *o
	}
	if opt.Limit <= 0 {
		opt.Limit = 100
	}
	if opt.Limit > 1000 {
		return HashPage{}, problem.Invalid("invalid_limit", "limit is 1 to 1000").WithField("query.limit", "invalid")
	}
	// Start past the maximal key: the newest instant possible with the greatest hash.
	at, after := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), []byte(nil)
	inclusive := true
	if !opt.Before.IsZero() {
		at = opt.Before
	}
	if opt.Cursor != "" {
		var err error
		if at, after, err = parseHashCursor(opt.Cursor); err != nil {
			return HashPage{}, err
		}
		inclusive = false
	}
	rows, err := s.pool.Query(ctx, `
		SELECT h.hash, h.size, h.format, h.created_at,
		       (SELECT count(*) FROM media_aliases a WHERE a.tenant_id = h.tenant_id AND a.hash = h.hash)
		  FROM media_hashes h
		 WHERE h.tenant_id = $1 AND (CASE WHEN $4 THEN h.created_at <= $2 ELSE (h.created_at, h.hash) < ($2, $3) END)
		 ORDER BY h.created_at DESC, h.hash DESC LIMIT $5`, tenant, at, after, inclusive, opt.Limit+1)
	if err != nil {
		return HashPage{}, db.Translate(err, "hashes")
	}
	type row struct {
		sum []byte
		h   Hash
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.sum, &x.h.Size, &x.h.Format, &x.h.CreatedAt, &x.h.Aliases)
		x.h.Hash, x.h.CreatedAt = hex.EncodeToString(x.sum), x.h.CreatedAt.UTC()
		return x, err
	})
	if err != nil {
		return HashPage{}, db.Translate(err, "hashes")
	}
	page := HashPage{Items: make([]Hash, 0, len(items))}
	for i, x := range items {
		if i == opt.Limit {
			last := items[i-1]
			page.NextCursor = hashCursor(last.h.CreatedAt, last.sum)
			break
		}
		page.Items = append(page.Items, x.h)
	}
	return page, nil
}

// HashPurge removes a hash with all its aliases, proxies, variants, details and blob
// (admin on "media:*"); 404 hash_not_found when the tenant has no such hash.
func (s *Service) HashPurge(ctx context.Context, tenant, hash string) error {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermAdmin); err != nil {
		return err
	}
	sum, err := parseHash(hash)
	if err != nil {
		return err
	}
	var gone []string
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var ident string
		err := tx.QueryRow(ctx, `SELECT identifier FROM media_hashes WHERE tenant_id = $1 AND hash = $2 FOR UPDATE`, tenant, sum).Scan(&ident)
		if errors.Is(err, pgx.ErrNoRows) {
			return hashNotFound(hash)
		}
		if err != nil {
			return err
		}
		if gone, err = hashRemoveTx(ctx, tx, tenant, sum); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.purge", ResourceType: "media_hash", ResourceID: hash,
			Details: map[string]any{"blobs_removed": len(gone)}})
	})
	if err != nil {
		return db.Translate(err, "hash")
	}
	s.deleteBlobs(ctx, gone)
	return nil
}

// HashPruneMissing removes the records of every hash of the tenant whose blob is missing
// from the store, with their aliases (admin on "media:*"), and answers how many.
func (s *Service) HashPruneMissing(ctx context.Context, tenant string) (int, error) {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermAdmin); err != nil {
		return 0, err
	}
	var after []byte
	var missing [][]byte
	for {
		rows, err := s.pool.Query(ctx, `SELECT hash, identifier FROM media_hashes WHERE tenant_id = $1 AND hash > $2
			ORDER BY hash LIMIT 500`, tenant, cmpBytes(after))
		if err != nil {
			return 0, db.Translate(err, "hashes")
		}
		type hi struct {
			sum   []byte
			ident string
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (hi, error) {
			var x hi
			return x, r.Scan(&x.sum, &x.ident)
		})
		if err != nil {
			return 0, db.Translate(err, "hashes")
		}
		for _, x := range page {
			if _, err := s.store.Stat(ctx, x.ident); errors.Is(err, ErrBlobNotFound) {
				missing = append(missing, x.sum)
			} else if err != nil {
				return 0, fmt.Errorf("checking %s in the %s store: %w", x.ident, s.store.Name(), err)
			}
		}
		if len(page) < 500 {
			break
		}
		after = page[len(page)-1].sum
	}
	n := 0
	var goneIdents []string
	for _, sum := range missing {
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			// Recheck under the lock: the blob may have been replaced meanwhile.
			var ident string
			err := tx.QueryRow(ctx, `SELECT identifier FROM media_hashes WHERE tenant_id = $1 AND hash = $2 FOR UPDATE`, tenant, sum).Scan(&ident)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			if _, err := s.store.Stat(ctx, ident); !errors.Is(err, ErrBlobNotFound) {
				return err
			}
			gone, err := hashRemoveTx(ctx, tx, tenant, sum)
			if err != nil {
				return err
			}
			goneIdents = append(goneIdents, gone...)
			n++
			return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.prune_missing", ResourceType: "media_hash",
				ResourceID: hex.EncodeToString(sum)})
		})
		if err != nil {
			return n, db.Translate(err, "hash")
		}
	}
	// The removed hashes' originals were missing already; their variants' blobs go now.
	s.deleteBlobs(ctx, goneIdents)
	// The run itself is recorded, whatever it found.
	if err := audit.Record(ctx, s.pool, audit.Entry{Tenant: tenant, Action: "media.prune_missing_run", ResourceType: "media",
		Details: map[string]any{"removed": n}}); err != nil {
		return n, db.Translate(err, "audit")
	}
	return n, nil
}

func cmpBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// PruneReport says what a prune deleted.
type PruneReport struct {
	// Removed counts blobs of deleted records (media_gone) deleted from the store.
	Removed int `json:"removed"`
	// Orphans counts blobs without any record, older than OrphanGrace, deleted.
	Orphans int `json:"orphans"`
}

// BlobsPrune deletes from the store the blobs whose records were removed, and blobs that
// no record names and that are older than OrphanGrace (left by a crash between storing
// and recording). It is background maintenance across all tenants, without authorization.
func (s *Service) BlobsPrune(ctx context.Context) (PruneReport, error) {
	rep, err := s.goneRemove(ctx)
	if err != nil {
		return rep, err
	}
	rep.Orphans, err = s.orphansSweep(ctx)
	return rep, err
}

// sweepClaim answers whether this node should list the store for orphans now: at most
// one node per OrphanSweepInterval across the cluster wins.
func (s *Service) sweepClaim(ctx context.Context) (bool, error) {
	tag, err := s.pool.Exec(ctx, `INSERT INTO media_sweeps (swept_at) VALUES (now())
		ON CONFLICT (singleton) DO UPDATE SET swept_at = now() WHERE media_sweeps.swept_at <= now() - $1::interval`,
		s.cfg.OrphanSweepInterval)
	if err != nil {
		return false, db.Translate(err, "sweeps")
	}
	return tag.RowsAffected() == 1, nil
}

// goneRemove deletes from the store the blobs whose records were removed (media_gone).
func (s *Service) goneRemove(ctx context.Context) (PruneReport, error) {
	var rep PruneReport
	for {
		rows, err := s.pool.Query(ctx, `SELECT identifier FROM media_gone ORDER BY identifier LIMIT 500`)
		if err != nil {
			return rep, db.Translate(err, "removed blobs")
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return rep, db.Translate(err, "removed blobs")
		}
		for _, id := range ids {
			if err := s.store.Delete(ctx, id); err != nil {
				return rep, err
			}
		}
		if _, err := s.pool.Exec(ctx, `DELETE FROM media_gone WHERE identifier = ANY($1)`, ids); err != nil {
			return rep, db.Translate(err, "removed blobs")
		}
		rep.Removed += len(ids)
		if len(ids) < 500 {
			break
		}
	}
	return rep, nil
}

// orphansSweep lists the whole store and deletes the blobs that no record names and that
// are older than OrphanGrace, answering how many.
func (s *Service) orphansSweep(ctx context.Context) (int, error) {
	orphaned := 0
	cutoff := s.cfg.Now().Add(-s.cfg.OrphanGrace)
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		rows, err := s.pool.Query(ctx, `SELECT b.id FROM unnest($1::text[]) AS b(id)
			WHERE NOT EXISTS (SELECT 1 FROM media_hashes h WHERE h.identifier = b.id)
			  AND NOT EXISTS (SELECT 1 FROM media_variants v WHERE v.identifier = b.id)
			  AND NOT EXISTS (SELECT 1 FROM media_uploads u WHERE u.incoming_identifier = b.id)`, batch)
		if err != nil {
			return db.Translate(err, "blobs")
		}
		orphans, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return db.Translate(err, "blobs")
		}
		for _, id := range orphans {
			if err := s.store.Delete(ctx, id); err != nil {
				return err
			}
		}
		orphaned += len(orphans)
		batch = batch[:0]
		return nil
	}
	err := s.store.List(ctx, func(id string, modified time.Time) error {
		if modified.After(cutoff) {
			return nil
		}
		batch = append(batch, id)
		if len(batch) == 500 {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	return orphaned, err
}

// HashInput is a blob already in the store, to record directly (imports, migrations).
type HashInput struct {
	// Hash is the SHA-256 of the bytes, hex.
	Hash string
	// Identifier is the blob's name in the store; it must exist there.
	Identifier string
	// Details are the blob's details; Size and Format are required.
	Details Details
}

// HashCreateTx records a stored blob in the caller's transaction (admin on "media:*").
// A hash the tenant already has answers 409 hash_exists; an identifier another hash or
// variant already uses answers 409 identifier_taken. It makes no alias: add one with
// AliasCreateTx.
func (s *Service) HashCreateTx(ctx context.Context, tx pgx.Tx, tenant string, in HashInput) error {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermAdmin); err != nil {
		return err
	}
	sum, err := hex.DecodeString(in.Hash)
	if err != nil || len(sum) != 32 {
		return problem.Unprocessable("invalid_hash", "a hash is 64 hex digits").WithField("hash", "invalid")
	}
	if in.Details.Size <= 0 || in.Details.Format == "" || in.Identifier == "" {
		return problem.Unprocessable("invalid_details", "size, format and identifier are required")
	}
	d := in.Details
	if d.CreatedAt.IsZero() {
		d.CreatedAt = s.cfg.Now().UTC().Truncate(time.Microsecond)
	}
	// A savepoint keeps the caller's transaction usable after a conflict.
	err = pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error {
		tag, err := sp.Exec(ctx, `INSERT INTO media_hashes (tenant_id, hash, size, format, identifier, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, hash) DO NOTHING`, tenant, sum, d.Size, d.Format, in.Identifier, d.CreatedAt)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return problem.Conflict("hash_exists", "hash %s already exists", in.Hash)
		}
		if err := detailsRelate(ctx, sp, tenant, sum, d); err != nil {
			return err
		}
		return audit.Record(ctx, sp, audit.Entry{Tenant: tenant, Action: "media.hash_create", ResourceType: "media_hash", ResourceID: in.Hash})
	})
	return translateIdentifier(err)
}

// AliasCreateTx makes a new alias and delete token for a hash the tenant has, in the
// caller's transaction (write on "media:*"); 404 hash_not_found otherwise.
func (s *Service) AliasCreateTx(ctx context.Context, tx pgx.Tx, tenant, hash string) (Upload, error) {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermWrite); err != nil {
		return Upload{}, err
	}
	sum, err := parseHash(hash)
	if err != nil {
		return Upload{}, err
	}
	up, ok, err := s.recordTx(ctx, tx, tenant, sum, Details{}, "", "")
	if err == nil && !ok {
		err = hashNotFound(hash)
	}
	if err != nil {
		return Upload{}, translateIdentifier(err)
	}
	up.Deduplicated = false
	return up, nil
}
