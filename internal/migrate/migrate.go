// Package migrate applies each module's numbered, embedded SQL migrations, once, in
// dependency order, under a PostgreSQL advisory lock so several nodes may start at once
// against one database.
//
// A module's migrations are files named NNNN_description.sql at the root of its FS,
// numbered from 0001 without gaps. Each runs in its own transaction together with the row
// recording it. A file whose first line is "-- strata:no-transaction" runs outside a
// transaction (for CREATE INDEX CONCURRENTLY) and must hold exactly one statement.
// Applied migrations are immutable: a changed file is refused by checksum.
package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Module is one module's schema: its migrations and the modules whose tables it uses.
type Module struct {
	// Name identifies the module in the migrations table ("auth", "doc").
	Name string
	// FS holds the NNNN_description.sql files at its root.
	FS fs.FS
	// Requires lists modules that must be migrated first.
	Requires []*Module
}

// Dir is the subdirectory dir of a module's embedded files, for Module.FS (usually
// Dir(migrations, "migrations") over a //go:embed migrations/*.sql). A bad dir is a
// programming error: it panics at start.
func Dir(f fs.FS, dir string) fs.FS {
	sub, err := fs.Sub(f, dir)
	if err != nil {
		panic(err)
	}
	return sub
}

// Migration is one SQL file of a module.
type Migration struct {
	Module   string
	Version  int
	Name     string // file name without the version prefix and extension
	SQL      string
	Checksum string // hex SHA-256 of SQL
	NoTx     bool
}

// ID names the migration as module/NNNN_name.
func (m Migration) ID() string { return fmt.Sprintf("%s/%04d_%s", m.Module, m.Version, m.Name) }

// State is a migration as the database knows it.
type State struct {
	Migration
	// AppliedAt is when it was applied; zero when pending.
	AppliedAt time.Time
	// Modified is set when the applied file differs from this binary's (checksum mismatch).
	Modified bool
	// Unknown is set for a migration the database has but this binary does not know
	// (applied by a newer strata).
	Unknown bool
}

// lockKey is the advisory lock every strata node takes while migrating.
const lockKey int64 = 0x5374726174614d67 // "StrataMg"

const noTxMarker = "-- strata:no-transaction"

var fileRE = regexp.MustCompile(`^(\d{4})_([a-z0-9_]+)\.sql$`)

// Plan returns the migrations of mods and everything they require, modules in dependency
// order (otherwise in the order given), versions ascending. It fails on badly named or
// numbered files and on dependency cycles.
func Plan(mods ...*Module) ([]Migration, error) {
	ordered, err := order(mods)
	if err != nil {
		return nil, err
	}
	var plan []Migration
	for _, m := range ordered {
		ms, err := load(m)
		if err != nil {
			return nil, err
		}
		plan = append(plan, ms...)
	}
	return plan, nil
}

func order(mods []*Module) ([]*Module, error) {
	var out []*Module
	state := map[*Module]int{} // 1 visiting, 2 done
	var visit func(m *Module, path []string) error
	visit = func(m *Module, path []string) error {
		switch state[m] {
		case 1:
			return fmt.Errorf("migration dependency cycle: %s", strings.Join(append(path, m.Name), " → "))
		case 2:
			return nil
		}
		state[m] = 1
		for _, r := range m.Requires {
			if err := visit(r, append(path, m.Name)); err != nil {
				return err
			}
		}
		state[m] = 2
		out = append(out, m)
		return nil
	}
	names := map[string]bool{}
	for _, m := range mods {
		if err := visit(m, nil); err != nil {
			return nil, err
		}
	}
	for _, m := range out {
		if names[m.Name] {
			return nil, fmt.Errorf("two schema modules are named %q", m.Name)
		}
		names[m.Name] = true
	}
	return out, nil
}

