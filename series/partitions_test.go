package series

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/internal/testworld"
)

// Per-tenant retention drops whole partitions, never deletes rows: a tenant keeping 7 days
// loses its old days while another tenant, keeping 30, keeps the same days; partitions
// for the next days exist ahead of time, each with BRIN and B-tree indexes.
func TestRetentionDropsPartitions(t *testing.T) {
	t.Parallel()
	w := testworld.New(t, Schema)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	s := New(w.Pool, w.Auth, w.Listener, Config{Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	owner, outsider := w.As(testworld.Owner), w.As(testworld.Outsider)
	seven := 7
	if _, err := s.SettingsUpdate(owner, w.Tenant, SettingsInput{RawKeepDays: &seven}); err != nil {
		t.Fatal(err)
	}
	mine, _, err := s.DeviceCreate(owner, w.Tenant, DeviceInput{Name: "seven", Metrics: map[string]Metric{"t": {}}})
	if err != nil {
		t.Fatal(err)
	}
	theirs, _, err := s.DeviceCreate(outsider, w.Other, DeviceInput{Name: "thirty", Metrics: map[string]Metric{"t": {}}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(0, clock.Load())
	for _, dev := range []struct {
		ctx    context.Context
		tenant string
		id     string
	}{{owner, w.Tenant, mine.ID}, {outsider, w.Other, theirs.ID}} {
		var its []IngestItem
		for day := 6; day >= 0; day-- {
			var it IngestItem
			it.DeviceID = dev.id
			it.Timestamp = []byte(fmt.Sprintf("%q", now.Add(-time.Duration(day)*24*time.Hour).UTC().Format(time.RFC3339)))
			it.Values = map[string]json.RawMessage{"t": json.RawMessage(fmt.Sprint(day))}
			its = append(its, it)
		}
		if res, err := s.Ingest(dev.ctx, dev.tenant, its, nil); err != nil || res.Accepted != 7 {
			t.Fatalf("ingest: %+v %v", res, err)
		}
	}
	leaves := func(prefix string) []string {
		rows, err := w.Pool.Query(ctx, `SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = 'strata' AND c.relkind = 'r' AND c.relname LIKE $1 ORDER BY 1`, prefix+"%")
		if err != nil {
			t.Fatal(err)
		}
		names, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return names
	}
	today := famReadings.start(now)
	for i := 0; i <= periodsAhead; i++ {
		for _, keep := range []int{7, 30} {
			name := famReadings.leaf(int16(keep), today.Add(time.Duration(i)*24*time.Hour))
			if !slices.Contains(leaves("readings_k"), name) {
				t.Errorf("partition %s not created ahead", name)
			}
		}
	}
	var idx []string
	rows, _ := w.Pool.Query(ctx, `SELECT indexdef FROM pg_indexes WHERE schemaname = 'strata' AND tablename = $1 ORDER BY 1`,
		famReadings.leaf(7, today))
	idx, _ = pgx.CollectRows(rows, pgx.RowTo[string])
	if len(idx) != 2 || !slices.ContainsFunc(idx, func(s string) bool { return strings.Contains(s, "USING brin (ts)") }) ||
		!slices.ContainsFunc(idx, func(s string) bool { return strings.Contains(s, "USING btree (device_id, metric, ts)") }) {
		t.Errorf("leaf indexes: %v", idx)
	}

	rowsOf := func(id string) int {
		var n int
		if err := w.Pool.QueryRow(ctx, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, id).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	clock.Store(now.Add(5 * 24 * time.Hour).UnixNano()) // the oldest of the 7-day tenant's days is now 11 days old
	before := leaves("readings_k7_p")
	if err := s.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	after := leaves("readings_k7_p")
	dropped := 0
	for _, name := range before {
		if !slices.Contains(after, name) {
			dropped++
		}
	}
	// Days 6, 5 and 4 before the first now are 11, 10 and 9 days old: past 7 days plus a day
	// of grace, so dropped (day 3, 8 days old, ends within the grace).
	if dropped != 3 || rowsOf(mine.ID) != 4 {
		t.Fatalf("dropped %d partitions, %d readings left of 7; partitions %v → %v", dropped, rowsOf(mine.ID), before, after)
	}
	if rowsOf(theirs.ID) != 7 {
		t.Fatalf("the 30-day tenant lost readings: %d left", rowsOf(theirs.ID))
	}
	var deleted int64
	if err := w.Pool.QueryRow(ctx, `SELECT COALESCE(sum(n_tup_del), 0) FROM pg_stat_user_tables WHERE schemaname = 'strata' AND relname LIKE 'readings%'`).
		Scan(&deleted); err != nil || deleted != 0 {
		t.Fatalf("rows were deleted from the history tables: %d %v", deleted, err)
	}

	// A deleted device's readings and rollups are purged (after the delay).
	if err := s.DeviceDelete(owner, w.Tenant, mine.ID); err != nil {
		t.Fatal(err)
	}
	if n, err := s.purgeDeleted(ctx, 0); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	var left int
	if err := w.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM strata.readings WHERE device_id = $1) +
		(SELECT count(*) FROM strata.readings_minute WHERE device_id = $1) + (SELECT count(*) FROM strata.readings_hour WHERE device_id = $1) +
		(SELECT count(*) FROM strata.readings_latest WHERE device_id = $1)`, mine.ID).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d rows of the deleted device left (%v)", left, err)
	}
	if rowsOf(theirs.ID) != 7 {
		t.Fatal("the purge touched another device")
	}
}

// Deleting a tenant removes everything its devices wrote: history, rollups, latest
// values, counters and dead letters.
func TestTenantDeletionPurgesReadings(t *testing.T) {
	t.Parallel()
	w := testworld.New(t, Schema)
	s := New(w.Pool, w.Auth, w.Listener, Config{})
	ctx := context.Background()
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	outsider := w.As(testworld.Outsider)
	d, _, err := s.DeviceCreate(outsider, w.Other, DeviceInput{Name: "doomed", Metrics: map[string]Metric{"t": {}}})
	if err != nil {
		t.Fatal(err)
	}
	var it, bad IngestItem
	_ = json.Unmarshal([]byte(`{"device_id":"`+d.ID+`","values":{"t":1}}`), &it)
	_ = json.Unmarshal([]byte(`{"device_id":"`+d.ID+`","values":{"nope":1}}`), &bad)
	if res, err := s.Ingest(outsider, w.Other, []IngestItem{it, bad}, nil); err != nil || res.Accepted != 1 {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	// The tenant row goes as auth.TenantDelete removes it (its other modules' hooks need
	// their own schemas, which this database lacks); the cascade is what matters here.
	if _, err := w.Pool.Exec(ctx, `DELETE FROM strata.tenants WHERE id = $1`, w.Other); err != nil {
		t.Fatal(err)
	}
	if _, err := s.purgeDeleted(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.sweepOrphans(ctx); err != nil {
		t.Fatal(err)
	}
	var left int
	if err := w.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM strata.readings WHERE tenant_id = $1) +
		(SELECT count(*) FROM strata.readings_minute WHERE tenant_id = $1) + (SELECT count(*) FROM strata.readings_hour WHERE tenant_id = $1) +
		(SELECT count(*) FROM strata.readings_latest WHERE tenant_id = $1) + (SELECT count(*) FROM strata.series_counters WHERE tenant_id = $1) +
		(SELECT count(*) FROM strata.reading_rejects WHERE tenant_id = $1) + (SELECT count(*) FROM strata.series_purges)`, w.Other).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d rows of the deleted tenant left (%v)", left, err)
	}
}
