package series_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/series"
)

// grafanaDashboard is the part of a dashboard JSON model the test reads.
type grafanaDashboard struct {
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Query string `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID      int    `json:"id"`
		Title   string `json:"title"`
		Targets []struct {
			RefID  string `json:"refId"`
			RawSQL string `json:"rawSql"`
			Format string `json:"format"`
		} `json:"targets"`
	} `json:"panels"`
}

// grafanaQuery expands a panel's SQL as Grafana's PostgreSQL data source does: template
// variables first ($tenant, a multi-value $metric as a quoted list), then the macros used
// ($__timeFilter, $__timeFrom, $__timeTo, $__timeGroupAlias, $__interval).
func grafanaQuery(sql string, vars map[string]string, from, to time.Time, interval time.Duration) string {
	sql = strings.ReplaceAll(sql, "$__interval", fmt.Sprintf("'%ds'", int(interval.Seconds())))
	for name, v := range vars {
		sql = strings.ReplaceAll(sql, "$"+name, v)
	}
	lit := func(t time.Time) string { return "'" + t.UTC().Format(time.RFC3339) + "'" }
	sql = strings.ReplaceAll(sql, "$__timeFrom()", lit(from))
	sql = strings.ReplaceAll(sql, "$__timeTo()", lit(to))
	sql = regexp.MustCompile(`\$__timeFilter\(([^)]+)\)`).ReplaceAllString(sql, "$1 BETWEEN "+lit(from)+" AND "+lit(to))
	return regexp.MustCompile(`\$__timeGroupAlias\(([^,]+),\s*'(\d+)s'\)`).ReplaceAllString(sql, `floor(extract(epoch from $1)/$2)*$2 AS "time"`)
}

// Every panel and variable of the provisioned dashboard runs, as the read-only role, over
// fixed time ranges, and answers what the readings say; the role reads no secrets and
// writes nothing.
func TestGrafanaDashboardQueries(t *testing.T) {
	t.Parallel()
	e := newEnv(t, series.Config{})
	d, _, _ := e.device(climate("grafana"))
	owner := e.w.As(testworld.Owner)
	to := time.Now().UTC().Truncate(time.Hour)
	from := to.Add(-6 * time.Hour)
	var its []string
	n := 0
	for ts := to.Add(-9 * 24 * time.Hour); ts.Before(to); ts = ts.Add(10 * time.Minute) {
		its = append(its, fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":%d,"humidity":50}}`, d.ID, ts.Format(time.RFC3339), n%30))
		n++
	}
	if res, err := e.svc.Ingest(owner, e.w.Tenant, items(t, its...), nil); err != nil || res.Accepted != n {
		t.Fatalf("ingest: %+v %v", res, err)
	}
	if res, _ := e.svc.Ingest(owner, e.w.Tenant, items(t, fmt.Sprintf(`{"device_id":%q,"values":{"temperature":1000}}`, d.ID)), nil); len(res.Rejected) != 1 {
		t.Fatal("the out-of-range reading was not rejected")
	}

	raw, err := os.ReadFile("../deploy/grafana/dashboards/strata-series.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash grafanaDashboard
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	roleSQL, err := os.ReadFile("../deploy/grafana/readonly-role.sql")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	role := "strata_grafana_" + strconv.FormatInt(time.Now().UnixNano()%1e9, 36)
	if _, err := e.w.Pool.Exec(ctx, strings.ReplaceAll(string(roleSQL), "strata_grafana", role)); err != nil {
		t.Fatalf("readonly-role.sql: %v", err)
	}
	t.Cleanup(func() {
		_, _ = e.w.Pool.Exec(context.Background(), `DROP OWNED BY `+role+`; DROP ROLE `+role)
	})
	// Run as the role, with its settings, as Grafana's connection would.
	asRole := func(sql string) ([][]any, error) {
		tx, err := e.w.Pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback(ctx) }()
		if _, err := tx.Exec(ctx, `SET LOCAL ROLE `+role+`; SET LOCAL transaction_read_only = on; SET LOCAL search_path = strata`); err != nil {
			t.Fatal(err)
		}
		rows, err := tx.Query(ctx, sql)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
	}
	vars := map[string]string{"tenant": e.w.Tenant, "device": d.ID, "metric": `'temperature','humidity'`}
	for _, v := range dash.Templating.List {
		got, err := asRole(grafanaQuery(v.Query, vars, from, to, time.Minute))
		if err != nil || len(got) == 0 {
			t.Errorf("variable %s: %v rows, %v", v.Name, len(got), err)
		}
	}
	results := map[int][][]any{}
	for _, rng := range []struct {
		name     string
		from     time.Time
		interval time.Duration
	}{{"6 hours", from, 5 * time.Minute}, {"8 days", to.Add(-8 * 24 * time.Hour), time.Hour}} {
		for _, p := range dash.Panels {
			for _, tg := range p.Targets {
				sql := grafanaQuery(tg.RawSQL, vars, rng.from, to, rng.interval)
				if strings.Contains(sql, "$") {
					t.Fatalf("panel %q: an unexpanded macro or variable in %s", p.Title, sql)
				}
				got, err := asRole(sql)
				if err != nil {
					t.Errorf("%s, panel %q %s: %v\n%s", rng.name, p.Title, tg.RefID, err, sql)
					continue
				}
				if len(got) == 0 {
					t.Errorf("%s, panel %q %s: no rows", rng.name, p.Title, tg.RefID)
				}
				if rng.name == "6 hours" && tg.RefID == "A" {
					results[p.ID] = got
				}
				if rng.name == "8 days" && p.ID == 3 && len(got) != 2*8*24 {
					t.Errorf("8 days of hourly averages: %d rows, want %d (two metrics, hour rollups)", len(got), 2*8*24)
				}
			}
		}
	}
	// What the panels say matches the readings.
	if rows := results[1]; len(rows) != 2 || rows[0][0] != "grafana" {
		t.Errorf("latest values: %v", rows)
	}
	if rows := results[2]; len(rows) != 1 || rows[0][0] != series.ReasonOutOfRange {
		t.Errorf("rejections: %v", rows)
	}
	var sum float64
	for _, r := range results[5] {
		sum += toFloat(r[1])
	}
	// 6 hours of a reading every 10 minutes, 2 metrics: from is on a reading, to is not.
	if want := float64(2 * 6 * 6); sum != want {
		t.Errorf("readings ingested over 6 hours: %v, want %v", sum, want)
	}
	if rows := results[6]; len(rows) != 2*6*6 {
		t.Errorf("raw readings over 6 hours: %d rows, want %d", len(rows), 2*6*6)
	}
	for _, r := range results[4] {
		if r[1] == "humidity min" && toFloat(r[2]) != 50 {
			t.Errorf("minimum humidity %v", r)
		}
	}
	for _, r := range results[3] {
		if r[1] == "humidity" && toFloat(r[2]) != 50 {
			t.Errorf("average humidity %v", r)
		}
	}
	// The role reads no secrets and changes nothing.
	for _, sql := range []string{`SELECT secret_hash FROM strata.devices`, `SELECT * FROM strata.device_keys`,
		`SELECT payload FROM strata.reading_rejects`, `SELECT password_hash FROM strata.users`,
		`DELETE FROM strata.readings_latest`} {
		if _, err := asRole(sql); err == nil {
			t.Errorf("the read-only role may run %q", sql)
		}
	}
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case int64:
		return float64(x)
	case int32:
		return float64(x)
	case pgtype.Numeric:
		f, _ := x.Float64Value()
		return f.Float64
	}
	f, err := strconv.ParseFloat(fmt.Sprint(v), 64)
	if err != nil {
		return math.NaN()
	}
	return f
}
