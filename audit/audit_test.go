package audit_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func setup(t *testing.T) (*pgxpool.Pool, *audit.Log, context.Context) {
	t.Helper()
	pool := testdb.New(t, audit.Schema)
	ctx := audit.WithActor(context.Background(), audit.Actor{UserID: uuid.NewString(), Name: "ada"})
	ctx = audit.WithRequest(ctx, audit.Request{IP: "192.0.2.7", UserAgent: "test/1", RequestID: "req-1"})
	return pool, audit.New(pool, nil), ctx
}

func record(t *testing.T, pool *pgxpool.Pool, ctx context.Context, e audit.Entry) {
	t.Helper()
	if err := audit.Record(ctx, pool, e); err != nil {
		t.Fatal(err)
	}
}

func seal(t *testing.T, l *audit.Log) {
	t.Helper()
	for {
		n, err := l.Seal(context.Background(), 500)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
	}
}

func verify(t *testing.T, l *audit.Log, tenant string) audit.Report {
	t.Helper()
	rep, err := l.Verify(context.Background(), tenant)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestRecordListVerify(t *testing.T) {
	t.Parallel()
	pool, l, ctx := setup(t)
	tenant := uuid.NewString()
	for i := range 5 {
		record(t, pool, ctx, audit.Entry{Tenant: tenant, Action: "doc.create", ResourceType: "doc", ResourceID: string(rune('a' + i)),
			Details: map[string]any{"n": i, "password": "hunter2", "nested": map[string]any{"api_key": "sk_x"}}})
	}
	record(t, pool, ctx, audit.Entry{Action: "user.create"}) // platform chain
	seal(t, l)
	rows, next, err := l.List(ctx, tenant, audit.Filter{Limit: 3})
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 || next == "" || rows[0].ResourceID != "e" {
		t.Fatalf("first page: %d rows, next %q, first %+v", len(rows), next, rows[0])
	}
	r := rows[0]
	if r.ActorName != "ada" || r.IP != "192.0.2.7" || r.UserAgent != "test/1" || r.RequestID != "req-1" || r.Seq == nil || *r.Seq != 5 {
		t.Errorf("row = %+v", r)
	}
	if d := string(r.Details); strings.Contains(d, "hunter2") || strings.Contains(d, "sk_x") || !strings.Contains(d, "[redacted]") {
		t.Errorf("details not scrubbed: %s", d)
	}
	rest, next2, err := l.List(ctx, tenant, audit.Filter{Limit: 3, Cursor: next})
	if err != nil || len(rest) != 2 || next2 != "" || rest[1].ResourceID != "a" {
		t.Fatalf("second page: %d rows, next %q, err %v", len(rest), next2, err)
	}
	if rows, _, _ := l.List(ctx, tenant, audit.Filter{Action: "doc.*", ResourceID: "c"}); len(rows) != 1 {
		t.Errorf("filter by action prefix and resource: %d rows", len(rows))
	}
	if rows, _, _ := l.List(ctx, "", audit.Filter{}); len(rows) != 1 || rows[0].Action != "user.create" {
		t.Errorf("platform chain: %+v", rows)
	}
	if _, _, err := l.List(ctx, tenant, audit.Filter{Cursor: "garbage"}); err == nil {
		t.Error("a forged cursor was accepted")
	}
	if rep := verify(t, l, tenant); !rep.OK || rep.Checked != 5 || rep.Unsealed != 0 {
		t.Errorf("verify = %+v", rep)
	}
}

// Rows commit with their change or not at all.
func TestRecordFollowsTransaction(t *testing.T) {
	t.Parallel()
	pool, l, ctx := setup(t)
	tenant := uuid.NewString()
	boom := errors.New("boom")
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "doc.create"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if rows, _, _ := l.List(ctx, tenant, audit.Filter{}); len(rows) != 0 {
		t.Fatalf("a rolled-back change left %d audit rows", len(rows))
	}
}

func TestAppendOnly(t *testing.T) {
	t.Parallel()
	pool, l, ctx := setup(t)
	tenant := uuid.NewString()
	record(t, pool, ctx, audit.Entry{Tenant: tenant, Action: "doc.create"})
	seal(t, l)
	for _, q := range []string{
		"UPDATE audit_log SET action = 'doc.nothing'",
		"DELETE FROM audit_log",
		"TRUNCATE audit_log",
		"UPDATE audit_log SET hash = NULL, seq = NULL",
	} {
		if _, err := pool.Exec(ctx, q); err == nil || !strings.Contains(err.Error(), "append-only") {
			t.Errorf("%s: err = %v, want it refused", q, err)
		}
	}
	if rep := verify(t, l, tenant); !rep.OK {
		t.Errorf("verify after refused changes = %+v", rep)
	}
}

// Many writers in one tenant at once: none waits on another, and the sealed chain is
// complete and ordered.
func TestConcurrentWritersOneChain(t *testing.T) {
	t.Parallel()
	pool, l, ctx := setup(t)
	tenant := uuid.NewString()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 25 {
				if err := audit.Record(ctx, pool, audit.Entry{Tenant: tenant, Action: "doc.update", Details: map[string]any{"w": w, "i": i}}); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	sealerCtx, stop := context.WithCancel(ctx)
	sealerDone := make(chan struct{})
	go func() { l.RunSealer(sealerCtx, 5*time.Millisecond); close(sealerDone) }()
	wg.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for {
		rep := verify(t, l, tenant)
		if rep.Checked == 200 && rep.OK && rep.Unsealed == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("chain not sealed: %+v", rep)
		}
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	<-sealerDone
}

// tamper runs sql as the database superuser with triggers off, as an attacker with
// database access would.
func tamper(t *testing.T, pool *pgxpool.Pool, sql string, args ...any) {
	t.Helper()
	ctx := context.Background()
	err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, sql, args...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		sql    string
		seq    int64
		reason string
	}{
		{"modified", "UPDATE audit_log SET details = '{\"n\": 999}' WHERE seq = 4 AND chain = $1", 4, "modified"},
		{"actor rewritten", "UPDATE audit_log SET actor_name = 'mallory' WHERE seq = 2 AND chain = $1", 2, "modified"},
		{"removed from the middle", "DELETE FROM audit_log WHERE seq = 3 AND chain = $1", 3, "missing"},
		{"removed from the end", "DELETE FROM audit_log WHERE seq = 6 AND chain = $1", 6, "missing from the end"},
		{"removed from the start", "DELETE FROM audit_log WHERE seq = 1 AND chain = $1", 1, "missing"},
		{"unsealed to hide", "UPDATE audit_log SET hash = NULL, seq = NULL, prev_hash = NULL, action = 'x' WHERE seq = 5 AND chain = $1", 5, "missing"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			pool, l, ctx := setup(t)
			tenant := uuid.NewString()
			for i := range 6 {
				record(t, pool, ctx, audit.Entry{Tenant: tenant, Action: "doc.update", Details: map[string]any{"n": i}})
			}
			other := uuid.NewString()
			record(t, pool, ctx, audit.Entry{Tenant: other, Action: "doc.update"})
			seal(t, l)
			tamper(t, pool, c.sql, tenant)
			rep := verify(t, l, tenant)
			if rep.OK || rep.Broken == nil || rep.Broken.Seq != c.seq || !strings.Contains(rep.Broken.Reason, c.reason) {
				t.Fatalf("report = %+v, broken = %+v; want broken at %d (%s)", rep, rep.Broken, c.seq, c.reason)
			}
			if rep := verify(t, l, other); !rep.OK {
				t.Errorf("another tenant's chain is reported broken: %+v", rep)
			}
		})
	}
}

