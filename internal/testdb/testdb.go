// Package testdb gives tests a real PostgreSQL with no setup.
//
// Each test binary shares one server: the one named by STRATA_TEST_DATABASE_URL (a role
// that may create databases), or else a private embedded server started on first use from
// the machine's PostgreSQL binaries, copied from a cached initdb so it starts in well under
// a second, tuned for speed over durability. A test that needs a database gets its own,
// cloned from a template that the given schema modules were migrated into once
// (CREATE DATABASE … TEMPLATE), and dropped when the test ends.
//
// Packages using it call testdb.Main from TestMain, which also checks for leaked goroutines.
package testdb

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/internal/embedpg"
	"github.com/stratadb/strata/internal/migrate"
	"go.uber.org/goleak"
)

// EnvURL names the variable that points tests at an existing PostgreSQL instead of an
// embedded one. Its role needs CREATEDB.
const EnvURL = "STRATA_TEST_DATABASE_URL"

// FastSettings trade durability for speed; a test server's data is thrown away.
var FastSettings = map[string]string{
	"fsync":                               "off",
	"synchronous_commit":                  "off",
	"full_page_writes":                    "off",
	"shared_buffers":                      "64MB",
	"max_connections":                     "300",
	"autovacuum_naptime":                  "10s",
	"checkpoint_timeout":                  "30min",
	"max_wal_size":                        "4GB",
	"wal_level":                           "minimal",
	"max_wal_senders":                     "0",
	"log_min_messages":                    "warning",
	"idle_in_transaction_session_timeout": "0",
}

var (
	serverOnce sync.Once
	server     *shared
	serverErr  error

	templatesMu sync.Mutex
	templates   = map[string]string{} // plan hash → template database name
)

type shared struct {
	cluster *embedpg.Cluster // nil when STRATA_TEST_DATABASE_URL is used
	dir     string
	baseURL string // maintenance database URL
}

// Main runs the tests of a package, stops the shared server, and fails the run if
// goroutines leaked. Call it from TestMain: func TestMain(m *testing.M) { testdb.Main(m) }.
func Main(m *testing.M) {
	code := m.Run()
	Stop()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Stop shuts the shared embedded server down, if one was started.
func Stop() {
	if server != nil && server.cluster != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = server.cluster.Stop(ctx)
		_ = os.RemoveAll(server.dir)
	}
}

func get(t testing.TB) *shared {
	t.Helper()
	serverOnce.Do(func() { server, serverErr = start() })
	if serverErr != nil {
		t.Fatalf("test PostgreSQL: %v", serverErr)
	}
	return server
}

func start() (*shared, error) {
	if u := os.Getenv(EnvURL); u != "" {
		return &shared{baseURL: u}, nil
	}
	ctx := context.Background()
	c, dir, err := startCluster(ctx, FastSettings)
	if err != nil {
		return nil, err
	}
	return &shared{cluster: c, dir: dir, baseURL: c.URL("postgres")}, nil
}

// startCluster starts a private embedded server in a new temporary directory, copied from
// the cached initialized cluster.
func startCluster(ctx context.Context, settings map[string]string) (*embedpg.Cluster, string, error) {
	cache, err := initCache(ctx)
	if err != nil {
		return nil, "", err
	}
	dir, err := os.MkdirTemp("", "strata-test-pg-")
	if err != nil {
		return nil, "", err
	}
	c, err := embedpg.Start(ctx, embedpg.Options{DataDir: dir, InitFrom: cache, Settings: settings, Database: "postgres"})
	if err != nil {
		os.RemoveAll(dir)
		return nil, "", err
	}
	return c, dir, nil
}

