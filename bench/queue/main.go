// Command queue measures Strata's job queue side by side with River
// (github.com/riverqueue/river) against the same PostgreSQL in one run, each with a no-op
// worker: burn-down of pre-inserted jobs, continuous insert and work, pick-up latency at
// a fixed offered rate, and batch-push speed.
//
//	go run ./queue [-n 200000] [-d 30s] [-rate 1000] [-latency-d 10s] [-rounds 2]
//
// River runs with the settings of its own benchmark (riverbench: FetchCooldown 2ms,
// FetchPollInterval 20ms, 2,000 workers), inserting in batches of 5,000. Strata runs its
// Worker with -conc jobs at once and pushes in the same batches.
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"math"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/bench/internal/harness"
	"github.com/stratadb/strata/queue"
)

var (
	total      = flag.Int("n", 200000, "jobs pre-inserted for the burn-down")
	dur        = flag.Duration("d", 30*time.Second, "duration of the continuous insert+work run")
	rate       = flag.Int("rate", 1000, "jobs per second offered in the latency run")
	latDur     = flag.Duration("latency-d", 10*time.Second, "duration of the latency run")
	rounds     = flag.Int("rounds", 2, "rounds of each case, alternating which system goes first")
	conc       = flag.Int("conc", 1000, "Strata worker concurrency")
	riverConc  = flag.Int("river-workers", 2000, "River MaxWorkers (its own benchmark uses 2000)")
	batch      = flag.Int("batch", 5000, "insert batch size")
	only       = flag.String("only", "", "run only this case: burndown, continuous, latency, push")
	profile    = flag.String("cpuprofile", "", "write a CPU profile of the whole run here")
	strataOnly = flag.Bool("strata-only", false, "measure Strata alone (no ratios)")
	stats      = flag.Bool("stats", false, "print the job tables' sizes and dead rows every 5s")
)

const queueName = "bench"

func main() {
	flag.Parse()
	ctx := context.Background()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			log.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Fatal(err)
		}
		defer pprof.StopCPUProfile()
	}
	s, cleanup, err := harness.Platform(ctx, strata.Config{AdminPassword: "bench-admin-password", MaxConns: 32})
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	p, err := s.Auth().Authenticate(ctx, "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:bench-admin-password")), "")
	if err != nil {
		log.Fatal(err)
	}
	actx := auth.WithPrincipal(ctx, p)
	ten, err := s.Auth().TenantCreate(actx, "bench")
	if err != nil {
		log.Fatal(err)
	}
	rpool, err := pgxpool.NewWithConfig(ctx, riverPoolConfig(s.Pool().Config().ConnString()))
	if err != nil {
		log.Fatal(err)
	}
	defer rpool.Close()
	mig, err := rivermigrate.New(riverpgxv5.New(rpool), nil)
	if err != nil {
		log.Fatal(err)
	}
	if _, err := mig.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		log.Fatal(err)
	}
	st := &strataSys{s: s, ctx: actx, tenant: ten.ID}
	rv := &riverSys{pool: rpool}
	systems := []system{st, rv}
	if *strataOnly {
		systems = []system{st, st}
	}
	fmt.Printf("machine: %d cores; PostgreSQL %s; Strata concurrency %d, River MaxWorkers %d; batches of %d\n\n",
		numCPU(), serverVersion(ctx, s.Pool()), *conc, *riverConc, *batch)

	type row struct {
		name  string
		vals  map[string][]float64
		unit  string
		lower bool // lower is better
	}
	var results []row
	add := func(name, unit string, lower bool, f func(system) float64) {
		r := row{name: name, unit: unit, lower: lower, vals: map[string][]float64{}}
		for i := range *rounds {
			order := systems
			if i%2 == 1 {
				order = []system{systems[1], systems[0]}
			}
			for _, sys := range order {
				v := f(sys)
				fmt.Printf("  %-32s %-7s round %d: %.1f %s\n", name, sys.name(), i+1, v, unit)
				r.vals[sys.name()] = append(r.vals[sys.name()], v)
			}
		}
		results = append(results, r)
	}
	// Warm up both (WAL segments, caches, plans), unmeasured.
	for _, sys := range systems {
		sys.reset(ctx)
		sys.pushMany(ctx, 20000)
		stop := sys.start(ctx, func(int64, int64) {}, false)
		for sys.left(ctx) > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		stop()
	}
	if *only == "" || *only == "push" {
		add("batch push", "jobs/s", false, func(sys system) float64 { return batchPush(ctx, sys) })
	}
	if *only == "" || *only == "burndown" {
		add(fmt.Sprintf("burn-down of %d jobs", *total), "jobs/s", false, func(sys system) float64 { return burnDown(ctx, sys) })
	}
	if *only == "" || *only == "continuous" {
		add(fmt.Sprintf("continuous insert+work, %s", *dur), "jobs/s", false, func(sys system) float64 { return continuous(ctx, sys) })
	}
	if *only == "" || *only == "latency" {
		type lats struct{ pickup, e2e []time.Duration }
		all := map[string][]lats{}
		for i := range *rounds {
			order := systems
			if i%2 == 1 {
				order = []system{systems[1], systems[0]}
			}
			for _, sys := range order {
				p, e := latency(ctx, sys)
				fmt.Printf("  %-32s %-7s round %d: pick-up p50 %.2f ms p99 %.2f ms; end to end p50 %.2f ms p99 %.2f ms (%d jobs)\n",
					"latency", sys.name(), i+1, ms(pct(p, .5)), ms(pct(p, .99)), ms(pct(e, .5)), ms(pct(e, .99)), len(e))
				all[sys.name()] = append(all[sys.name()], lats{p, e})
			}
		}
		for _, c := range []struct {
			name string
			p    float64
			e2e  bool
		}{{"pick-up latency p50", .5, false}, {"pick-up latency p99", .99, false}, {"end-to-end latency p50", .5, true}, {"end-to-end latency p99", .99, true}} {
			r := row{name: fmt.Sprintf("%s at %d/s", c.name, *rate), unit: "ms", lower: true, vals: map[string][]float64{}}
			for name, ls := range all {
				for _, l := range ls {
					d := l.pickup
					if c.e2e {
						d = l.e2e
					}
					r.vals[name] = append(r.vals[name], ms(pct(d, c.p)))
				}
			}
			results = append(results, r)
		}
	}
	// Each round measures both systems back to back; the ratio is the median of the
	// rounds' ratios, which a shared machine's drift between rounds affects least.
	fmt.Println("\n| case | Strata (median) | River (median) | Strata ÷ River (median of rounds) | rounds' ratios |")
	fmt.Println("|---|---:|---:|---:|---|")
	for _, r := range results {
		a, b := median(r.vals["Strata"]), median(r.vals["River"])
		var ratios []float64
		var each []string
		for i := range min(len(r.vals["Strata"]), len(r.vals["River"])) {
			ratios = append(ratios, r.vals["Strata"][i]/r.vals["River"][i])
			each = append(each, fmt.Sprintf("%.2f", ratios[i]))
		}
		note := ""
		if r.lower {
			note = " (lower is better)"
		}
		fmt.Printf("| %s | %s %s | %s %s | %.2f×%s | %s |\n", r.name, num(a), r.unit, num(b), r.unit, median(ratios), note,
			strings.Join(each, ", "))
	}
}

