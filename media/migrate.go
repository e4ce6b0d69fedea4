package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// MigrateOptions shape a store migration. Nil means the defaults.
type MigrateOptions struct {
	// Progress is called after each blob with how many are done (skipped ones included)
	// of the total; nil is quiet.
	Progress func(done, total int64)
	// SkipMissing continues past blobs missing from the old store (counted in the report)
	// instead of stopping at the first.
	SkipMissing bool
}

// MigrateReport says what a store migration did.
type MigrateReport struct {
	// Moved blobs were copied in this run; Skipped were copied by an earlier (interrupted)
	// run and not read again; Missing were absent from the old store.
	Moved, Skipped, Missing int64
	// Switched is true when every blob was moved and the repository now points at the new
	// store: every node must be configured with it from now on.
	Switched bool
}

// StoreMigrate copies every blob (originals and variants, all tenants) from the
// service's store to to, under the same identifiers, recording each copy so that a run
// resumed after a crash or error skips the finished ones without reading them from the
// old store again. When every blob is copied the bookkeeping is cleared; the operator then
// configures to as the store: the repository records the new store, and a node still
// configured with the old one refuses to start (see StoreCheck). Run it while no node
// writes media (uploads during the run may be missed). Maintenance, without authorization.
func (s *Service) StoreMigrate(ctx context.Context, to Store, o *MigrateOptions) (MigrateReport, error) {
	var opt MigrateOptions
	if o != nil {
		opt = *o
	}
	var rep MigrateReport
	var total int64
	err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM media_hashes) + (SELECT count(*) FROM media_variants)`).Scan(&total)
	if err != nil {
		return rep, db.Translate(err, "blobs")
	}
	if err := s.pool.QueryRow(ctx, `SELECT count(*) FROM media_store_moves WHERE to_store = $1`, to.Name()).Scan(&rep.Skipped); err != nil {
		return rep, db.Translate(err, "moves")
	}
	progress := func() {
		if opt.Progress != nil {
			opt.Progress(rep.Moved+rep.Skipped+rep.Missing, total)
		}
	}
	progress()
	after := ""
	for {
		rows, err := s.pool.Query(ctx, `
			SELECT b.identifier, b.tenant_id FROM (
			    SELECT identifier, tenant_id FROM media_hashes UNION ALL SELECT identifier, tenant_id FROM media_variants) b
			 WHERE b.identifier > $1 AND NOT EXISTS (SELECT 1 FROM media_store_moves m WHERE m.identifier = b.identifier AND m.to_store = $2)
			 ORDER BY b.identifier LIMIT 200`, after, to.Name())
		if err != nil {
			return rep, db.Translate(err, "blobs")
		}
		type blob struct{ ident, tenant string }
		page, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (blob, error) {
			var b blob
			return b, r.Scan(&b.ident, &b.tenant)
		})
		if err != nil {
			return rep, db.Translate(err, "blobs")
		}
		for _, b := range page {
			err := s.moveBlob(ctx, to, b.ident)
			switch {
			case errors.Is(err, ErrBlobNotFound) && opt.SkipMissing:
				rep.Missing++
			case err != nil:
				return rep, fmt.Errorf("moving %s to the %s store: %w", b.ident, to.Name(), err)
			default:
				if _, err := s.pool.Exec(ctx, `INSERT INTO media_store_moves (identifier, tenant_id, to_store) VALUES ($1, $2, $3)
					ON CONFLICT (identifier) DO UPDATE SET to_store = EXCLUDED.to_store, moved_at = now()`, b.ident, b.tenant, to.Name()); err != nil {
					return rep, db.Translate(err, "moves")
				}
				rep.Moved++
			}
			progress()
		}
		if len(page) < 200 {
			break
		}
		after = page[len(page)-1].ident
	}
	if rep.Missing == 0 {
		// Every blob is in the new store: the repository points at it from now on, and
		// the bookkeeping goes, in one transaction.
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `DELETE FROM media_store_moves`); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO media_store_current (kind) VALUES ($1)
				ON CONFLICT (singleton) DO UPDATE SET kind = EXCLUDED.kind, since = now()`, to.Name())
			return err
		})
		if err != nil {
			return rep, db.Translate(err, "moves")
		}
		rep.Switched = true
	}
	return rep, nil
}

