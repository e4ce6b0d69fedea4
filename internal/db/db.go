// Package db holds what every module needs from PostgreSQL and nothing module-specific:
// opening a pool that waits for the database to come up, translating driver errors into
// problems once at the boundary, and redacting connection strings for logs.
package db

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Schema is the PostgreSQL schema that holds every Strata table, so Strata can share a
// database with an application's own tables.
const Schema = "strata"

// Options tunes Connect. Nil means defaults.
type Options struct {
	// Wait is how long Connect keeps retrying a database that refuses connections
	// (starting up, restarting, not yet reachable). Default 30s; negative means try once.
	Wait time.Duration
	// MaxConns caps the pool. Default 16.
	MaxConns int32
	// ApplicationName is reported in pg_stat_activity. Default "strata".
	ApplicationName string
	// Logger receives one line per failed attempt. Nil is quiet.
	Logger *slog.Logger
}

// Connect opens a pool on url with search_path set to Strata's schema, retrying with
// exponential backoff (capped at 2s) while the database is unreachable, for up to o.Wait.
// The error names the database with its password redacted.
func Connect(ctx context.Context, dsn string, o *Options) (*pgxpool.Pool, error) {
	if o == nil {
		o = &Options{}
	}
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("database URL %s is invalid: %w", Redact(dsn), scrubParseError(err))
	}
	cfg.MaxConns = cmp.Or(o.MaxConns, 16)
	cfg.ConnConfig.RuntimeParams["search_path"] = Schema + ",public"
	cfg.ConnConfig.RuntimeParams["application_name"] = cmp.Or(o.ApplicationName, "strata")
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("opening pool on %s: %w", Redact(dsn), err)
	}
	if err := waitReachable(ctx, pool, o); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s: %w", Redact(dsn), err)
	}
	return pool, nil
}

func waitReachable(ctx context.Context, pool *pgxpool.Pool, o *Options) error {
	wait := o.Wait
	if wait == 0 {
		wait = 30 * time.Second
	}
	deadline := time.Now().Add(wait)
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := pool.Ping(ctx)
		if err == nil {
			return nil
		}
		if !IsUnavailable(err) || ctx.Err() != nil {
			return err
		}
		if wait < 0 || time.Now().Add(backoff).After(deadline) {
			return fmt.Errorf("%w (gave up after %d attempts over %s)", err, attempt, wait.Round(time.Millisecond))
		}
		if o.Logger != nil {
			o.Logger.Warn("database not reachable yet; retrying", "attempt", attempt, "retry_in", backoff, "err", err)
		}
		sleep := backoff/2 + rand.N(backoff/2+1) //nolint:gosec // jitter needs no cryptographic randomness
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(sleep):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// scrubParseError drops pgx's echo of the connection string, which may hold a password.
func scrubParseError(err error) error {
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		msg := pe.Error()
		if pe.ConnString != "" {
			msg = strings.ReplaceAll(msg, pe.ConnString, Redact(pe.ConnString))
		}
		return errors.New(msg)
	}
	return err
}

// kvPassword matches the password of a keyword/value connection string, quoted or not,
// with or without spaces around "=".
var kvPassword = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)`)

// Redact returns dsn with any password replaced by "xxxxx", for logs and messages.
// It handles both URL (postgres://user:pw@host/db) and keyword/value (password=pw) forms.
func Redact(dsn string) string {
	if strings.Contains(dsn, "://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "(unparseable URL)"
		}
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		if q.Has("password") {
			q.Set("password", "xxxxx")
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}