func riverPoolConfig(dsn string) *pgxpool.Config {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		log.Fatal(err)
	}
	cfg.MaxConns = 32 // the same as Strata's pool
	delete(cfg.ConnConfig.RuntimeParams, "search_path")
	return cfg
}

// system is one queue under test.
type system interface {
	name() string
	reset(ctx context.Context)
	// pushMany inserts n no-op jobs in batches.
	pushMany(ctx context.Context, n int)
	// start starts workers that call fn for each job with its payload's t (unix ns).
	// (Strata decodes the payload only when decode is set; River always decodes its
	// arguments: its API hands handlers typed arguments.)
	start(ctx context.Context, fn func(id, t int64), decode bool) (stop func())
	// pushOne inserts one job carrying t and returns its id.
	pushOne(ctx context.Context, t int64) (int64, error)
	// stats describes the job table's size and dead rows.
	stats(ctx context.Context) string
	// left is how many jobs are not yet completed (in the database).
	left(ctx context.Context) int
}

type payload struct {
	T int64 `json:"t"`
}

// --- Strata

type strataSys struct {
	s      *strata.Strata
	ctx    context.Context
	tenant string
}

func (*strataSys) name() string { return "Strata" }

func (x *strataSys) reset(ctx context.Context) {
	for _, q := range []string{"TRUNCATE strata.jobs, strata.job_history", "VACUUM FULL strata.jobs", "VACUUM FULL strata.job_history", "CHECKPOINT"} {
		if _, err := x.s.Pool().Exec(ctx, q); err != nil {
			log.Fatal(err)
		}
	}
}

func (x *strataSys) pushMany(_ context.Context, n int) {
	in := make([]queue.JobInput, 0, *batch)
	for done := 0; done < n; done += len(in) {
		in = in[:0]
		for range min(*batch, n-done) {
			in = append(in, queue.JobInput{Kind: "noop", Payload: json.RawMessage(`{"t":0}`)})
		}
		if _, err := x.s.Queue().JobPushMany(x.ctx, x.tenant, queueName, in); err != nil {
			log.Fatal(err)
		}
	}
}

