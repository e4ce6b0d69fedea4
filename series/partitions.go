package series

import (
	"context"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// family is a partitioned table: a LIST partition per retention ("keep", in days), each
// split by RANGE into periods of span.
type family struct {
	table  string
	column string
	span   time.Duration
}

// The partitioned tables. Periods are aligned on the Unix epoch (so a "month" is 30 days).
var (
	famReadings = family{"readings", "ts", day}
	famMinute   = family{"readings_minute", "bucket", 7 * day}
	famHour     = family{"readings_hour", "bucket", 30 * day}
	families    = []family{famReadings, famMinute, famHour}
)

// periodsAhead is how many periods after the current one are created in advance.
const periodsAhead = 2

// dropGrace is how long past its retention a period's partition is kept before it is
// dropped: readings are refused once older than the retention, so nothing can be writing
// to it by then, even with clocks a little apart between nodes.
const dropGrace = day

func (f family) start(t time.Time) time.Time {
	span := int64(f.span / time.Second)
	u := t.Unix()
	return time.Unix(u-((u%span)+span)%span, 0).UTC()
}

func (f family) tier(keep int16) string { return fmt.Sprintf("%s_k%d", f.table, keep) }

func (f family) leaf(keep int16, start time.Time) string {
	return fmt.Sprintf("%s_k%d_p%s", f.table, keep, start.Format("20060102"))
}

var leafPattern = regexp.MustCompile(`^(readings|readings_minute|readings_hour)_k(\d+)_p(\d{8})$`)

// partitions creates and drops partitions, remembering which exist so that a commit
// checks them without asking the database.
type partitions struct {
	pool *pgxpool.Pool
	now  func() time.Time
	log  *slog.Logger

	mu    sync.Mutex
	known map[string]bool
	fast  map[period]bool // the known periods, for commits
}

func newPartitions(pool *pgxpool.Pool, now func() time.Time, log *slog.Logger) *partitions {
	return &partitions{pool: pool, now: now, log: log, known: map[string]bool{}, fast: map[period]bool{}}
}

// partitionLock serializes partition DDL across nodes.
const partitionLock int64 = 0x5374726174615061 // "StrataPa"

// load reads the existing partitions.
func (p *partitions) load(ctx context.Context) error {
	rows, err := p.pool.Query(ctx, `SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
		JOIN pg_class parent ON parent.oid = i.inhparent JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE n.nspname = current_schema() AND parent.relname LIKE 'readings%'`)
	if err != nil {
		return err
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	clear(p.known)
	clear(p.fast)
	for _, n := range names {
		p.known[n] = true
		if pd, ok := parseLeaf(n); ok {
			p.fast[pd] = true
		}
	}
	return nil
}

// parseLeaf reads a period partition's name.
func parseLeaf(name string) (period, bool) {
	m := leafPattern.FindStringSubmatch(name)
	if m == nil {
		return period{}, false
	}
	i := slices.IndexFunc(families, func(f family) bool { return f.table == m[1] })
	keep, err1 := strconv.ParseInt(m[2], 10, 16)
	start, err2 := time.Parse("20060102", m[3])
	if i < 0 || err1 != nil || err2 != nil {
		return period{}, false
	}
	return period{families[i], int16(keep), start.Unix()}, true
}

type period struct {
	fam   family
	keep  int16
	start int64 // Unix seconds
}

func (pd period) name() string { return pd.fam.leaf(pd.keep, time.Unix(pd.start, 0).UTC()) }

// ensureBatch makes sure every partition the batch writes to exists.
func (p *partitions) ensureBatch(ctx context.Context, batch []*message, now time.Time) error {
	var need []period
	p.mu.Lock()
	seen := map[period]bool{}
	for _, m := range batch {
		if len(m.points) == 0 {
			continue
		}
		ts := m.points[0].ts
		for _, pd := range []period{
			{famReadings, m.st.keep, famReadings.start(ts).Unix()},
			{famMinute, m.st.minuteKeep, famMinute.start(ts).Unix()},
			{famHour, m.st.hourKeep, famHour.start(ts).Unix()},
		} {
			if p.fast[pd] || seen[pd] {
				continue
			}
			// A rollup period past its retention is not written (see queueRollups).
			if pd.fam != famReadings && time.Unix(pd.start, 0).Add(pd.fam.span).Before(now.Add(-keepDuration(pd.keep))) {
				continue
			}
			seen[pd] = true
			need = append(need, pd)
		}
	}
	p.mu.Unlock()
	return p.create(ctx, need)
}

// create makes the given periods' partitions (and their retention's parent) if missing.
func (p *partitions) create(ctx context.Context, need []period) error {
	if len(need) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, partitionLock); err != nil {
			return err
		}
		tiers := map[string]bool{}
		for _, pd := range need {
			tier := pd.fam.tier(pd.keep)
			if !tiers[tier] {
				tiers[tier] = true
				if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES IN (%d) PARTITION BY RANGE (%s)`,
					pgx.Identifier{tier}.Sanitize(), pgx.Identifier{pd.fam.table}.Sanitize(), pd.keep, pgx.Identifier{pd.fam.column}.Sanitize())); err != nil {
					return err
				}
			}
			start := time.Unix(pd.start, 0).UTC()
			if _, err := tx.Exec(ctx, fmt.Sprintf(`CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')`,
				pgx.Identifier{pd.name()}.Sanitize(), pgx.Identifier{tier}.Sanitize(),
				start.Format(time.RFC3339), start.Add(pd.fam.span).Format(time.RFC3339))); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("creating partitions: %w", err)
	}
	p.mu.Lock()
	for _, pd := range need {
		p.known[pd.name()] = true
		p.fast[pd] = true
	}
	p.mu.Unlock()
	return nil
}

