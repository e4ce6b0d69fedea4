package series

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
)

// The statements of a commit. Arrays are sorted by key in Go, so that concurrent
// committers on several nodes take row locks in the same order and never deadlock.
const (
	sqlLatest = `INSERT INTO readings_latest AS l (tenant_id, device_id, metric, ts, value, updated_at)
		SELECT t, d, m, ts, v, now() FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::float8[]) AS u(t, d, m, ts, v)
		ON CONFLICT (tenant_id, device_id, metric) DO UPDATE SET ts = excluded.ts, value = excluded.value, updated_at = excluded.updated_at
		WHERE excluded.ts >= l.ts`
	sqlRollup = `INSERT INTO %s AS r (tenant_id, device_id, metric, bucket, keep, count, min, max, sum, last, last_ts)
		SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::int2[], $6::int8[], $7::float8[], $8::float8[],
			$9::float8[], $10::float8[], $11::timestamptz[])
		ON CONFLICT (device_id, metric, bucket, keep) DO UPDATE SET count = r.count + excluded.count, min = least(r.min, excluded.min),
			max = greatest(r.max, excluded.max), sum = r.sum + excluded.sum,
			last = CASE WHEN excluded.last_ts >= r.last_ts THEN excluded.last ELSE r.last END, last_ts = greatest(r.last_ts, excluded.last_ts)`
	sqlCounters = `INSERT INTO series_counters AS c (tenant_id, name, value, updated_at)
		SELECT t, n, v, now() FROM unnest($1::uuid[], $2::text[], $3::int8[]) AS u(t, n, v)
		ON CONFLICT (tenant_id, name) DO UPDATE SET value = c.value + excluded.value, updated_at = excluded.updated_at`
	// sqlRejects takes each tenant's slots from its counter "reject_seq" and writes the
	// rejected messages into them: a ring of $11 slots per tenant, oldest overwritten.
	sqlRejects = `WITH seq AS (
			INSERT INTO series_counters AS c (tenant_id, name, value)
			SELECT t, 'reject_seq', count(*) FROM unnest($1::uuid[]) AS u(t) GROUP BY t ORDER BY t
			ON CONFLICT (tenant_id, name) DO UPDATE SET value = c.value + excluded.value, updated_at = now()
			RETURNING tenant_id, value
		), x AS (
			SELECT * FROM unnest($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[], $9::timestamptz[],
				$10::int8[]) AS u(t, i, d, src, reason, detail, topic, payload, received, n)
		)
		INSERT INTO reading_rejects AS r (tenant_id, slot, seq, device_id, source, reason, detail, topic, payload, received_at)
		SELECT x.t, ((seq.value - x.n + x.i) % $11)::int, seq.value - x.n + x.i + 1, NULLIF(x.d, '')::uuid, x.src, x.reason, x.detail,
			x.topic, x.payload, x.received
		FROM x JOIN seq ON seq.tenant_id = x.t
		ON CONFLICT (tenant_id, slot) DO UPDATE SET seq = excluded.seq, device_id = excluded.device_id, source = excluded.source,
			reason = excluded.reason, detail = excluded.detail, topic = excluded.topic, payload = excluded.payload, received_at = excluded.received_at`
	sqlDuplicates = `SELECT d, m, ts FROM unnest($1::uuid[], $2::text[], $3::timestamptz[]) AS u(d, m, ts)
		WHERE EXISTS (SELECT 1 FROM readings r WHERE r.device_id = u.d AND r.metric = u.m AND r.ts = u.ts)`
	notifyCommits = "strata_series_commits"
)

const day = 24 * time.Hour

func keepDuration(days int16) time.Duration { return time.Duration(days) * day }

// commit writes a batch in one transaction: readings by binary COPY, rollups, latest
// values, rejected messages and counters, and a notification for other nodes.
func (s *Service) commit(ctx context.Context, batch []*message) error {
	now := s.now()
	for _, m := range batch { // a reading held back (PostgreSQL down) may have outlived its retention
		if len(m.points) > 0 && m.points[0].ts.Before(now.Add(-keepDuration(m.st.keep))) {
			m.reject(ReasonTooOld, "outlived the raw retention while waiting for PostgreSQL")
		}
	}
	if err := s.parts.ensureBatch(ctx, batch, now); err != nil {
		return err
	}
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	if err := s.dropDuplicates(ctx, tx, batch); err != nil {
		return err
	}
	if n := countPoints(batch); n > 0 {
		if _, err := tx.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(encodeReadings(batch, n)), copyReadings); err != nil {
			return err
		}
		s.metrics.batchRows.Observe(float64(n))
	}
	for _, m := range batch {
		if m.audit != nil {
			if err := audit.Record(m.audit.ctx, tx, m.audit.entry); err != nil {
				return err
			}
		}
	}
	b := &pgx.Batch{}
	s.queueLatest(b, batch)
	s.queueRollups(b, batch, now)
	s.queueRejects(b, batch)
	s.queueCounters(b, batch)
	if payload := s.commitNotice(batch); payload != "" {
		b.Queue(`SELECT pg_notify($1, $2)`, notifyCommits, payload)
	}
	if b.Len() > 0 {
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return err
		}
	}
	return tx.Commit(ctx)
}