// initCache returns a data dir holding an initialized cluster for this machine's binaries,
// making it once (under a lock shared by concurrently starting test binaries).
func initCache(ctx context.Context) (string, error) {
	bin, err := embedpg.FindBinaries(os.Getenv("STRATA_PG_BIN"), 0)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(bin.Dir + "\x00" + bin.Version + "\x00v1"))
	dir := filepath.Join(os.TempDir(), fmt.Sprintf("strata-test-initdb-%d", os.Getuid()), hex.EncodeToString(sum[:6]))
	if _, err := os.Stat(filepath.Join(dir, "pg", "PG_VERSION")); err == nil {
		return dir, nil
	}
	// Searchable by others: when tests run as root, the server runs as another user. The
	// name is predictable, so it must be ours and not writable by others: a cluster
	// planted there by someone else would run their configuration.
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o711); err != nil {
		return "", err
	}
	if st, err := os.Stat(parent); err != nil || !ownedByMe(st) {
		return "", fmt.Errorf("the test cache %s is not owned by this user; remove it", parent)
	}
	if err := os.Chmod(parent, 0o711); err != nil {
		return "", err
	}
	for { // Init holds the dir's lock: another test binary may be initializing it right now
		err := embedpg.Init(ctx, embedpg.Options{DataDir: dir, BinDir: bin.Dir})
		if err == nil {
			return dir, nil
		}
		if !strings.Contains(err.Error(), embedpg.ErrLocked.Error()) {
			return "", fmt.Errorf("initializing the cached test cluster in %s: %w", dir, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TempDir is t.TempDir made searchable by others, so that a server started by a root test
// process (running as an unprivileged user) can reach a data dir inside it.
func TempDir(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// InitFrom returns a data dir holding an initialized cluster, for embedpg.Options.InitFrom.
func InitFrom(t testing.TB) string {
	t.Helper()
	dir, err := initCache(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// Cluster starts a private embedded server for a test that needs to stop or restart its
// database; it is stopped when the test ends. The test is skipped when tests run against
// STRATA_TEST_DATABASE_URL.
func Cluster(t testing.TB) *embedpg.Cluster {
	t.Helper()
	if os.Getenv(EnvURL) != "" {
		t.Skip("needs a private PostgreSQL; tests run against " + EnvURL)
	}
	c, dir, err := startCluster(context.Background(), FastSettings)
	if err != nil {
		t.Fatalf("starting a private PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Stop(ctx)
		_ = os.RemoveAll(dir)
	})
	return c
}

// New returns a pool on a fresh database holding the schema of mods (and what they
// require), dropped when the test ends.
func New(t testing.TB, mods ...*migrate.Module) *pgxpool.Pool {
	t.Helper()
	u := NewURL(t, mods...)
	cfg, err := pgxpool.ParseConfig(u)
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.RuntimeParams["search_path"] = "strata,public"
	cfg.ConnConfig.RuntimeParams["timezone"] = "UTC"
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close) // runs before the database is dropped (cleanups run last-in first-out)
	return pool
}

// NewURL creates a fresh database holding the schema of mods and returns its URL, for
// tests that open their own pools or a whole strata. It is dropped when the test ends.
func NewURL(t testing.TB, mods ...*migrate.Module) string {
	t.Helper()
	s := get(t)
	tpl, err := template(s, mods)
	if err != nil {
		t.Fatalf("preparing template database: %v", err)
	}
	name := "t_" + randomHex(8)
	if err := s.exec(fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, tpl)); err != nil {
		t.Fatalf("creating test database: %v", err)
	}
	t.Cleanup(func() {
		if err := s.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Logf("dropping test database %s: %v", name, err)
		}
	})
	return withDatabase(s.baseURL, name)
}

// template returns the name of a template database migrated with mods, creating it once
// per server (an advisory lock serializes test binaries sharing one server).
func template(s *shared, mods []*migrate.Module) (string, error) {
	plan, err := migrate.Plan(mods...)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, m := range plan {
		fmt.Fprintf(h, "%s/%d/%s\n", m.Module, m.Version, m.Checksum)
	}
	key := hex.EncodeToString(h.Sum(nil)[:8])
	templatesMu.Lock()
	defer templatesMu.Unlock()
	if name, ok := templates[key]; ok {
		return name, nil
	}
	name := "tpl_" + key
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, s.baseURL)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext($1))", name); err != nil {
		return "", err
	}
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		return "", err
	}
	if !exists {
		if err := buildTemplate(ctx, s, conn, name, mods); err != nil {
			return "", err
		}
	}
	templates[key] = name
	return name, nil
}

// buildTemplate migrates a database under a temporary name, then renames it, so a
// half-built template left by a crashed test binary is never used.
func buildTemplate(ctx context.Context, s *shared, conn *pgx.Conn, name string, mods []*migrate.Module) error {
	building := name + "_building"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+building+" WITH (FORCE)"); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+building); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, withDatabase(s.baseURL, building))
	if err != nil {
		return err
	}
	_, err = migrate.Up(ctx, pool, slog.New(slog.DiscardHandler), mods...)
	pool.Close()
	if err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "ALTER DATABASE "+building+" RENAME TO "+name)
	return err
}

func (s *shared) exec(sql string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.baseURL)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, sql)
	return err
}

// withDatabase returns dsn pointing at database name instead.
func withDatabase(dsn, name string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		u.Path = "/" + name
		q := u.Query()
		if q.Has("dbname") {
			q.Set("dbname", name)
			u.RawQuery = q.Encode()
		}
		return u.String()
	}
	return dsn + " dbname=" + name
}

func ownedByMe(st os.FileInfo) bool {
	sys, ok := st.Sys().(*syscall.Stat_t)
	return !ok || int(sys.Uid) == os.Getuid()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
