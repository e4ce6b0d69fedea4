package series

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Settings are a tenant's retentions and payload policy.
type Settings struct {
	// RawKeepDays, MinuteKeepDays and HourKeepDays are how long raw readings, per-minute and
	// per-hour rollups are kept, in days (one of RetentionDays). A change applies to data
	// written from then on; data already written leaves with the retention it was written
	// under.
	RawKeepDays    int `json:"raw_keep_days" example:"30"`
	MinuteKeepDays int `json:"minute_keep_days" example:"90"`
	HourKeepDays   int `json:"hour_keep_days" example:"730"`
	// FernetTTLSeconds is the maximum age of a Fernet token when it reaches Strata; 0
	// accepts any age.
	FernetTTLSeconds int `json:"fernet_ttl_seconds" example:"900"`
	// Default is true when the tenant has set nothing and the server's defaults apply.
	Default bool `json:"default"`
}

// SettingsInput changes what it sets.
type SettingsInput struct {
	RawKeepDays      *int `json:"raw_keep_days,omitempty" enum:"1,3,7,14,30,60,90,180,365,730,1095,1825,3650"`
	MinuteKeepDays   *int `json:"minute_keep_days,omitempty" enum:"1,3,7,14,30,60,90,180,365,730,1095,1825,3650"`
	HourKeepDays     *int `json:"hour_keep_days,omitempty" enum:"1,3,7,14,30,60,90,180,365,730,1095,1825,3650"`
	FernetTTLSeconds *int `json:"fernet_ttl_seconds,omitempty" minimum:"0" maximum:"31536000"`
}

func (s *Service) defaultSettings() Settings {
	ttl := int(s.cfg.FernetTTL.Seconds())
	if s.cfg.FernetTTL < 0 {
		ttl = 0
	}
	return Settings{RawKeepDays: days(s.cfg.RawRetention), MinuteKeepDays: days(s.cfg.MinuteRetention),
		HourKeepDays: days(s.cfg.HourRetention), FernetTTLSeconds: ttl, Default: true}
}

func days(d time.Duration) int { return int(d / (24 * time.Hour)) }

func (s *Service) settingsLoad(ctx context.Context, q rowQuerier, tenant string) (Settings, error) {
	st := Settings{}
	err := q.QueryRow(ctx, `SELECT raw_keep_days, minute_keep_days, hour_keep_days, fernet_ttl_seconds FROM series_settings WHERE tenant_id = $1`,
		tenant).Scan(&st.RawKeepDays, &st.MinuteKeepDays, &st.HourKeepDays, &st.FernetTTLSeconds)
	if errors.Is(err, pgx.ErrNoRows) {
		return s.defaultSettings(), nil
	}
	return st, err
}

// SettingsGet returns the tenant's settings (read on device:*).
func (s *Service) SettingsGet(ctx context.Context, tenant string) (Settings, error) {
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); err != nil {
		return Settings{}, err
	}
	st, err := s.settingsLoad(ctx, s.pool, tenant)
	return st, db.Translate(err, "settings")
}

// SettingsUpdate changes the tenant's settings (admin on device:*). Partitions for a new
// retention are created before it returns.
func (s *Service) SettingsUpdate(ctx context.Context, tenant string, in SettingsInput) (Settings, error) {
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermAdmin); err != nil {
		return Settings{}, err
	}
	for name, v := range map[string]*int{"raw_keep_days": in.RawKeepDays, "minute_keep_days": in.MinuteKeepDays, "hour_keep_days": in.HourKeepDays} {
		if v != nil && !validKeep(*v) {
			return Settings{}, problem.Unprocessable("invalid_retention", "%s must be one of %v", name, RetentionDays).WithField("body."+name, "not allowed")
		}
	}
	if in.FernetTTLSeconds != nil && (*in.FernetTTLSeconds < 0 || *in.FernetTTLSeconds > 365*24*3600) {
		return Settings{}, problem.Unprocessable("invalid_ttl", "fernet_ttl_seconds is between 0 and a year").WithField("body.fernet_ttl_seconds", "out of range")
	}
	var st Settings
	err := s.inTx(ctx, "settings", func(tx pgx.Tx) error {
		var err error
		if st, err = s.settingsLoad(ctx, tx, tenant); err != nil {
			return err
		}
		set := func(dst *int, v *int) {
			if v != nil {
				*dst = *v
			}
		}
		set(&st.RawKeepDays, in.RawKeepDays)
		set(&st.MinuteKeepDays, in.MinuteKeepDays)
		set(&st.HourKeepDays, in.HourKeepDays)
		set(&st.FernetTTLSeconds, in.FernetTTLSeconds)
		st.Default = false
		if _, err := tx.Exec(ctx, `INSERT INTO series_settings (tenant_id, raw_keep_days, minute_keep_days, hour_keep_days, fernet_ttl_seconds)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant_id) DO UPDATE SET raw_keep_days = $2, minute_keep_days = $3,
			hour_keep_days = $4, fernet_ttl_seconds = $5, updated_at = now()`,
			tenant, st.RawKeepDays, st.MinuteKeepDays, st.HourKeepDays, st.FernetTTLSeconds); err != nil {
			return err
		}
		if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "series.settings", ResourceType: "series", ResourceID: "settings",
			Details: map[string]any{"raw_keep_days": st.RawKeepDays, "minute_keep_days": st.MinuteKeepDays,
				"hour_keep_days": st.HourKeepDays, "fernet_ttl_seconds": st.FernetTTLSeconds}}); err != nil {
			return err
		}
		return s.notifyTx(ctx, tx, "tenant:"+tenant)
	})
	if err != nil {
		return Settings{}, err
	}
	if err := s.parts.ensureKeeps(ctx, st.RawKeepDays, st.MinuteKeepDays, st.HourKeepDays); err != nil {
		return st, fmt.Errorf("creating partitions for the new retention: %w", err)
	}
	return st, nil
}