// StoreCheck makes sure the service's store is the one that holds the blobs. The first
// check records the store's kind; a check with another kind fails with an error that
// names the recorded one — unless no blob is recorded yet, in which case the new kind is
// recorded. `strata media migrate-store` changes the record when it has moved every blob.
// The platform runs it at start.
func (s *Service) StoreCheck(ctx context.Context) error {
	kind := s.store.Name()
	var recorded string
	var since time.Time
	// Two statements: a node starting at the same moment may insert the row after this
	// statement's snapshot, which a single statement would then not see at all.
	_, err := s.pool.Exec(ctx, `INSERT INTO media_store_current (kind) VALUES ($1) ON CONFLICT (singleton) DO NOTHING`, kind)
	if err == nil {
		err = s.pool.QueryRow(ctx, `SELECT kind, since FROM media_store_current`).Scan(&recorded, &since)
	}
	if err != nil {
		return fmt.Errorf("checking the media store: %w", err)
	}
	if recorded == kind {
		s.moved.Store(nil)
		return nil
	}
	tag, err := s.pool.Exec(ctx, `UPDATE media_store_current SET kind = $1, since = now()
		WHERE NOT EXISTS (SELECT 1 FROM media_hashes) AND NOT EXISTS (SELECT 1 FROM media_variants)`, kind)
	if err != nil {
		return fmt.Errorf("checking the media store: %w", err)
	}
	if tag.RowsAffected() == 1 {
		s.log.Info("media store changed; no blob was recorded", "from", recorded, "to", kind)
		s.moved.Store(nil)
		return nil
	}
	s.moved.Store(&recorded)
	return storeMismatch(recorded, kind, since)
}

// storeWatch is the periodic StoreCheck of a running node: when a migration finished
// elsewhere moved the blobs to another store, the node refuses new blobs until it is
// restarted with that store (it only reads the record, never changes it).
func (s *Service) storeWatch(ctx context.Context) error {
	var recorded string
	var since time.Time
	err := s.pool.QueryRow(ctx, `SELECT kind, since FROM media_store_current`).Scan(&recorded, &since)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking the media store: %w", err)
	}
	if recorded == s.store.Name() {
		s.moved.Store(nil)
		return nil
	}
	s.moved.Store(&recorded)
	return storeMismatch(recorded, s.store.Name(), since)
}

// refuseIfMoved is the problem for a new blob on a node whose store is no longer the
// repository's.
func (s *Service) refuseIfMoved() error {
	if to := s.moved.Load(); to != nil {
		return problem.New(http.StatusServiceUnavailable, "media_store_moved",
			"the media blobs were moved to the %s store; this node must be restarted with it", *to)
	}
	return nil
}

func storeMismatch(recorded, kind string, since time.Time) error {
	hint := ""
	if recorded == "s3" {
		hint = " with its --media-s3-* settings"
	}
	return fmt.Errorf("the media blobs are in the %s store (since %s), but this node is configured with the %s store: "+
		"start it with --media-store %s%s (STRATA_MEDIA_STORE), or move the blobs with strata media migrate-store --to %s",
		recorded, since.UTC().Format(time.RFC3339), kind, recorded, hint, kind)
}

// IsMigrated reports whether the blob the repository now holds under identifier has been
// copied to the store named toStore by an unfinished migration.
func (s *Service) IsMigrated(ctx context.Context, identifier, toStore string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM media_store_moves WHERE identifier = $1 AND to_store = $2)`, identifier, toStore).Scan(&ok)
	return ok, db.Translate(err, "moves")
}

// moveBlob copies one blob through a spool file (stores take files, so an S3 upload knows
// its size).
func (s *Service) moveBlob(ctx context.Context, to Store, ident string) error {
	b, err := s.store.Open(ctx, ident)
	if err != nil {
		return err
	}
	defer b.Close()
	if err := os.MkdirAll(s.cfg.SpoolDir, 0o750); err != nil {
		return err
	}
	f, err := os.CreateTemp(s.cfg.SpoolDir, "move-*")
	if err != nil {
		return err
	}
	defer func() { _ = f.Close(); _ = os.Remove(f.Name()) }()
	if _, err := io.Copy(f, b); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return to.Put(ctx, ident, f.Name())
}