func TestPurgeKeepsChainVerifiable(t *testing.T) {
	t.Parallel()
	pool, l, ctx := setup(t)
	tenant := uuid.NewString()
	for range 4 {
		record(t, pool, ctx, audit.Entry{Tenant: tenant, Action: "old.thing"})
	}
	seal(t, l)
	// Entries written before the cut-off are purged; those after it stay.
	time.Sleep(10 * time.Millisecond)
	cut := time.Now()
	time.Sleep(10 * time.Millisecond)
	for range 3 {
		record(t, pool, ctx, audit.Entry{Tenant: tenant, Action: "new.thing"})
	}
	seal(t, l)
	removed, err := l.Purge(ctx, tenant, cut)
	if err != nil {
		t.Fatal(err)
	}
	if removed != 4 {
		t.Fatalf("removed %d, want 4", removed)
	}
	seal(t, l)
	rep := verify(t, l, tenant)
	if !rep.OK || rep.FirstSeq != 5 || rep.Checked != 4 { // 3 new rows and the purge's own row
		t.Fatalf("after purge: %+v %+v", rep, rep.Broken)
	}
	rows, _, _ := l.List(ctx, tenant, audit.Filter{Action: "audit.purge"})
	if len(rows) != 1 || !strings.Contains(string(rows[0].Details), `"removed": 4`) {
		t.Fatalf("the purge is not audited: %+v", rows)
	}
}

func TestScrub(t *testing.T) {
	t.Parallel()
	got := audit.Scrub(map[string]any{"username": "ada", "Password": "x", "list": []any{map[string]any{"refresh_token": "y"}}})
	if got["username"] != "ada" || got["Password"] != "[redacted]" {
		t.Fatalf("scrub = %v", got)
	}
	inner := got["list"].([]any)[0].(map[string]any)
	if inner["refresh_token"] != "[redacted]" {
		t.Fatalf("nested scrub = %v", inner)
	}
}