// ensureAhead creates, for each family and retention, the partitions from the current
// period through periodsAhead more.
func (p *partitions) ensureAhead(ctx context.Context, keeps map[family][]int16) error {
	now := p.now()
	var need []period
	p.mu.Lock()
	for _, f := range families {
		for _, k := range keeps[f] {
			for i := 0; i <= periodsAhead; i++ {
				pd := period{f, k, f.start(now.Add(time.Duration(i) * f.span)).Unix()}
				if !p.fast[pd] {
					need = append(need, pd)
				}
			}
		}
	}
	p.mu.Unlock()
	return p.create(ctx, need)
}

// ensureKeeps creates the partitions ahead for a tenant's (new) retentions.
func (p *partitions) ensureKeeps(ctx context.Context, raw, minute, hour int) error {
	return p.ensureAhead(ctx, map[family][]int16{famReadings: {int16(raw)}, famMinute: {int16(minute)}, famHour: {int16(hour)}})
}

// dropExpired drops every period partition whose whole range is older than its retention
// (plus dropGrace), and returns their names. Dropping a partition is instant and leaves no
// dead rows behind, unlike DELETE.
func (p *partitions) dropExpired(ctx context.Context) ([]string, error) {
	if err := p.load(ctx); err != nil {
		return nil, err
	}
	now := p.now()
	var expired []string
	p.mu.Lock()
	for name := range p.known {
		pd, ok := parseLeaf(name)
		if !ok {
			continue
		}
		if time.Unix(pd.start, 0).Add(pd.fam.span).Before(now.Add(-time.Duration(pd.keep)*day - dropGrace)) {
			expired = append(expired, name)
		}
	}
	p.mu.Unlock()
	slices.Sort(expired)
	var dropped []string
	for _, name := range expired {
		err := pgx.BeginFunc(ctx, p.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '5s'`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, partitionLock); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `DROP TABLE IF EXISTS `+pgx.Identifier{name}.Sanitize())
			return err
		})
		if err != nil {
			return dropped, fmt.Errorf("dropping partition %s: %w", name, err)
		}
		p.mu.Lock()
		delete(p.known, name)
		if pd, ok := parseLeaf(name); ok {
			delete(p.fast, pd)
		}
		p.mu.Unlock()
		dropped = append(dropped, name)
	}
	return dropped, nil
}