func (x *strataSys) start(_ context.Context, fn func(int64, int64), decode bool) func() {
	w := x.s.Queue().NewWorker(queue.WorkerConfig{Tenant: x.tenant, Queues: map[string]int{queueName: *conc}})
	w.Handle("noop", func(_ context.Context, j *queue.Job) error {
		var p payload
		if decode { // a no-op reads its payload only when the latency run needs it
			_ = json.Unmarshal(j.Payload, &p)
		}
		fn(int64(j.ID), p.T)
		return nil
	})
	if err := w.Start(x.ctx); err != nil {
		log.Fatal(err)
	}
	return func() { _ = w.Stop(context.Background()) }
}

func (x *strataSys) pushOne(_ context.Context, t int64) (int64, error) {
	b, _ := json.Marshal(payload{T: t})
	p, err := x.s.Queue().JobPush(x.ctx, x.tenant, queueName, queue.JobInput{Kind: "noop", Payload: b})
	return int64(p.ID), err
}

func (x *strataSys) left(ctx context.Context) int {
	var n int
	if err := x.s.Pool().QueryRow(ctx, `SELECT count(*) FROM strata.jobs`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	return n
}

func (x *strataSys) stats(ctx context.Context) string {
	return tableStats(ctx, x.s.Pool(), "strata", "jobs")
}

func tableStats(ctx context.Context, pool *pgxpool.Pool, schema, table string) string {
	var live, dead, autovac, vac int64
	var heap, idx string
	err := pool.QueryRow(ctx, `SELECT n_live_tup, n_dead_tup, autovacuum_count, vacuum_count,
			pg_size_pretty(pg_relation_size(relid)), pg_size_pretty(pg_indexes_size(relid))
		FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = $2`, schema, table).Scan(&live, &dead, &autovac, &vac, &heap, &idx)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("live %d dead %d autovacuums %d vacuums %d heap %s indexes %s", live, dead, autovac, vac, heap, idx)
}

// --- River

type riverSys struct {
	pool *pgxpool.Pool
	ins  *river.Client[pgx.Tx]
}

type noopArgs struct {
	T int64 `json:"t"`
}

func (noopArgs) Kind() string { return "noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	fn func(int64, int64)
}

func (w *noopWorker) Work(_ context.Context, j *river.Job[noopArgs]) error {
	w.fn(j.ID, j.Args.T)
	return nil
}

func (*riverSys) name() string { return "River" }

func (x *riverSys) client(fn func(int64, int64)) *river.Client[pgx.Tx] {
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{fn: fn})
	c, err := river.NewClient[pgx.Tx](riverpgxv5.New(x.pool), &river.Config{
		FetchCooldown:     2 * time.Millisecond,
		FetchPollInterval: 20 * time.Millisecond,
		Queues:            map[string]river.QueueConfig{river.QueueDefault: {MaxWorkers: *riverConc}},
		Workers:           workers,
		Logger:            quietLogger(),
	})
	if err != nil {
		log.Fatal(err)
	}
	return c
}

func (x *riverSys) reset(ctx context.Context) {
	for _, q := range []string{"TRUNCATE river_job", "VACUUM FULL river_job", "CHECKPOINT"} {
		if _, err := x.pool.Exec(ctx, q); err != nil {
			log.Fatal(err)
		}
	}
	if x.ins == nil {
		x.ins = x.client(func(int64, int64) {})
	}
}

func (x *riverSys) pushMany(ctx context.Context, n int) {
	params := make([]river.InsertManyParams, 0, *batch)
	for done := 0; done < n; done += len(params) {
		params = params[:0]
		for range min(*batch, n-done) {
			params = append(params, river.InsertManyParams{Args: noopArgs{}})
		}
		if _, err := x.ins.InsertMany(ctx, params); err != nil {
			log.Fatal(err)
		}
	}
}

func (x *riverSys) start(ctx context.Context, fn func(int64, int64), _ bool) func() {
	c := x.client(fn)
	if err := c.Start(ctx); err != nil {
		log.Fatal(err)
	}
	return func() { _ = c.Stop(context.Background()) }
}

func (x *riverSys) pushOne(ctx context.Context, t int64) (int64, error) {
	r, err := x.ins.Insert(ctx, noopArgs{T: t}, nil)
	if err != nil {
		return 0, err
	}
	return r.Job.ID, nil
}

func (x *riverSys) stats(ctx context.Context) string {
	return tableStats(ctx, x.pool, "public", "river_job")
}

func (x *riverSys) left(ctx context.Context) int {
	var n int
	if err := x.pool.QueryRow(ctx, `SELECT count(*) FROM river_job WHERE state <> 'completed'`).Scan(&n); err != nil {
		log.Fatal(err)
	}
	return n
}