func countPoints(batch []*message) int {
	n := 0
	for _, m := range batch {
		n += len(m.points)
	}
	return n
}

// copyReadings is the COPY the committer streams readings into, in PostgreSQL's binary
// format (encodeReadings): no text conversions on either side.
const copyReadings = `COPY readings (tenant_id, device_id, ts, value, keep, metric) FROM STDIN (FORMAT binary)`

// pgEpoch is where PostgreSQL's binary timestamps count from, in Unix microseconds.
const pgEpoch = 946684800 * 1000000

// encodeReadings writes the batch's n readings as a binary COPY stream: a header, then per
// row the field count and each field's length and bytes (uuid, uuid, timestamptz as
// microseconds since 2000, float8, int2, text), then the trailer.
func encodeReadings(batch []*message, n int) []byte {
	b := make([]byte, 0, 19+n*(2+4*6+16+16+8+8+2+16)+2)
	b = append(b, "PGCOPY\n\xff\r\n\x00"...)
	b = binary.BigEndian.AppendUint32(b, 0) // flags
	b = binary.BigEndian.AppendUint32(b, 0) // header extension
	for _, m := range batch {
		for i := range m.points {
			p := &m.points[i]
			b = binary.BigEndian.AppendUint16(b, 6)
			b = binary.BigEndian.AppendUint32(b, 16)
			b = append(b, m.tenant[:]...)
			b = binary.BigEndian.AppendUint32(b, 16)
			b = append(b, m.device[:]...)
			b = binary.BigEndian.AppendUint32(b, 8)
			b = binary.BigEndian.AppendUint64(b, uint64(p.ts.UnixMicro()-pgEpoch))
			b = binary.BigEndian.AppendUint32(b, 8)
			b = binary.BigEndian.AppendUint64(b, math.Float64bits(p.value))
			b = binary.BigEndian.AppendUint32(b, 2)
			b = binary.BigEndian.AppendUint16(b, uint16(m.st.keep))
			b = binary.BigEndian.AppendUint32(b, uint32(len(p.metric)))
			b = append(b, p.metric...)
		}
	}
	return binary.BigEndian.AppendUint16(b, 0xffff) // trailer: -1
}

type pointKey struct {
	device uuid.UUID
	metric string
	ts     int64
}