func load(m *Module) ([]Migration, error) {
	entries, err := fs.ReadDir(m.FS, ".")
	if err != nil {
		return nil, fmt.Errorf("reading migrations of %s: %w", m.Name, err)
	}
	var out []Migration
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".sql") {
			continue
		}
		parts := fileRE.FindStringSubmatch(e.Name())
		if parts == nil {
			return nil, fmt.Errorf("migration %s/%s: name must look like 0001_create_things.sql", m.Name, e.Name())
		}
		b, err := fs.ReadFile(m.FS, e.Name())
		if err != nil {
			return nil, err
		}
		v, _ := strconv.Atoi(parts[1])
		sum := sha256.Sum256(b)
		out = append(out, Migration{Module: m.Name, Version: v, Name: parts[2], SQL: string(b),
			Checksum: hex.EncodeToString(sum[:]), NoTx: strings.HasPrefix(string(b), noTxMarker)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	for i, mg := range out {
		if mg.Version != i+1 {
			return nil, fmt.Errorf("migrations of %s must be numbered 0001, 0002, … without gaps or repeats; found %s where %04d was expected",
				m.Name, mg.ID(), i+1)
		}
	}
	return out, nil
}

// createSchema runs only when the schema is missing: CREATE SCHEMA IF NOT EXISTS would
// need the CREATE privilege on the database even when a role owns a schema made for it.
const createSchema = `CREATE SCHEMA strata`

const createTable = `
CREATE TABLE IF NOT EXISTS strata.schema_migrations (
	module     text        NOT NULL,
	version    integer     NOT NULL,
	name       text        NOT NULL,
	checksum   text        NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	duration_ms integer    NOT NULL DEFAULT 0,
	PRIMARY KEY (module, version)
);`

// Up applies every pending migration of mods and returns those it applied. It holds the
// advisory lock throughout, so concurrent callers apply each migration exactly once; it
// refuses to run when an applied migration was modified.
func Up(ctx context.Context, pool *pgxpool.Pool, log *slog.Logger, mods ...*Module) ([]Migration, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	plan, err := Plan(mods...)
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, fmt.Errorf("migrating: %w", err)
	}
	defer conn.Release()
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock($1)", lockKey); err != nil {
		return nil, fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		// Unlock on a fresh context: ctx may be what ended the run.
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := conn.Exec(uctx, "SELECT pg_advisory_unlock($1)", lockKey); err != nil {
			conn.Conn().Close(uctx) // the session ends, and its lock with it
		}
	}()
	var hasSchema bool
	if err := conn.QueryRow(ctx, `SELECT to_regnamespace('strata') IS NOT NULL`).Scan(&hasSchema); err != nil {
		return nil, fmt.Errorf("looking for the strata schema: %w", err)
	}
	if !hasSchema {
		if _, err := conn.Exec(ctx, createSchema); err != nil {
			return nil, fmt.Errorf("creating the strata schema (the role needs CREATE on the database, or a schema named strata that it owns): %w", err)
		}
	}
	if _, err := conn.Conn().PgConn().Exec(ctx, createTable).ReadAll(); err != nil {
		return nil, fmt.Errorf("creating the migrations table: %w", err)
	}
	states, err := status(ctx, conn.Conn(), plan)
	if err != nil {
		return nil, err
	}
	for _, s := range states { // refuse before applying anything
		if s.Modified {
			return nil, fmt.Errorf("migration %s was changed after it was applied (checksum differs); "+
				"applied migrations are immutable: restore the file and add a new migration instead", s.ID())
		}
	}
	var applied []Migration
	for _, s := range states {
		switch {
		case s.Unknown:
			log.Warn("the database has a migration this binary does not know; it was applied by a newer strata", "migration", s.ID())
		case s.AppliedAt.IsZero():
			start := time.Now()
			if err := apply(ctx, conn.Conn(), s.Migration); err != nil {
				return applied, err
			}
			log.Info("applied migration", "migration", s.ID(), "elapsed", time.Since(start).Round(time.Millisecond))
			applied = append(applied, s.Migration)
		}
	}
	return applied, nil
}

func apply(ctx context.Context, conn *pgx.Conn, m Migration) error {
	start := time.Now()
	const insert = `INSERT INTO strata.schema_migrations (module, version, name, checksum, duration_ms) VALUES ($1, $2, $3, $4, $5)`
	if m.NoTx {
		if _, err := conn.PgConn().Exec(ctx, m.SQL).ReadAll(); err != nil {
			return fmt.Errorf("applying migration %s: %w", m.ID(), err)
		}
		if _, err := conn.Exec(ctx, insert, m.Module, m.Version, m.Name, m.Checksum, time.Since(start).Milliseconds()); err != nil {
			return fmt.Errorf("migration %s was applied but could not be recorded (record it by hand before retrying): %w", m.ID(), err)
		}
		return nil
	}
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Conn().PgConn().Exec(ctx, m.SQL).ReadAll(); err != nil {
			return fmt.Errorf("applying migration %s: %w", m.ID(), err)
		}
		_, err := tx.Exec(ctx, insert, m.Module, m.Version, m.Name, m.Checksum, time.Since(start).Milliseconds())
		return err
	})
}

// Status compares mods' migrations with what the database has applied: one State per
// known migration, in plan order, then any unknown applied ones.
func Status(ctx context.Context, pool *pgxpool.Pool, mods ...*Module) ([]State, error) {
	plan, err := Plan(mods...)
	if err != nil {
		return nil, err
	}
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Release()
	return status(ctx, conn.Conn(), plan)
}

func status(ctx context.Context, conn *pgx.Conn, plan []Migration) ([]State, error) {
	type key struct {
		module  string
		version int
	}
	type row struct {
		name, checksum string
		at             time.Time
	}
	applied := map[key]row{}
	rows, err := conn.Query(ctx, `SELECT module, version, name, checksum, applied_at FROM strata.schema_migrations ORDER BY applied_at, module, version`)
	if err != nil {
		var pe interface{ SQLState() string }
		if errors.As(err, &pe) && pe.SQLState() == "42P01" { // no table yet: nothing applied
			rows = nil
		} else {
			return nil, fmt.Errorf("reading applied migrations: %w", err)
		}
	}
	var order []key
	if rows != nil {
		defer rows.Close()
		for rows.Next() {
			var k key
			var r row
			if err := rows.Scan(&k.module, &k.version, &r.name, &r.checksum, &r.at); err != nil {
				return nil, err
			}
			applied[k] = r
			order = append(order, k)
		}
		if err := rows.Err(); err != nil {
			return nil, err
		}
	}
	var out []State
	known := map[key]bool{}
	for _, m := range plan {
		k := key{m.Module, m.Version}
		known[k] = true
		s := State{Migration: m}
		if r, ok := applied[k]; ok {
			s.AppliedAt = r.at
			s.Modified = r.checksum != m.Checksum
		}
		out = append(out, s)
	}
	planned := map[string]bool{}
	for _, m := range plan {
		planned[m.Module] = true
	}
	for _, k := range order {
		if !known[k] && planned[k.module] {
			r := applied[k]
			out = append(out, State{Migration: Migration{Module: k.module, Version: k.version, Name: r.name, Checksum: r.checksum},
				AppliedAt: r.at, Unknown: true})
		}
	}
	return out, nil
}

// Pending counts the migrations in states that are not applied yet.
func Pending(states []State) int {
	n := 0
	for _, s := range states {
		if s.AppliedAt.IsZero() {
			n++
		}
	}
	return n
}
