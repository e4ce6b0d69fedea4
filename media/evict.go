package media

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/db"
)

// evictPage is how many candidates one eviction query reads.
const evictPage = 200

// ProxiesEvict removes proxied media not accessed since before, across all tenants: the
// proxy row, and its alias unless another proxy still names it (the last alias of some
// bytes takes them along). It pages in the total order (accessed_at, tenant, url), so no
// candidate is skipped, and rechecks each under a row lock, so one accessed meanwhile
// stays. Background maintenance, without authorization; answers how many were removed.
func (s *Service) ProxiesEvict(ctx context.Context, before time.Time) (int, error) {
	type key struct {
		at     time.Time
		tenant string
		url    string
	}
	var last *key
	n := 0
	for {
		q := `SELECT accessed_at, tenant_id::text, url FROM media_proxies WHERE accessed_at < $1 ORDER BY accessed_at, tenant_id, url LIMIT $2`
		args := []any{before, evictPage}
		if last != nil {
			q = `SELECT accessed_at, tenant_id::text, url FROM media_proxies WHERE accessed_at < $1
				AND (accessed_at, tenant_id, url) > ($3, $4::uuid, $5) ORDER BY accessed_at, tenant_id, url LIMIT $2`
			args = append(args, last.at, last.tenant, last.url)
		}
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return n, db.Translate(err, "proxies")
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (key, error) {
			var k key
			return k, r.Scan(&k.at, &k.tenant, &k.url)
		})
		if err != nil {
			return n, db.Translate(err, "proxies")
		}
		for _, k := range page {
			ok, err := s.proxyEvict(ctx, k.tenant, k.url, before)
			if err != nil {
				return n, err
			}
			if ok {
				n++
			}
		}
		if len(page) < evictPage {
			return n, nil
		}
		last = &page[len(page)-1]
	}
}

func (s *Service) proxyEvict(ctx context.Context, tenant, u string, before time.Time) (bool, error) {
	var gone []string
	removed := false
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var alias string
		err := tx.QueryRow(ctx, `DELETE FROM media_proxies WHERE tenant_id = $1 AND url = $2 AND accessed_at < $3 RETURNING alias`,
			tenant, u, before).Scan(&alias)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // accessed (or removed) meanwhile
		}
		if err != nil {
			return err
		}
		removed = true
		var others bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM media_proxies WHERE tenant_id = $1 AND alias = $2)`, tenant, alias).Scan(&others); err != nil {
			return err
		}
		if !others {
			if gone, err = aliasRemoveTx(ctx, tx, tenant, alias); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.proxy_evict", ResourceType: "media", ResourceID: alias,
			Details: map[string]any{"blobs_removed": len(gone)}})
	})
	if err != nil {
		return false, db.Translate(err, "proxy")
	}
	s.deleteBlobs(ctx, gone)
	return removed, nil
}

// VariantsEvict removes variants not accessed since before, across all tenants, paging in
// the total order (accessed_at, tenant, hash, spec) and rechecking each under its row
// lock. Background maintenance, without authorization; answers how many were removed.
func (s *Service) VariantsEvict(ctx context.Context, before time.Time) (int, error) {
	type key struct {
		at     time.Time
		tenant string
		hash   []byte
		spec   string
	}
	var last *key
	n := 0
	for {
		q := `SELECT accessed_at, tenant_id::text, hash, spec FROM media_variants WHERE accessed_at < $1
			ORDER BY accessed_at, tenant_id, hash, spec LIMIT $2`
		args := []any{before, evictPage}
		if last != nil {
			q = `SELECT accessed_at, tenant_id::text, hash, spec FROM media_variants WHERE accessed_at < $1
				AND (accessed_at, tenant_id, hash, spec) > ($3, $4::uuid, $5, $6) ORDER BY accessed_at, tenant_id, hash, spec LIMIT $2`
			args = append(args, last.at, last.tenant, last.hash, last.spec)
		}
		rows, err := s.pool.Query(ctx, q, args...)
		if err != nil {
			return n, db.Translate(err, "variants")
		}
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (key, error) {
			var k key
			return k, r.Scan(&k.at, &k.tenant, &k.hash, &k.spec)
		})
		if err != nil {
			return n, db.Translate(err, "variants")
		}
		for _, k := range page {
			var ident string
			err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
				err := tx.QueryRow(ctx, `DELETE FROM media_variants WHERE tenant_id = $1 AND hash = $2 AND spec = $3 AND accessed_at < $4
					RETURNING identifier`, k.tenant, k.hash, k.spec, before).Scan(&ident)
				if errors.Is(err, pgx.ErrNoRows) {
					ident = ""
					return nil
				}
				if err != nil {
					return err
				}
				_, err = tx.Exec(ctx, `INSERT INTO media_gone (identifier, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, ident, k.tenant)
				return err
			})
			if err != nil {
				return n, db.Translate(err, "variant")
			}
			if ident != "" {
				n++
				s.deleteBlobs(ctx, []string{ident})
			}
		}
		if len(page) < evictPage {
			return n, nil
		}
		last = &page[len(page)-1]
	}
}
