package media

import (
	"context"
	"encoding/json"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/kv"
	"github.com/stratadb/strata/problem"
)

// notFoundKey is the tenant's kv key naming the not-found image's alias (a JSON string).
const notFoundKey = "media/not-found"

var notFoundDescription = "The alias of the image media answers, with status 404, for an alias the tenant does not have."

// NotFoundSet chooses the image answered (with status 404) for aliases the tenant does not
// have (admin on "media:*"): one of the tenant's aliases, or "" for none. An unknown alias
// answers 404 alias_not_found. Deleting that alias later unsets it in effect. The choice
// is kept in the tenant's key-value settings, written in the same transaction as the
// check and the audit row.
func (s *Service) NotFoundSet(ctx context.Context, tenant, alias string) error {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermAdmin); err != nil {
		return err
	}
	if s.cfg.KV == nil {
		return problem.Unavailable("settings_unavailable", "media settings are not configured on this node")
	}
	// The caller's media permission is what counts: the key is written as the system.
	sys := auth.System(ctx)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if alias == "" {
			err := s.cfg.KV.KeyDeleteTx(sys, tx, tenant, notFoundKey, 0)
			if p, ok := problem.As(err); ok && p.Code == "key_not_found" {
				err = nil // none was set: unsetting is done
			}
			if err != nil {
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
			value, _ := json.Marshal(alias)
			if _, _, err := s.cfg.KV.KeyPutTx(sys, tx, tenant, notFoundKey, kv.PutInput{Value: value, ContentType: kv.JSON,
				Description: &notFoundDescription}); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.not_found_set", ResourceType: "media", ResourceID: alias})
	})
	return db.Translate(err, "setting")
}

// NotFoundOpen opens the tenant's not-found image, without authorization: call it only
// after an authorized request found no alias. ok is false when none is set (or its alias
// is gone, or the setting is not an alias).
func (s *Service) NotFoundOpen(ctx context.Context, tenant string) (Blob, Media, bool, error) {
	if s.cfg.KV == nil {
		return nil, Media{}, false, nil
	}
	e, err := s.cfg.KV.KeyGet(auth.System(ctx), tenant, notFoundKey)
	if p, ok := problem.As(err); ok && p.Code == "key_not_found" {
		return nil, Media{}, false, nil
	}
	if err != nil {
		return nil, Media{}, false, err
	}
	alias := aliasValue(e.Value)
	if alias == "" {
		return nil, Media{}, false, nil // not an alias: none
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

// aliasValue reads a setting's value as an alias (a JSON string); "" when it is not one.
func aliasValue(v []byte) string {
	var alias string
	if json.Unmarshal(v, &alias) != nil {
		return ""
	}
	return alias
}
