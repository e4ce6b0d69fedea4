package migrate_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"testing/fstest"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func files(kv ...string) fstest.MapFS {
	fs := fstest.MapFS{}
	for i := 0; i < len(kv); i += 2 {
		fs[kv[i]] = &fstest.MapFile{Data: []byte(kv[i+1])}
	}
	return fs
}

func TestPlanOrdersByDependency(t *testing.T) {
	t.Parallel()
	base := &migrate.Module{Name: "base", FS: files("0001_a.sql", "SELECT 1;", "0002_b.sql", "SELECT 2;")}
	top := &migrate.Module{Name: "top", FS: files("0001_c.sql", "SELECT 3;"), Requires: []*migrate.Module{base}}
	plan, err := migrate.Plan(top) // base is pulled in by the dependency
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range plan {
		ids = append(ids, m.ID())
	}
	if got, want := strings.Join(ids, ","), "base/0001_a,base/0002_b,top/0001_c"; got != want {
		t.Fatalf("plan = %s, want %s", got, want)
	}
}

func TestPlanRejectsBadFiles(t *testing.T) {
	t.Parallel()
	cases := map[string]fstest.MapFS{
		"gap":       files("0001_a.sql", "", "0003_c.sql", ""),
		"bad name":  files("1_a.sql", ""),
		"uppercase": files("0001_A.sql", ""),
		"repeat":    files("0001_a.sql", "", "0001_b.sql", ""),
	}
	for name, fs := range cases {
		if _, err := migrate.Plan(&migrate.Module{Name: "m", FS: fs}); err == nil {
			t.Errorf("%s: Plan accepted it", name)
		}
	}
	a := &migrate.Module{Name: "a", FS: files()}
	b := &migrate.Module{Name: "b", FS: files(), Requires: []*migrate.Module{a}}
	a.Requires = []*migrate.Module{b}
	if _, err := migrate.Plan(a); err == nil || !strings.Contains(err.Error(), "cycle") {
		t.Errorf("cycle: err = %v", err)
	}
}

func newPool(t *testing.T) *pgxpool.Pool {
	// A database with no strata schema at all: the runner must create what it needs.
	return testdb.New(t)
}

func TestUpAppliesOnceAndRecords(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	mod := &migrate.Module{Name: "things", FS: files(
		"0001_create.sql", "CREATE TABLE strata.things (id int PRIMARY KEY);",
		"0002_seed.sql", "INSERT INTO strata.things VALUES (1); INSERT INTO strata.things VALUES (2);",
	)}
	applied, err := migrate.Up(ctx, pool, nil, mod)
	if err != nil {
		t.Fatal(err)
	}
	if len(applied) != 2 {
		t.Fatalf("applied %d migrations, want 2", len(applied))
	}
	again, err := migrate.Up(ctx, pool, nil, mod)
	if err != nil || len(again) != 0 {
		t.Fatalf("second Up applied %d (err %v), want 0", len(again), err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM strata.things").Scan(&n); err != nil || n != 2 {
		t.Fatalf("things has %d rows (err %v), want 2", n, err)
	}
	states, err := migrate.Status(ctx, pool, mod)
	if err != nil {
		t.Fatal(err)
	}
	if migrate.Pending(states) != 0 || len(states) != 2 || states[0].AppliedAt.IsZero() {
		t.Fatalf("status = %+v", states)
	}
}

func TestUpIsAtomicPerMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	mod := &migrate.Module{Name: "broken", FS: files(
		"0001_ok.sql", "CREATE TABLE strata.ok (id int);",
		"0002_fails.sql", "CREATE TABLE strata.half (id int); SELECT no_such_function();",
	)}
	if _, err := migrate.Up(ctx, pool, nil, mod); err == nil || !strings.Contains(err.Error(), "broken/0002_fails") {
		t.Fatalf("err = %v, want one naming broken/0002_fails", err)
	}
	var half *string
	if err := pool.QueryRow(ctx, "SELECT to_regclass('strata.half')::text").Scan(&half); err != nil || half != nil {
		t.Fatalf("the failed migration left strata.half behind (%v, %v)", half, err)
	}
	states, _ := migrate.Status(ctx, pool, mod)
	if migrate.Pending(states) != 1 {
		t.Fatalf("pending = %d, want 1 (the failed one)", migrate.Pending(states))
	}
}

func TestUpRefusesModifiedMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	v1 := &migrate.Module{Name: "m", FS: files("0001_a.sql", "CREATE TABLE strata.a (id int);")}
	if _, err := migrate.Up(ctx, pool, nil, v1); err != nil {
		t.Fatal(err)
	}
	v2 := &migrate.Module{Name: "m", FS: files("0001_a.sql", "CREATE TABLE strata.a (id bigint);")}
	_, err := migrate.Up(ctx, pool, nil, v2)
	if err == nil || !strings.Contains(err.Error(), "changed after it was applied") {
		t.Fatalf("err = %v", err)
	}
	states, _ := migrate.Status(ctx, pool, v2)
	if !states[0].Modified {
		t.Fatal("status does not flag the modified migration")
	}
}

// Several nodes starting at once against one database apply each migration exactly once.
func TestUpConcurrentNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	mod := &migrate.Module{Name: "race", FS: files(
		"0001_t.sql", "CREATE TABLE strata.counter (n int); INSERT INTO strata.counter VALUES (0);",
		"0002_bump.sql", "SELECT pg_sleep(0.05); UPDATE strata.counter SET n = n + 1;",
		"0003_bump.sql", "UPDATE strata.counter SET n = n + 1;",
	)}
	const nodes = 6
	var wg sync.WaitGroup
	total := make(chan int, nodes)
	for range nodes {
		wg.Go(func() {
			applied, err := migrate.Up(ctx, pool, nil, mod)
			if err != nil {
				t.Error(err)
			}
			total <- len(applied)
		})
	}
	wg.Wait()
	close(total)
	sum := 0
	for n := range total {
		sum += n
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT n FROM strata.counter").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if sum != 3 || n != 2 {
		t.Fatalf("nodes applied %d migrations in all and counter = %d; want 3 and 2", sum, n)
	}
}

func TestNoTransactionMigration(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	mod := &migrate.Module{Name: "idx", FS: files(
		"0001_t.sql", "CREATE TABLE strata.t (v int);",
		"0002_idx.sql", "-- strata:no-transaction\nCREATE INDEX CONCURRENTLY t_v ON strata.t (v);",
	)}
	if _, err := migrate.Up(ctx, pool, nil, mod); err != nil {
		t.Fatal(err)
	}
	var idx *string
	if err := pool.QueryRow(ctx, "SELECT to_regclass('strata.t_v')::text").Scan(&idx); err != nil || idx == nil {
		t.Fatalf("index not created (%v)", err)
	}
}

// A role that owns a schema named strata, made for it by a DBA, but may not create
// schemas, can still migrate.
func TestUpWithPreCreatedSchema(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewURL(t)
	admin, err := pgxpool.New(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	role := "app_" + strings.ReplaceAll(t.Name(), "/", "_")
	role = strings.ToLower(role)
	for _, q := range []string{"DROP SCHEMA strata CASCADE", "DROP ROLE IF EXISTS " + role, "CREATE ROLE " + role + " LOGIN", "CREATE SCHEMA strata AUTHORIZATION " + role} {
		if _, err := admin.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		_, _ = admin.Exec(context.Background(), "DROP SCHEMA strata CASCADE")
		_, _ = admin.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
	})
	appURL := strings.Replace(url, "postgres://strata@", "postgres://"+role+"@", 1)
	app, err := pgxpool.New(ctx, appURL)
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	mod := &migrate.Module{Name: "owned", FS: files("0001_t.sql", "CREATE TABLE strata.t (v int);")}
	if _, err := migrate.Up(ctx, app, nil, mod); err != nil {
		t.Fatalf("migrating as the schema's owner: %v", err)
	}
}

// A modified migration is refused before any pending one is applied.
func TestModifiedRefusedBeforeApplying(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := newPool(t)
	v1 := &migrate.Module{Name: "m", FS: files("0001_a.sql", "CREATE TABLE strata.a (id int);")}
	if _, err := migrate.Up(ctx, pool, nil, v1); err != nil {
		t.Fatal(err)
	}
	v2 := &migrate.Module{Name: "m", FS: files("0001_a.sql", "CREATE TABLE strata.a (id bigint);", "0002_b.sql", "CREATE TABLE strata.b (id int);")}
	if _, err := migrate.Up(ctx, pool, nil, v2); err == nil {
		t.Fatal("modified migration accepted")
	}
	var b *string
	if err := pool.QueryRow(ctx, "SELECT to_regclass('strata.b')::text").Scan(&b); err != nil || b != nil {
		t.Fatalf("a pending migration was applied despite the refusal (%v)", b)
	}
}
