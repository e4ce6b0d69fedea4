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

// node is one strata process's view of the feed: its own listener and sequencer.
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

func tenant(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	id := uuid.NewString()
	if _, err := pool.Exec(context.Background(), `INSERT INTO tenants (id, name) VALUES ($1, 'feed test')`, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// Many writers whose transactions commit out of order (each sleeps between its write and
// its commit, some roll back), two nodes sequencing at once, and a consumer on each node
// resuming from its last position: each consumer sees every committed change exactly once,
// in strictly increasing positions, and never a rolled-back one.
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
				err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
					if err := feed.Append(ctx, tx, feed.Entry{Tenant: ten, Kind: "doc", Scope: "c", Key: key, Op: "create", Version: 1}); err != nil {
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
					committed[key] = true
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
		go func() { results <- consume(t, f, ten, writersDone, func() int { mu.Lock(); defer mu.Unlock(); return len(committed) }) }()
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

var errRollback = errors.New("roll back on purpose")

// consume reads the feed from the start, resuming after its last position, until the
// writers are done and it has seen as many changes as were committed (or 60s pass).
func consume(t *testing.T, f *feed.Feed, ten string, writersDone chan struct{}, want func() int) map[string]int {
	ctx := context.Background()
	seen := map[string]int{}
	var after, total int64
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		batch, err := f.Read(ctx, ten, after, 7) // small pages: many resumes
		if err != nil {
			t.Error(err)
			return seen
		}
		for _, c := range batch {
			if c.Position <= after {
				t.Errorf("position %d after %d: not increasing", c.Position, after)
			}
			after = c.Position
			seen[c.Key]++
			total++
		}
		if len(batch) > 0 {
			continue
		}
		select {
		case <-writersDone:
			if int(total) >= want() {
				return seen
			}
		default:
		}
		f.Wait(ctx, after, 200*time.Millisecond)
	}
	t.Errorf("gave up after 60s with %d of %d changes", total, want())
	return seen
}

// A reader on one node is woken by a change sequenced on another, promptly.
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
	woke := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		b.Wait(ctx, head, 10*time.Second)
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
	changes, err := b.Read(ctx, ten, head, 10)
	if err != nil || len(changes) != 1 || changes[0].Key != "k" {
		t.Fatalf("read %+v %v", changes, err)
	}
}

func TestExpiredAndFuturePositions(t *testing.T) {
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
	for {
		n, err := f.Sequence(ctx, 100)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	all, _ := f.Read(ctx, ten, 0, 10)
	if len(all) != 3 {
		t.Fatalf("%d changes", len(all))
	}
	_, err := f.Read(ctx, ten, all[2].Position+1000, 10)
	if !problem.HasCode(err, "invalid_position") {
		t.Errorf("future position: %v", err)
	}
	// Age the first two and prune them: resuming from before them is no longer possible.
	if _, err := pool.Exec(ctx, `UPDATE changes SET at = now() - interval '30 days' WHERE position <= $1`, all[1].Position); err != nil {
		t.Fatal(err)
	}
	if n, err := f.Prune(ctx); err != nil || n != 2 {
		t.Fatalf("prune: %d %v", n, err)
	}
	_, err = f.Read(ctx, ten, all[0].Position, 10)
	if !problem.HasCode(err, "position_expired") {
		t.Errorf("expired position: %v", err)
	}
	rest, err := f.Read(ctx, ten, all[1].Position, 10)
	if err != nil || len(rest) != 1 {
		t.Errorf("resuming at the watermark: %v %v", rest, err)
	}
}
