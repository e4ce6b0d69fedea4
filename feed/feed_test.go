package feed_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// node is one strata process's view of the feed, with its waker running.
func node(t *testing.T, pool *pgxpool.Pool) *feed.Feed {
	t.Helper()
	l := db.NewListener(pool, nil)
	f := feed.New(pool, l, nil, 0)
	l.Start()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; l.Close() })
	deadline := time.Now().Add(10 * time.Second)
	for !l.Healthy() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	return f
}

// sequence numbers everything committed (by this call or a running sequencer).
func sequence(t *testing.T, f *feed.Feed, pool *pgxpool.Pool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := f.Sequence(context.Background(), 1000); err != nil {
			t.Fatal(err)
		}
		var pending bool
		if err := pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM changes WHERE position IS NULL)`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if !pending {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatal("entries still unsequenced after 10s")
}

func tenant(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	id := uuid.NewString()
	if _, err := pool.Exec(context.Background(), `INSERT INTO tenants (id, name) VALUES ($1, 'feed test')`, id); err != nil {
		t.Fatal(err)
	}
	return id
}

var errRollback = errors.New("roll back on purpose")

// Many writers whose transactions commit out of order (each sleeps between its write and
// its commit, some roll back, some write bulk entries), and a consumer on each of two
// nodes resuming after its last position in small pages: each consumer sees every
// committed change exactly once, in strictly increasing positions, and never a rolled-back
// one.
func TestConsumersNeverMissOrSeeUncommitted(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t, feed.Schema)
	nodes := []*feed.Feed{node(t, pool), node(t, pool)}
	ten, other := tenant(t, pool), tenant(t, pool)
	ctx := context.Background()

	const writers, perWriter = 12, 40
	var mu sync.Mutex
	committed := map[string]bool{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				key := fmt.Sprintf("w%d-%d", w, i)
				rollback := rand.IntN(10) == 0
				bulk := rand.IntN(8) == 0
				keys := []string{key}
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					var err error
					if bulk {
						keys = []string{key + "a", key + "b", key + "c"}
						err = feed.AppendMany(ctx, tx, ten, "doc", "c", "import", keys, 1)
					} else {
						err = feed.Append(ctx, tx, feed.Entry{Tenant: ten, Kind: "doc", Scope: "c", Key: key, Op: "create", Version: 1})
					}
					if err != nil {
						return err
					}
					// Another tenant's change in the same stream must not show up.
					if err := feed.Append(ctx, tx, feed.Entry{Tenant: other, Kind: "doc", Key: key, Op: "create"}); err != nil {
						return err
					}
					time.Sleep(time.Duration(rand.IntN(4000)) * time.Microsecond)
					if rollback {
						return errRollback
					}
					return nil
				})
				if err != nil && !errors.Is(err, errRollback) {
					t.Error(err)
					return
				}
				if !rollback {
					mu.Lock()
					for _, k := range keys {
						committed[k] = true
					}
					mu.Unlock()
					nodes[w%2].Kick()
				}
			}
		})
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	results := make(chan map[string]int, len(nodes))
	for _, f := range nodes {
		go func() {
			results <- consume(t, f, ten, writersDone, func() int { mu.Lock(); defer mu.Unlock(); return len(committed) })
		}()
	}
	for range nodes {
		seen := <-results
		mu.Lock()
		for k, n := range seen {
			if !committed[k] {
				t.Errorf("consumer saw %s, which never committed", k)
			}
			if n != 1 {
				t.Errorf("consumer saw %s %d times", k, n)
			}
		}
		for k := range committed {
			if seen[k] == 0 {
				t.Errorf("consumer missed committed change %s", k)
			}
		}
		mu.Unlock()
	}
}

// consume reads the feed from the start, resuming after its last position, until the
// writers are done and it has seen as many changes as were committed (or 60s pass).
func consume(t *testing.T, f *feed.Feed, ten string, writersDone chan struct{}, want func() int) map[string]int {
	ctx := context.Background()
	seen := map[string]int{}
	after := feed.Start
	total := 0
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		known := f.Known()
		batch, next, err := f.Read(ctx, ten, after, 7) // small pages: many resumes, bulk entries split
		if err != nil {
			t.Error(err)
			return seen
		}
		for _, c := range batch {
			if !after.Less(c.Pos()) {
				t.Errorf("position %s after %s: not increasing", c.Position, after)
			}
			after = c.Pos()
			seen[c.Key]++
			total++
		}
		if after != next {
			t.Errorf("Read's next %s differs from its last change %s", next, after)
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-writersDone:
			if total >= want() {
				return seen
			}
		default:
		}
		f.Wait(ctx, known, 200*time.Millisecond)
	}
	t.Errorf("gave up after 60s with %d of %d changes", total, want())
	return seen
}

// A transaction that is still running holds nothing back: an entry committed after it
// began is readable at once, and the older one appears when it commits, after it.
func TestLaterCommitsAreNotHeldBack(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t, feed.Schema)
	f := node(t, pool)
	ten := tenant(t, pool)
	ctx := context.Background()
	slow, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Rollback(ctx) //nolint:errcheck
	if err := feed.Append(ctx, slow, feed.Entry{Tenant: ten, Kind: "kv", Key: "slow", Op: "update"}); err != nil {
		t.Fatal(err)
	}
	if err := feed.Append(ctx, pool, feed.Entry{Tenant: ten, Kind: "kv", Key: "fast", Op: "update"}); err != nil {
		t.Fatal(err)
	}
	sequence(t, f, pool)
	got, next, err := f.Read(ctx, ten, feed.Start, 10)
	if err != nil || len(got) != 1 || got[0].Key != "fast" {
		t.Fatalf("while an older transaction runs: %+v %v", got, err)
	}
	if err := slow.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	sequence(t, f, pool)
	got, _, err = f.Read(ctx, ten, next, 10)
	if err != nil || len(got) != 1 || got[0].Key != "slow" {
		t.Fatalf("after the slow commit: %+v %v", got, err)
	}
}

// A reader on one node is woken by a change committed through another, promptly.
func TestWaitWakesAcrossNodes(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t, feed.Schema)
	a, b := node(t, pool), node(t, pool)
	ten := tenant(t, pool)
	ctx := context.Background()
	head, err := b.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	known := head.Pos
	woke := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		b.Wait(ctx, known, 10*time.Second)
		woke <- time.Since(start)
	}()
	time.Sleep(50 * time.Millisecond)
	if err := feed.Append(ctx, pool, feed.Entry{Tenant: ten, Kind: "kv", Key: "k", Op: "update"}); err != nil {
		t.Fatal(err)
	}
	a.Kick()
	select {
	case d := <-woke:
		if d > 2*time.Second {
			t.Fatalf("woke after %s", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("never woke")
	}
	changes, _, err := b.Read(ctx, ten, head, 10)
	if err != nil || len(changes) != 1 || changes[0].Key != "k" {
		t.Fatalf("read %+v %v", changes, err)
	}
}

func TestPositionsExpireAndParse(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t, feed.Schema)
	f := node(t, pool)
	ten := tenant(t, pool)
	ctx := context.Background()
	for i := range 3 {
		if err := feed.Append(ctx, pool, feed.Entry{Tenant: ten, Kind: "kv", Key: fmt.Sprint(i), Op: "update"}); err != nil {
			t.Fatal(err)
		}
	}
	sequence(t, f, pool)
	all, _, _ := f.Read(ctx, ten, feed.Start, 10)
	if len(all) != 3 {
		t.Fatalf("%d changes", len(all))
	}
	for _, c := range all {
		p, err := feed.ParsePosition(c.Position)
		if err != nil || p != c.Pos() {
			t.Fatalf("position %s does not round-trip: %v %v", c.Position, p, err)
		}
	}
	for _, bad := range []string{"x", "1.", "-1", "1.2.3", "1.-2"} {
		if _, err := feed.ParsePosition(bad); !problem.HasCode(err, "invalid_position") {
			t.Errorf("ParsePosition(%q) = %v", bad, err)
		}
	}
	future := all[2].Pos()
	future.Pos += 1000
	_, _, err := f.Read(ctx, ten, future, 10)
	if !problem.HasCode(err, "invalid_position") {
		t.Errorf("future position: %v", err)
	}
	// Age the first two and prune them: resuming from before them is no longer possible.
	if _, err := pool.Exec(ctx, `UPDATE changes SET at = now() - interval '30 days' WHERE position <= $1`, all[1].Pos().Pos); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Prune(ctx); err != nil || n != 2 {
		t.Fatalf("prune: %d %v", n, err)
	}
	_, _, err = f.Read(ctx, ten, all[0].Pos(), 10)
	if !problem.HasCode(err, "position_expired") {
		t.Errorf("expired position: %v", err)
	}
	rest, _, err := f.Read(ctx, ten, all[1].Pos(), 10)
	if err != nil || len(rest) != 1 {
		t.Errorf("resuming at the watermark: %v %v", rest, err)
	}
}

// A reader woken on the node that sequenced finds the new entry: the node learns of
// positions only after they commit (a wake-up before the commit would find nothing and
// then wait past the entry).
func TestWokenReaderFindsTheEntry(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t, feed.Schema)
	f := node(t, pool)
	ten := tenant(t, pool)
	ctx := context.Background()
	after := feed.Start
	for i := range 30 {
		known := f.Known()
		woke := make(chan bool, 1)
		go func() { woke <- f.Wait(ctx, known, 5*time.Second) }()
		if err := feed.Append(ctx, pool, feed.Entry{Tenant: ten, Kind: "kv", Key: fmt.Sprint(i), Op: "update"}); err != nil {
			t.Fatal(err)
		}
		f.Kick()
		if !<-woke {
			t.Fatalf("round %d: not woken", i)
		}
		got, next, err := f.Read(ctx, ten, after, 10)
		if err != nil || len(got) != 1 {
			t.Fatalf("round %d: woken, but read %v (%v)", i, got, err)
		}
		after = next
	}
}
