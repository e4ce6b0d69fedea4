package series

import (
	"context"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// HistoryQuery asks for a device's readings over a time range.
type HistoryQuery struct {
	// Metrics to return; empty means every metric the device declares.
	Metrics []string
	// From (inclusive) and To (exclusive); zero To means now, zero From means 24 hours
	// before To.
	From, To time.Time
	// Bucket is "raw" (every reading), "auto" or "" (chosen from the range so a series has
	// at most Limit points: raw up to an hour, then 1m, 5m, 15m, 30m, 1h, 3h, 6h, 12h, 1d,
	// 7d), or a width such as "10s", "1m", "5m", "1h", "1d". Widths in whole hours read the
	// per-hour rollups, whole minutes the per-minute rollups, others the raw readings.
	Bucket string
	// Agg combines a bucket's readings: avg (default), min, max, sum, count or last.
	Agg string
	// Limit caps the points per series: default 1000, at most 10000. Raw series longer than
	// that are cut (Truncated); a bucket width that would exceed it is refused.
	Limit int
}

// Point is a series' value at a time (a bucket's start, for bucketed series).
type Point struct {
	Time  time.Time `json:"t"`
	Value float64   `json:"v"`
}

// Series is one metric's points, oldest first.
type Series struct {
	Metric    string  `json:"metric"`
	Points    []Point `json:"points"`
	Truncated bool    `json:"truncated,omitempty" doc:"More raw readings exist in the range than the limit allowed."`
}

// History is the answer to a HistoryQuery.
type History struct {
	DeviceID string    `json:"device_id"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Bucket   string    `json:"bucket" example:"1h" doc:"raw, or the bucket width used."`
	Source   string    `json:"source" enum:"raw,minute,hour" doc:"What the points were computed from."`
	Agg      string    `json:"agg,omitempty" example:"avg"`
	Series   []Series  `json:"series"`
}

// MaxPointsPerSeries is the highest Limit a history query may ask for.
const MaxPointsPerSeries = 10000

var autoBuckets = []time.Duration{time.Minute, 5 * time.Minute, 15 * time.Minute, 30 * time.Minute, time.Hour, 3 * time.Hour,
	6 * time.Hour, 12 * time.Hour, day, 7 * day}

// aggregate expressions over raw readings and over rollups; fixed strings, chosen by name.
var (
	rawAgg = map[string]string{
		"avg": "avg(value)", "min": "min(value)", "max": "max(value)", "sum": "sum(value)", "count": "count(*)::float8",
		"last": "(array_agg(value ORDER BY ts DESC))[1]",
	}
	rollupAgg = map[string]string{
		"avg": "sum(sum) / sum(count)", "min": "min(min)", "max": "max(max)", "sum": "sum(sum)", "count": "sum(count)::float8",
		"last": "(array_agg(last ORDER BY last_ts DESC))[1]",
	}
)

// History returns a device's readings over a range (read on device:<id>), raw or
// aggregated into buckets, from raw readings or rollups depending on the bucket width.
func (s *Service) History(ctx context.Context, tenant, device string, q HistoryQuery) (History, error) {
	if _, err := s.authorizeDevice(ctx, tenant, device, auth.PermRead); err != nil {
		return History{}, err
	}
	st, err := s.registry.get(ctx, device)
	if err != nil {
		return History{}, db.Translate(err, "device")
	}
	if !st.exists || st.tenStr != tenant {
		return History{}, errDeviceNotFound()
	}
	if err := s.normalize(&q, st); err != nil {
		return History{}, err
	}
	h := History{DeviceID: device, From: q.From, To: q.To, Agg: q.Agg, Series: make([]Series, 0, len(q.Metrics))}
	width, raw, err := chooseBucket(q)
	if err != nil {
		return History{}, err
	}
	if raw {
		h.Bucket, h.Source, h.Agg = "raw", "raw", ""
		return h, s.historyRaw(ctx, st, q, &h)
	}
	h.Bucket = formatWidth(width)
	table, source := "readings", "raw"
	switch {
	case width%time.Hour == 0:
		table, source = "readings_hour", "hour"
	case width%time.Minute == 0:
		table, source = "readings_minute", "minute"
	}
	h.Source = source
	return h, s.historyBuckets(ctx, st, q, width, table, &h)
}

func (s *Service) normalize(q *HistoryQuery, st *deviceState) error {
	if q.To.IsZero() {
		q.To = s.now()
	}
	if q.From.IsZero() {
		q.From = q.To.Add(-day)
	}
	q.From, q.To = q.From.UTC(), q.To.UTC()
	if !q.From.Before(q.To) {
		return problem.Unprocessable("invalid_range", "from must be before to").WithField("query.from", "not before to")
	}
	if q.Agg == "" {
		q.Agg = "avg"
	}
	if _, ok := rawAgg[q.Agg]; !ok {
		return problem.Unprocessable("invalid_agg", "agg is avg, min, max, sum, count or last").WithField("query.agg", "unknown")
	}
	if q.Limit <= 0 {
		q.Limit = 1000
	}
	if q.Limit > MaxPointsPerSeries {
		return problem.Unprocessable("invalid_limit", "limit is at most %d", MaxPointsPerSeries).WithField("query.limit", "too large")
	}
	if len(q.Metrics) == 0 {
		for m := range st.metrics {
			q.Metrics = append(q.Metrics, m)
		}
	}
	slices.Sort(q.Metrics)
	q.Metrics = slices.Compact(q.Metrics)
	for _, m := range q.Metrics {
		if !metricName.MatchString(m) {
			return problem.Unprocessable("invalid_metric", "metric names have 1 to 64 letters, digits, '_', '.' or '-'").WithField("query.metric", "invalid")
		}
	}
	if len(q.Metrics) > maxMetrics {
		return problem.Unprocessable("invalid_metric", "at most %d metrics at once", maxMetrics).WithField("query.metric", "too many")
	}
	return nil
}

// chooseBucket returns the bucket width, or raw.
func chooseBucket(q HistoryQuery) (time.Duration, bool, error) {
	span := q.To.Sub(q.From)
	switch q.Bucket {
	case "raw":
		return 0, true, nil
	case "", "auto":
		if span <= time.Hour {
			return 0, true, nil
		}
		for _, b := range autoBuckets {
			if span/b <= time.Duration(q.Limit) {
				return b, false, nil
			}
		}
		return autoBuckets[len(autoBuckets)-1], false, problem.Unprocessable("too_many_points",
			"the range is too long for %d points per series even with 7-day buckets; narrow it or raise limit", q.Limit)
	}
	width, err := parseWidth(q.Bucket)
	if err != nil {
		return 0, false, problem.Unprocessable("invalid_bucket", "bucket is raw, auto, or a width such as 10s, 5m, 1h, 1d").WithField("query.bucket", "invalid")
	}
	if n := span / width; n > time.Duration(q.Limit) {
		return 0, false, problem.Unprocessable("too_many_points", "%s buckets over this range make %d points per series, over the limit of %d; "+
			"use a wider bucket or raise limit", q.Bucket, n, q.Limit).WithField("query.bucket", "too narrow")
	}
	return width, false, nil
}

// parseWidth reads a bucket width: a Go duration ("90s", "5m", "1h30m") or days ("1d", "7d"),
// from 1 second to 366 days, in whole seconds.
func parseWidth(s string) (time.Duration, error) {
	if n, ok := strings.CutSuffix(s, "d"); ok {
		d, err := time.ParseDuration(n + "h")
		if err != nil {
			return 0, err
		}
		s = (d * 24).String()
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second || d > 366*day || d%time.Second != 0 {
		return 0, problem.Invalid("invalid_bucket", "invalid width")
	}
	return d, nil
}

func formatWidth(d time.Duration) string {
	switch {
	case d%day == 0:
		return strings.TrimSuffix((d/day).String(), "ns") + "d"
	case d%time.Hour == 0:
		return strings.TrimSuffix((d/time.Hour).String(), "ns") + "h"
	case d%time.Minute == 0:
		return strings.TrimSuffix((d/time.Minute).String(), "ns") + "m"
	}
	return strings.TrimSuffix((d/time.Second).String(), "ns") + "s"
}

func (s *Service) historyRaw(ctx context.Context, st *deviceState, q HistoryQuery, h *History) error {
	rows, err := s.pool.Query(ctx, `SELECT m, r.ts, r.value FROM unnest($3::text[]) AS m,
		LATERAL (SELECT ts, value FROM readings WHERE device_id = $1 AND tenant_id = $2 AND metric = m AND ts >= $4 AND ts < $5
			ORDER BY ts LIMIT $6) r
		ORDER BY m, r.ts`, st.id, st.tenant, q.Metrics, q.From, q.To, q.Limit+1)
	if err != nil {
		return db.Translate(err, "readings")
	}
	return collectSeries(rows, q, h)
}

func (s *Service) historyBuckets(ctx context.Context, st *deviceState, q HistoryQuery, width time.Duration, table string, h *History) error {
	timeCol, agg := "bucket", rollupAgg[q.Agg]
	if table == "readings" {
		timeCol, agg = "ts", rawAgg[q.Agg]
	}
	from := q.From.Truncate(width) // epoch-aligned, like date_bin's origin below
	sql := `SELECT metric, date_bin(make_interval(secs => $6), ` + timeCol + `, 'epoch') AS t, ` + agg + `
		FROM ` + pgx.Identifier{table}.Sanitize() + `
		WHERE device_id = $1 AND tenant_id = $2 AND metric = ANY($3) AND ` + timeCol + ` >= $4 AND ` + timeCol + ` < $5
		GROUP BY metric, t ORDER BY metric, t`
	rows, err := s.pool.Query(ctx, sql, st.id, st.tenant, q.Metrics, from, q.To, width.Seconds())
	if err != nil {
		return db.Translate(err, "readings")
	}
	return collectSeries(rows, q, h)
}

// collectSeries reads (metric, time, value) rows ordered by metric and time into one
// series per asked metric (empty ones included).
func collectSeries(rows pgx.Rows, q HistoryQuery, h *History) error {
	idx := map[string]int{}
	for _, m := range q.Metrics {
		idx[m] = len(h.Series)
		h.Series = append(h.Series, Series{Metric: m, Points: []Point{}})
	}
	defer rows.Close()
	for rows.Next() {
		var metric string
		var p Point
		var v *float64
		if err := rows.Scan(&metric, &p.Time, &v); err != nil {
			return db.Translate(err, "readings")
		}
		if v == nil {
			continue
		}
		p.Value, p.Time = *v, p.Time.UTC()
		sr := &h.Series[idx[metric]]
		if len(sr.Points) >= q.Limit {
			sr.Truncated = true
			continue
		}
		sr.Points = append(sr.Points, p)
	}
	return db.Translate(rows.Err(), "readings")
}
