package series_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stratadb/strata/internal/mqttpub"
	"github.com/stratadb/strata/internal/testsvc"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/series"
)

// A Redis stream entry is acknowledged (XACK) only after its reading is committed: while
// PostgreSQL cannot commit (the history table is locked), the entries the consumer has
// read stay pending in the group and nothing is stored; once commits resume, every entry
// is stored and then acknowledged.
func TestRedisStreamAckedOnlyAfterCommit(t *testing.T) {
	t.Parallel()
	rd := testsvc.Redis(t)
	e := newEnv(t, series.Config{RedisURL: "redis://" + rd.Addr, RedisStream: "held"})
	d, _, key := e.device(climate("pantry"))
	ctx := context.Background()
	lock, err := e.w.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }()
	if _, err := lock.Exec(ctx, `LOCK TABLE strata.readings IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	const n = 20
	now := time.Now()
	for i := range n {
		tok := seal(t, key, reading(d.ID, now.Add(-time.Duration(i)*time.Second), map[string]any{"temperature": float64(i)}))
		if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: "held", Values: map[string]any{"device": d.ID, "payload": string(tok)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	pending := func() int64 {
		p, err := rc.XPending(ctx, "held", "strata").Result()
		if err != nil {
			return -1
		}
		return p.Count
	}
	eventually(t, "every entry read by the consumer", func() bool { return pending() == n })
	time.Sleep(300 * time.Millisecond) // give a wrong early XACK time to happen
	if p := pending(); p != n {
		t.Fatalf("while PostgreSQL cannot commit, %d of %d entries are still pending: the others were acknowledged before their commit", p, n)
	}
	if got := count(t, e, `SELECT count(*) FROM strata.readings_latest WHERE device_id = $1`, d.ID); got != 0 {
		t.Fatalf("a latest value was committed while the history was locked: %d", got)
	}
	if err := lock.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	eventually(t, "every entry acknowledged", func() bool { return pending() == 0 })
	if got := count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID); got != n {
		t.Fatalf("%d of %d acknowledged entries stored", got, n)
	}
}

// A restart loses no latest value: the latest table in PostgreSQL is the truth behind the
// in-process cache, so a new service (an empty cache) serves what the old one committed.
func TestLatestSurvivesRestart(t *testing.T) {
	t.Parallel()
	w := testworld.New(t, series.Schema)
	first := startEnv(t, w, series.Config{NodeID: "before"})
	d, _, _ := first.device(climate("garage"))
	owner := w.As(testworld.Owner)
	at := time.Now().UTC().Truncate(time.Millisecond)
	body := fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":7.25,"humidity":61}}`, d.ID, at.Format(time.RFC3339Nano))
	if res, err := first.svc.Ingest(owner, w.Tenant, items(t, body), nil); err != nil || res.Accepted != 1 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	if l, err := first.svc.LatestDevice(owner, w.Tenant, d.ID); err != nil || len(l.Values) != 2 {
		t.Fatalf("latest before the restart: %+v %v", l, err)
	}
	first.svc.Close()

	second := startEnv(t, w, series.Config{NodeID: "after"})
	l, err := second.svc.LatestDevice(owner, w.Tenant, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{"humidity": 61, "temperature": 7.25}
	if len(l.Values) != len(want) {
		t.Fatalf("latest after the restart: %+v", l)
	}
	for _, v := range l.Values {
		if want[v.Metric] != v.Value || !v.Time.Equal(at) {
			t.Errorf("latest %s after the restart: %v at %v, want %v at %v", v.Metric, v.Value, v.Time, want[v.Metric], at)
		}
	}
	all, err := second.svc.LatestTenant(owner, w.Tenant)
	if err != nil || len(all) != 1 || len(all[0].Values) != 2 {
		t.Fatalf("the tenant's latest after the restart: %+v %v", all, err)
	}
}

