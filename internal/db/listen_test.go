package db_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/testdb"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestListenerDeliversAndRecovers(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	l := db.NewListener(pool, nil)
	var resets atomic.Int32
	got := make(chan string, 10)
	l.OnReset(func() { resets.Add(1) })
	l.Handle("alpha", func(p string) { got <- "alpha:" + p })
	l.Start()
	defer l.Close()
	waitFor(t, "the listener", l.Healthy)
	// A channel added while listening is picked up.
	l.Handle("beta", func(p string) { got <- "beta:" + p })
	notify := func(ch, payload string) {
		if _, err := pool.Exec(ctx, "SELECT pg_notify($1, $2)", ch, payload); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want string) {
		t.Helper()
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("got %q, want %q", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no notification %q", want)
		}
	}
	notify("alpha", "1")
	expect("alpha:1")
	// Healthy again only once beta is listened to: a notification sent then arrives.
	waitFor(t, "beta's LISTEN", l.Healthy)
	notify("beta", "2")
	expect("beta:2")
	// The listening session dies: the listener reconnects and resets its subscribers.
	if _, err := pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE pid <> pg_backend_pid() AND query LIKE 'LISTEN%' OR (pid <> pg_backend_pid() AND state = 'idle' AND backend_type = 'client backend' AND query LIKE '%LISTEN%')`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a reset after reconnecting", func() bool { return resets.Load() >= 2 && l.Healthy() })
	notify("alpha", "3")
	expect("alpha:3")
}
