package media

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
)

const notFoundKey = "not_found_alias"

// NotFoundSet chooses the image answered (with status 404) for aliases the tenant does not
// have (admin on "media:*"): one of the tenant's aliases, or "" for none. An unknown alias
// answers 404 alias_not_found. Deleting that alias later unsets it in effect.
func (s *Service) NotFoundSet(ctx context.Context, tenant, alias string) error {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermAdmin); err != nil {
		return err
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if alias == "" {
			if _, err := tx.Exec(ctx, `DELETE FROM media_settings WHERE tenant_id = $1 AND key = $2`, tenant, notFoundKey); err != nil {
				return err
			}
		} else {
			var ok bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM media_aliases WHERE tenant_id = $1 AND alias = $2)`, tenant, alias).Scan(&ok); err != nil {
				return err
			}
			if !ok {
				return aliasNotFound(alias)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO media_settings (tenant_id, key, value) VALUES ($1, $2, $3)
				ON CONFLICT (tenant_id, key) DO UPDATE SET value = EXCLUDED.value`, tenant, notFoundKey, alias); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.not_found_set", ResourceType: "media", ResourceID: alias})
	})
	return db.Translate(err, "setting")
}

// NotFoundOpen opens the tenant's not-found image, without authorization: call it only
// after an authorized request found no alias. ok is false when none is set (or its alias
// is gone).
func (s *Service) NotFoundOpen(ctx context.Context, tenant string) (Blob, Media, bool, error) {
	var alias string
	err := s.pool.QueryRow(ctx, `SELECT value FROM media_settings WHERE tenant_id = $1 AND key = $2`, tenant, notFoundKey).Scan(&alias)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, Media{}, false, nil
	}
	if err != nil {
		return nil, Media{}, false, db.Translate(err, "setting")
	}
	m, err := s.lookup(ctx, tenant, alias)
	if err != nil {
		return nil, Media{}, false, nil //nolint:nilerr // a deleted not-found alias means none
	}
	b, err := s.open(ctx, m)
	if err != nil {
		return nil, Media{}, false, err
	}
	return b, m, true, nil
}