// lockedBuffer is a log sink safe for concurrent writers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Decrypted payloads never reach the logs, at any level: readings accepted, rejected after
// decryption, and held in a commit that fails and is retried leave no trace of what devices
// sent.
func TestPayloadsNeverLogged(t *testing.T) {
	t.Parallel()
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e := newEnv(t, series.Config{MQTTAddr: "127.0.0.1:0", Logger: logger})
	d, cred, key := e.device(climate("study"))
	ctx := context.Background()
	const secret = "8c1f-decrypted-secret"
	now := time.Now()
	payloads := [][]byte{
		seal(t, key, reading(d.ID, now, map[string]any{"temperature": 12.3456789})),                            // accepted
		seal(t, key, reading(secret, now, map[string]any{"temperature": 20})),                                  // sensor mismatch
		seal(t, key, map[string]any{"sensor_id": d.ID, "timestamp": secret, "values": map[string]any{"t": 1}}), // bad timestamp
		seal(t, key, secret+" is not JSON"),                                                                    // invalid JSON
		seal(t, key, reading(d.ID, now, map[string]any{secret: 1})),                                            // unknown metric
	}
	// Hold commits on a lock, then end the committer's connection, so the failed commit is
	// logged and retried.
	lock, err := e.w.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(ctx) }()
	if _, err := lock.Exec(ctx, `LOCK TABLE strata.readings IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	pub, err := mqttpub.Dial(ctx, e.svc.MQTTAddr(), "study", cred.Username, cred.Password, 10)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var wg sync.WaitGroup
	for _, p := range payloads {
		wg.Add(1)
		if err := pub.Publish(ctx, cred.Topic, p, func(byte) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	_ = pub.Flush()
	waiting := `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`
	eventually(t, "a commit waiting on the lock", func() bool { return count(t, e, waiting) > 0 })
	if _, err := e.w.Pool.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the failed commit counted", func() bool {
		n, _ := metric(t, e.svc, "strata_series_commit_errors_total")
		return n > 0
	})
	_ = lock.Rollback(ctx)
	wg.Wait()
	if n := count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID); n != 1 {
		t.Fatalf("%d readings stored, want 1", n)
	}
	e.svc.Close() // lifecycle lines too
	out := logs.String()
	if out == "" {
		t.Fatal("nothing was logged at debug level: the test proves nothing")
	}
	for _, leak := range []string{secret, "12.3456789", `"sensor_id"`, `"values"`} {
		if strings.Contains(out, leak) {
			t.Errorf("the logs contain %q from a decrypted payload:\n%s", leak, out)
		}
	}
}

// The external broker goes away and comes back (killed, then started again, empty): the
// node notices, reconnects by itself, subscribes again, and ingests what devices publish
// afterwards.
func TestExternalBrokerReconnects(t *testing.T) {
	t.Parallel()
	mq := testsvc.Mosquitto(t)
	e := newEnv(t, series.Config{BrokerURL: "mqtt://" + mq.Addr, BrokerClientID: "node-" + t.Name()})
	d, cred, key := e.device(climate("shed"))
	up := func() bool {
		st, _ := e.svc.Stats(e.w.As(testworld.Owner), e.w.Tenant)
		return st.Node.ExternalUp
	}
	ctx := context.Background()
	send := func(v float64) {
		t.Helper()
		pub, err := mqttpub.Dial(ctx, mq.Addr, "shed-sensor", "", "", 10)
		if err != nil {
			t.Fatal(err)
		}
		defer pub.Close()
		acked := make(chan struct{})
		tok := seal(t, key, reading(d.ID, time.Now(), map[string]any{"temperature": v}))
		if err := pub.Publish(ctx, cred.Topic, tok, func(byte) { close(acked) }); err != nil {
			t.Fatal(err)
		}
		_ = pub.Flush()
		select {
		case <-acked:
		case <-time.After(30 * time.Second):
			t.Fatal("the broker never acknowledged the publish")
		}
	}
	stored := func(n int) func() bool {
		return func() bool {
			return count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID) == n
		}
	}
	eventually(t, "subscribed", up)
	send(1)
	eventually(t, "the first reading", stored(1))
	mq.Stop()
	eventually(t, "the connection seen down", func() bool { return !up() })
	mq.Start()
	eventually(t, "reconnected and subscribed again", up)
	send(2)
	eventually(t, "the reading published after the broker came back", stored(2))
	if got := count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1 AND value = 2`, d.ID); got != 1 {
		t.Fatalf("the reading after the restart: %d rows", got)
	}
}