// dropDuplicates removes, from messages that may be redeliveries, the readings already
// stored (same device, metric and time) or already earlier in this batch.
func (s *Service) dropDuplicates(ctx context.Context, tx pgx.Tx, batch []*message) error {
	if !slices.ContainsFunc(batch, func(m *message) bool { return m.dup && len(m.points) > 0 }) {
		return nil
	}
	seen := map[pointKey]bool{}
	var ds [][16]byte
	var ms []string
	var ts []time.Time
	for _, m := range batch {
		for _, p := range m.points {
			if m.dup {
				ds, ms, ts = append(ds, [16]byte(m.device)), append(ms, p.metric), append(ts, p.ts)
			} else {
				seen[pointKey{m.device, p.metric, p.ts.UnixMicro()}] = true
			}
		}
	}
	rows, err := tx.Query(ctx, sqlDuplicates, ds, ms, ts)
	if err != nil {
		return err
	}
	stored := map[pointKey]bool{}
	for rows.Next() {
		var d [16]byte
		var m string
		var t time.Time
		if err := rows.Scan(&d, &m, &t); err != nil {
			rows.Close()
			return err
		}
		stored[pointKey{uuid.UUID(d), m, t.UnixMicro()}] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, m := range batch {
		if !m.dup || len(m.points) == 0 {
			continue
		}
		kept := m.points[:0]
		for _, p := range m.points {
			k := pointKey{m.device, p.metric, p.ts.UnixMicro()}
			if stored[k] || seen[k] {
				s.metrics.duplicates.Inc()
				continue
			}
			seen[k] = true
			kept = append(kept, p)
		}
		m.points = kept
	}
	return nil
}

type seriesKey struct {
	tenant, device uuid.UUID
	metric         string
}

type latestValue struct {
	ts    time.Time
	value float64
}

// newestPerSeries reduces the batch to each series' newest reading.
func newestPerSeries(batch []*message) map[seriesKey]latestValue {
	out := map[seriesKey]latestValue{}
	for _, m := range batch {
		for _, p := range m.points {
			k := seriesKey{m.tenant, m.device, p.metric}
			if cur, ok := out[k]; !ok || !p.ts.Before(cur.ts) {
				out[k] = latestValue{p.ts, p.value}
			}
		}
	}
	return out
}

func compareSeries(a, b seriesKey) int {
	if c := compareUUID(a.tenant, b.tenant); c != 0 {
		return c
	}
	if c := compareUUID(a.device, b.device); c != 0 {
		return c
	}
	return strings.Compare(a.metric, b.metric)
}

func compareUUID(a, b uuid.UUID) int { return slices.Compare(a[:], b[:]) }

func (s *Service) queueLatest(b *pgx.Batch, batch []*message) {
	newest := newestPerSeries(batch)
	if len(newest) == 0 {
		return
	}
	keys := make([]seriesKey, 0, len(newest))
	for k := range newest {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareSeries)
	ts, ds, ms := make([][16]byte, len(keys)), make([][16]byte, len(keys)), make([]string, len(keys))
	at, vs := make([]time.Time, len(keys)), make([]float64, len(keys))
	for i, k := range keys {
		ts[i], ds[i], ms[i], at[i], vs[i] = k.tenant, k.device, k.metric, newest[k].ts, newest[k].value
	}
	b.Queue(sqlLatest, ts, ds, ms, at, vs)
}

type rollupKey struct {
	device uuid.UUID
	metric string
	bucket int64
	keep   int16
}

type rollup struct {
	tenant              uuid.UUID
	count               int64
	min, max, sum, last float64
	lastTS              time.Time
}

func (r *rollup) add(p point) {
	if r.count == 0 {
		r.min, r.max = p.value, p.value
	}
	r.count++
	r.min, r.max, r.sum = min(r.min, p.value), max(r.max, p.value), r.sum+p.value
	if r.count == 1 || !p.ts.Before(r.lastTS) {
		r.last, r.lastTS = p.value, p.ts
	}
}

// queueRollups aggregates the batch per minute and per hour and queues upserts that merge
// them into the rollup tables. Buckets already past their retention are left out.
func (s *Service) queueRollups(b *pgx.Batch, batch []*message, now time.Time) {
	for _, f := range []struct {
		table string
		width time.Duration
		keep  func(*deviceState) int16
	}{
		{"readings_minute", time.Minute, func(st *deviceState) int16 { return st.minuteKeep }},
		{"readings_hour", time.Hour, func(st *deviceState) int16 { return st.hourKeep }},
	} {
		aggs := map[rollupKey]*rollup{}
		for _, m := range batch {
			if len(m.points) == 0 {
				continue
			}
			keep := f.keep(m.st)
			bucket := m.points[0].ts.Truncate(f.width)
			if bucket.Add(f.width).Before(now.Add(-keepDuration(keep))) {
				continue
			}
			for _, p := range m.points {
				k := rollupKey{m.device, p.metric, bucket.Unix(), keep}
				r := aggs[k]
				if r == nil {
					r = &rollup{tenant: m.tenant}
					aggs[k] = r
				}
				r.add(p)
			}
		}
		if len(aggs) == 0 {
			continue
		}
		keys := make([]rollupKey, 0, len(aggs))
		for k := range aggs {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, func(a, b rollupKey) int {
			if c := compareUUID(a.device, b.device); c != 0 {
				return c
			}
			if c := strings.Compare(a.metric, b.metric); c != 0 {
				return c
			}
			if a.bucket != b.bucket {
				return int(a.bucket - b.bucket)
			}
			return int(a.keep) - int(b.keep)
		})
		n := len(keys)
		tenants, devices, metrics := make([][16]byte, n), make([][16]byte, n), make([]string, n)
		buckets, keeps, counts := make([]time.Time, n), make([]int16, n), make([]int64, n)
		mins, maxs, sums, lasts, lastTS := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]time.Time, n)
		for i, k := range keys {
			r := aggs[k]
			tenants[i], devices[i], metrics[i], buckets[i], keeps[i] = r.tenant, k.device, k.metric, time.Unix(k.bucket, 0).UTC(), k.keep
			counts[i], mins[i], maxs[i], sums[i], lasts[i], lastTS[i] = r.count, r.min, r.max, r.sum, r.last, r.lastTS
		}
		b.Queue(strings.Replace(sqlRollup, "%s", f.table, 1), tenants, devices, metrics, buckets, keeps, counts, mins, maxs, sums, lasts, lastTS)
	}
}