// --- cases

// batchPush is jobs/s of pushing *total jobs in batches into an empty queue.
func batchPush(ctx context.Context, sys system) float64 {
	sys.reset(ctx)
	n := *total
	start := time.Now()
	sys.pushMany(ctx, n)
	return float64(n) / time.Since(start).Seconds()
}

// burnDown is jobs/s of working *total pre-inserted jobs: from the workers' start to the
// last completion recorded in the database.
func burnDown(ctx context.Context, sys system) float64 {
	sys.reset(ctx)
	sys.pushMany(ctx, *total)
	start := time.Now()
	stop := sys.start(ctx, func(int64, int64) {}, false)
	defer watch(ctx, sys)()
	defer stop()
	for sys.left(ctx) > 0 {
		if time.Since(start) > 10*time.Minute {
			log.Fatalf("%s: burn-down did not finish in 10 minutes", sys.name())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return float64(*total) / time.Since(start).Seconds()
}

// continuous is jobs/s worked over *dur while a producer keeps a backlog of jobs
// inserted in batches (as River's benchmark does).
func continuous(ctx context.Context, sys system) float64 {
	sys.reset(ctx)
	var worked, inserted atomic.Int64
	const minBacklog = 20000
	sys.pushMany(ctx, minBacklog)
	inserted.Store(minBacklog)
	stopProducer := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stopProducer:
				return
			case <-time.After(20 * time.Millisecond):
			}
			for inserted.Load()-worked.Load() < minBacklog {
				sys.pushMany(ctx, *batch)
				inserted.Add(int64(*batch))
			}
		}
	})
	start := time.Now()
	stop := sys.start(ctx, func(int64, int64) { worked.Add(1) }, false)
	defer watch(ctx, sys)()
	time.Sleep(*dur)
	n := worked.Load()
	elapsed := time.Since(start)
	stop()
	close(stopProducer)
	wg.Wait()
	return float64(n) / elapsed.Seconds()
}

// latency measures, at *rate jobs a second offered by a steady producer (single pushes
// from 16 goroutines) over *latDur, the time from a job's push being acknowledged
// (committed) to its handler starting ("pick-up"), and from the moment it was offered
// to its handler starting ("end to end": the push itself, and any wait for a free
// pusher, included).
func latency(ctx context.Context, sys system) (pickup, endToEnd []time.Duration) {
	sys.reset(ctx)
	var mu sync.Mutex
	started := map[int64]time.Time{}
	returned := map[int64]time.Time{}
	stop := sys.start(ctx, func(id, t int64) {
		now := time.Now()
		mu.Lock()
		started[id] = now
		endToEnd = append(endToEnd, now.Sub(time.Unix(0, t)))
		mu.Unlock()
	}, true)
	time.Sleep(500 * time.Millisecond) // workers settle
	ticks := make(chan int64, 100000)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for t := range ticks {
				id, err := sys.pushOne(ctx, t)
				if err != nil {
					log.Fatal(err)
				}
				now := time.Now()
				mu.Lock()
				returned[id] = now
				mu.Unlock()
			}
		})
	}
	interval := time.Second / time.Duration(*rate)
	begin := time.Now()
	n := int(*latDur / interval)
	for i := range n {
		time.Sleep(time.Until(begin.Add(time.Duration(i) * interval)))
		ticks <- time.Now().UnixNano()
	}
	close(ticks)
	wg.Wait()
	deadline := time.Now().Add(60 * time.Second)
	for {
		mu.Lock()
		got := len(started)
		mu.Unlock()
		if got >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	for id, at := range started {
		if r, ok := returned[id]; ok {
			pickup = append(pickup, max(at.Sub(r), 0))
		}
	}
	slices.Sort(pickup)
	slices.Sort(endToEnd)
	return pickup, endToEnd
}

// watch prints table statistics every 5s with -stats, until the returned func is called.
func watch(ctx context.Context, sys system) func() {
	if !*stats {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(5 * time.Second):
			}
			fmt.Printf("    %s: %s\n", sys.name(), sys.stats(ctx))
		}
	}()
	return func() { close(done) }
}

func pct(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[int(math.Min(float64(len(s)-1), p*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func num(v float64) string {
	if v >= 100 {
		return commas(int64(math.Round(v)))
	}
	return fmt.Sprintf("%.2f", v)
}

func commas(n int64) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func numCPU() int { return runtime.NumCPU() }

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func serverVersion(ctx context.Context, pool *pgxpool.Pool) string {
	var v string
	_ = pool.QueryRow(ctx, "SHOW server_version").Scan(&v)
	return v
}
