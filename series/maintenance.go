package series

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// maintenanceInterval is how often partitions are created ahead and dropped, and deleted
// devices' data purged.
const maintenanceInterval = 10 * time.Minute

// purgeDelay lets batches that validated a device before it was deleted commit before its
// readings are purged.
const purgeDelay = time.Minute

func (s *Service) maintenanceLoop(ctx context.Context) {
	t := time.NewTicker(maintenanceInterval)
	defer t.Stop()
	purge := time.NewTicker(purgeDelay)
	defer purge.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.maintain(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("series: maintenance failed; retrying later", "err", err)
			}
		case <-purge.C:
			if _, err := s.purgeDeleted(ctx, purgeDelay); err != nil && ctx.Err() == nil {
				s.log.Warn("series: purging deleted devices failed; retrying later", "err", err)
			}
		}
	}
}

// Maintain creates partitions ahead for every retention in use, drops expired ones,
// deletes expired keys and the data of deleted devices and tenants. Every node runs it
// every 10 minutes; calling it directly is for tests and operators.
func (s *Service) Maintain(ctx context.Context) error { return s.maintain(ctx) }

func (s *Service) maintain(ctx context.Context) error {
	keeps, err := s.keepsInUse(ctx)
	if err != nil {
		return err
	}
	if err := s.parts.ensureAhead(ctx, keeps); err != nil {
		return err
	}
	dropped, err := s.parts.dropExpired(ctx)
	for _, name := range dropped {
		s.log.Info("series: dropped an expired partition", "partition", name)
	}
	if err != nil {
		return err
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM device_keys WHERE expires_at < now() - interval '1 day'`); err != nil {
		return err
	}
	if _, err := s.purgeDeleted(ctx, purgeDelay); err != nil {
		return err
	}
	return s.sweepOrphans(ctx)
}

func (s *Service) keepsInUse(ctx context.Context) (map[family][]int16, error) {
	def := s.defaultSettings()
	out := map[family][]int16{famReadings: {int16(def.RawKeepDays)}, famMinute: {int16(def.MinuteKeepDays)}, famHour: {int16(def.HourKeepDays)}}
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT raw_keep_days, minute_keep_days, hour_keep_days FROM series_settings`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	add := func(f family, k int) {
		for _, have := range out[f] {
			if have == int16(k) {
				return
			}
		}
		out[f] = append(out[f], int16(k))
	}
	for rows.Next() {
		var r, m, h int
		if err := rows.Scan(&r, &m, &h); err != nil {
			return nil, err
		}
		add(famReadings, r)
		add(famMinute, m)
		add(famHour, h)
	}
	return out, rows.Err()
}

// purgeDeleted removes the readings and rollups of devices deleted more than delay ago,
// one partition at a time, and returns how many devices it finished.
func (s *Service) purgeDeleted(ctx context.Context, delay time.Duration) (int, error) {
	rows, err := s.pool.Query(ctx, `SELECT device_id FROM series_purges WHERE deleted_at <= now() - $1::interval ORDER BY deleted_at LIMIT 100`,
		delay.String())
	if err != nil {
		return 0, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	if err := s.parts.load(ctx); err != nil {
		return 0, err
	}
	s.parts.mu.Lock()
	var leaves []string
	for name := range s.parts.known {
		if leafPattern.MatchString(name) {
			leaves = append(leaves, name)
		}
	}
	s.parts.mu.Unlock()
	done := 0
	for _, id := range ids {
		for _, leaf := range leaves {
			if _, err := s.pool.Exec(ctx, `DELETE FROM `+pgx.Identifier{leaf}.Sanitize()+` WHERE device_id = $1`, id); err != nil {
				var missing bool
				if pe := pgErrCode(err); pe == "42P01" { // dropped meanwhile
					missing = true
				}
				if !missing {
					return done, err
				}
			}
		}
		if _, err := s.pool.Exec(ctx, `DELETE FROM readings_latest WHERE device_id = $1`, id); err != nil {
			return done, err
		}
		if _, err := s.pool.Exec(ctx, `DELETE FROM series_purges WHERE device_id = $1`, id); err != nil {
			return done, err
		}
		done++
	}
	return done, nil
}

// sweepOrphans removes what deleted tenants left in the tables the pipeline writes
// without foreign keys.
func (s *Service) sweepOrphans(ctx context.Context) error {
	for _, q := range []string{
		`DELETE FROM series_counters c WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = c.tenant_id)`,
		`DELETE FROM reading_rejects r WHERE NOT EXISTS (SELECT 1 FROM tenants t WHERE t.id = r.tenant_id)`,
		`DELETE FROM readings_latest l WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.id = l.device_id AND d.tenant_id = l.tenant_id)
			AND NOT EXISTS (SELECT 1 FROM series_purges p WHERE p.device_id = l.device_id)`,
	} {
		if _, err := s.pool.Exec(ctx, q); err != nil {
			return err
		}
	}
	return nil
}

func pgErrCode(err error) string {
	var pe interface{ SQLState() string }
	if errors.As(err, &pe) {
		return pe.SQLState()
	}
	return ""
}