// queueRejects writes the batch's rejected messages of known tenants into their rings,
// at most RejectsPerTenant per tenant (the newest).
func (s *Service) queueRejects(b *pgx.Batch, batch []*message) {
	per := map[uuid.UUID][]*message{}
	for _, m := range batch {
		if m.reason != "" && m.tenant != uuid.Nil {
			per[m.tenant] = append(per[m.tenant], m)
		}
	}
	if len(per) == 0 {
		return
	}
	tenantIDs := make([]uuid.UUID, 0, len(per))
	for t := range per {
		tenantIDs = append(tenantIDs, t)
	}
	slices.SortFunc(tenantIDs, compareUUID)
	var ts [][16]byte
	var idx, counts []int64
	var devices, sources, reasons, details, topics []string
	var payloads [][]byte
	var received []time.Time
	for _, t := range tenantIDs {
		ms := per[t]
		if len(ms) > s.cfg.RejectsPerTenant {
			ms = ms[len(ms)-s.cfg.RejectsPerTenant:]
		}
		for i, m := range ms {
			dev := ""
			if m.device != uuid.Nil {
				dev = m.device.String()
			}
			ts, idx, counts = append(ts, t), append(idx, int64(i)), append(counts, int64(len(ms)))
			devices, sources, reasons = append(devices, dev), append(sources, string(m.source)), append(reasons, m.reason)
			details, topics = append(details, m.detail), append(topics, truncate(m.topic, 500))
			payloads, received = append(payloads, m.payload), append(received, m.received)
		}
	}
	b.Queue(sqlRejects, ts, idx, devices, sources, reasons, details, topics, payloads, received, counts, s.cfg.RejectsPerTenant)
}

// queueCounters adds the batch to each tenant's counters: messages and readings stored,
// rejections by reason.
func (s *Service) queueCounters(b *pgx.Batch, batch []*message) {
	type key struct {
		tenant uuid.UUID
		name   string
	}
	counts := map[key]int64{}
	for _, m := range batch {
		if m.tenant == uuid.Nil {
			continue
		}
		if m.reason != "" {
			counts[key{m.tenant, "rejected:" + m.reason}]++
			continue
		}
		counts[key{m.tenant, "messages"}]++
		counts[key{m.tenant, "readings"}] += int64(len(m.points))
	}
	if len(counts) == 0 {
		return
	}
	keys := make([]key, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := compareUUID(a.tenant, b.tenant); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	ts, names, vals := make([][16]byte, len(keys)), make([]string, len(keys)), make([]int64, len(keys))
	for i, k := range keys {
		ts[i], names[i], vals[i] = k.tenant, k.name, counts[k]
	}
	b.Queue(sqlCounters, ts, names, vals)
}

// maxNotice bounds the commit notification (PostgreSQL allows 8000 bytes).
const maxNotice = 7800

// commitNotice tells other nodes which series changed, so they drop cached latest values
// and feed their live streams: "<node>|d|<tenant>.<device>,…" listing devices, or
// "<node>|t|<tenant>,…" when too many devices changed, or "<node>|*".
func (s *Service) commitNotice(batch []*message) string {
	enc := base64.RawURLEncoding
	devices := map[[2]uuid.UUID]bool{}
	tenants := map[uuid.UUID]bool{}
	for _, m := range batch {
		if len(m.points) > 0 {
			devices[[2]uuid.UUID{m.tenant, m.device}] = true
			tenants[m.tenant] = true
		}
	}
	if len(devices) == 0 {
		return ""
	}
	var sb strings.Builder
	sb.WriteString(s.cfg.NodeID + "|d|")
	first := true
	for k := range devices {
		if !first {
			sb.WriteByte(',')
		}
		first = false
		sb.WriteString(enc.EncodeToString(k[0][:]) + "." + enc.EncodeToString(k[1][:]))
		if sb.Len() > maxNotice {
			break
		}
	}
	if sb.Len() <= maxNotice {
		return sb.String()
	}
	sb.Reset()
	sb.WriteString(s.cfg.NodeID + "|t|")
	first = true
	for t := range tenants {
		if !first {
			sb.WriteByte(',')
		}
		first = false
		sb.WriteString(enc.EncodeToString(t[:]))
	}
	if sb.Len() <= maxNotice {
		return sb.String()
	}
	return s.cfg.NodeID + "|*"
}
