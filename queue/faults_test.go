package queue_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/embedpg"
	"github.com/stratadb/strata/internal/migrate"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/queue"
)

// The test binary doubles as a worker process: with STRATA_QUEUE_WORKER set it runs a
// queue.Worker against STRATA_QUEUE_DB until SIGTERM (a graceful stop) or SIGKILL.
const (
	envWorker = "STRATA_QUEUE_WORKER" // "kill" or "many"
	envDB     = "STRATA_QUEUE_DB"
	envTenant = "STRATA_QUEUE_TENANT"
)

// ranRecord is one handler run, as a worker process reports it.
type ranRecord struct {
	id           int64
	queue, group string
	start, end   time.Time
}

// workerMain runs the test binary as a worker process when asked to by the environment.
func workerMain() bool {
	mode := os.Getenv(envWorker)
	if mode == "" {
		return false
	}
	if err := runWorkerProcess(mode); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	os.Exit(0)
	return true
}

func runWorkerProcess(mode string) error {
	ctx := context.Background()
	pool, err := db.Connect(ctx, os.Getenv(envDB), &db.Options{MaxConns: 16})
	if err != nil {
		return err
	}
	defer pool.Close()
	listener := db.NewListener(pool, nil)
	listener.Start()
	defer listener.Close()
	a := auth.New(pool, listener, audit.New(pool, nil), auth.Config{})
	if err := a.Start(ctx); err != nil {
		return err
	}
	defer a.Close()
	c := queue.New(pool, a, listener, queue.Config{Lease: 2 * time.Second, PollInterval: 100 * time.Millisecond})
	bg, stopBG := context.WithCancel(ctx)
	defer stopBG()
	go c.Run(bg)

	var mu sync.Mutex
	var ran []ranRecord
	pid := os.Getpid()
	queues := map[string]int{"fault": 20}
	if mode == "many" {
		queues = map[string]int{"plain": 50, "fifo": 30, "limited": 10}
	}
	w := c.NewWorker(queue.WorkerConfig{Tenant: os.Getenv(envTenant), Queues: queues, Lease: 2 * time.Second})
	handler := func(ctx context.Context, j *queue.Job) error {
		start := time.Now()
		switch {
		case mode == "kill":
			if _, err := pool.Exec(ctx, `INSERT INTO ran (job_id, pid) VALUES ($1, $2)`, j.ID, pid); err != nil {
				return err
			}
			time.Sleep(time.Duration(20+rand.IntN(20)) * time.Millisecond)
		case j.Queue == "fifo":
			time.Sleep(time.Duration(rand.IntN(1500)) * time.Microsecond)
		case j.Queue == "limited":
			time.Sleep(3 * time.Millisecond)
		}
		mu.Lock()
		ran = append(ran, ranRecord{id: int64(j.ID), queue: j.Queue, group: j.GroupKey, start: start, end: time.Now()})
		mu.Unlock()
		return nil
	}
	w.Handle("work", handler)
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	if err := w.Start(auth.System(ctx)); err != nil {
		return err
	}
	fmt.Println("ready")
	<-term
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := w.Stop(sctx); err != nil {
		return err
	}
	if mode != "many" {
		return nil
	}
	rows := make([][]any, len(ran))
	for i, r := range ran {
		rows[i] = []any{r.id, pid, r.queue, r.group, r.start, r.end}
	}
	_, err = pool.CopyFrom(ctx, pgx.Identifier{"ran"}, []string{"job_id", "pid", "queue", "grp", "started", "ended"}, pgx.CopyFromRows(rows))
	return err
}

// workerProcess is a worker running as a child process.
type workerProcess struct {
	cmd  *exec.Cmd
	done chan error
}

func startWorkerProcess(t *testing.T, mode, url, tenant string) *workerProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envWorker+"="+mode, envDB+"="+url, envTenant+"="+tenant)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &workerProcess{cmd: cmd, done: make(chan error, 1)}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.TrimSpace(line) != "ready" {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("worker process said %q (%v)", line, err)
	}
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
	})
	return p
}

// stop ends the process gracefully and waits for it.
func (p *workerProcess) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("worker process: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("worker process did not stop")
	}
}

// waitFor polls cond until it holds or the time runs out.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// A worker process killed with SIGKILL in the middle of jobs: the jobs it held are
// re-delivered once their lease runs out (2s here), every job's handler ran, and every
// job completed exactly once.
func TestKillWorkerProcess(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{ReapInterval: 100 * time.Millisecond})
	ctx := e.ctx
	url := e.Pool.Config().ConnString()
	if _, err := e.Pool.Exec(ctx, `CREATE TABLE public.ran (job_id bigint NOT NULL, pid int NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const n = 1500
	in := make([]queue.JobInput, n)
	for i := range in {
		in[i] = queue.JobInput{Kind: "work"}
	}
	if _, err := e.q.JobPushMany(ctx, e.Tenant, "fault", in); err != nil {
		t.Fatal(err)
	}
	a := startWorkerProcess(t, "kill", url, e.Tenant)
	deadline := time.Now().Add(30 * time.Second)
	for e.count(t, `SELECT count(DISTINCT job_id) FROM public.ran`) < 300 {
		if time.Now().After(deadline) {
			t.Fatal("the first worker did not run 300 jobs in 30s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	a.done <- nil
	killed := time.Now()
	held := e.count(t, `SELECT count(*) FROM jobs WHERE state = 'running'`)
	b := startWorkerProcess(t, "kill", url, e.Tenant)
	waitFor(t, 60*time.Second, "every job to complete", func() bool {
		return e.count(t, `SELECT count(*) FROM job_history WHERE state = 'completed'`) == n
	})
	b.stop(t)
	if left := e.count(t, `SELECT count(*) FROM jobs`); left != 0 {
		t.Fatalf("%d jobs left in the queue", left)
	}
	if missing := e.count(t, `SELECT count(*) FROM job_history h WHERE NOT EXISTS (SELECT 1 FROM public.ran r WHERE r.job_id = h.id)`); missing != 0 {
		t.Fatalf("%d jobs completed without their handler running", missing)
	}
	if other := e.count(t, `SELECT count(*) FROM job_history WHERE state <> 'completed'`); other != 0 {
		t.Fatalf("%d jobs did not complete", other)
	}
	again := e.count(t, `SELECT count(*) FROM job_history WHERE attempt > 1`)
	twice := e.count(t, `SELECT count(*) FROM (SELECT job_id FROM public.ran GROUP BY job_id HAVING count(*) > 1) x`)
	t.Logf("killed with %d jobs running; %d re-delivered, %d handlers ran twice", held, again, twice)
	// (A completion the killed process had already sent may still commit.)
	if held == 0 || again == 0 || again > held {
		t.Fatalf("%d jobs were running at the kill, %d were re-delivered", held, again)
	}
	var lastRedelivered time.Time
	if err := e.Pool.QueryRow(ctx, `SELECT max(started_at) FROM job_history WHERE attempt > 1`).Scan(&lastRedelivered); err != nil {
		t.Fatal(err)
	}
	if d := lastRedelivered.Sub(killed); d > 2*time.Second+5*time.Second {
		t.Fatalf("the last held job was re-delivered %s after the kill; lease 2s", d)
	}
}

// PostgreSQL restarts in the middle of a run: workers reconnect and finish, no job is
// lost and none completes twice.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	cl := testdb.Cluster(t)
	ctx := context.Background()
	dataDir := filepath.Dir(cl.DataDir())
	url := cl.URL("postgres")
	pool, err := db.Connect(ctx, url, &db.Options{MaxConns: 8, Wait: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := migrate.Up(ctx, pool, slog.New(slog.DiscardHandler), queue.Schema); err != nil {
		t.Fatal(err)
	}
	tenant := uuid.NewString()
	if _, err := pool.Exec(ctx, `INSERT INTO tenants (id, name) VALUES ($1, 'restart')`, tenant); err != nil {
		t.Fatal(err)
	}
	listener := db.NewListener(pool, nil)
	listener.Start()
	defer listener.Close()
	a := auth.New(pool, listener, audit.New(pool, nil), auth.Config{})
	if err := a.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := queue.New(pool, a, listener, queue.Config{Lease: 3 * time.Second, ReapInterval: 200 * time.Millisecond, PollInterval: 100 * time.Millisecond})
	bg, stopBG := context.WithCancel(ctx)
	bgDone := make(chan struct{})
	go func() { c.Run(bg); close(bgDone) }()
	defer func() { stopBG(); <-bgDone }()
	sys := auth.System(ctx)

	const n = 3000
	in := make([]queue.JobInput, n)
	for i := range in {
		in[i] = queue.JobInput{Kind: "work"}
	}
	if _, err := c.JobPushMany(sys, tenant, "r", in); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	ran := map[queue.JobID]int{}
	w := c.NewWorker(queue.WorkerConfig{Tenant: tenant, Queues: map[string]int{"r": 16}})
	w.Handle("work", func(_ context.Context, j *queue.Job) error {
		time.Sleep(2 * time.Millisecond)
		mu.Lock()
		ran[j.ID]++
		mu.Unlock()
		return nil
	})
	if err := w.Start(sys); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop(context.Background()) }()
	ranCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(ran)
	}
	waitFor(t, 30*time.Second, "500 jobs to run", func() bool { return ranCount() >= 500 })
	if err := cl.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	down := ranCount()
	time.Sleep(1500 * time.Millisecond)
	cl2, err := embedpg.Start(ctx, embedpg.Options{DataDir: dataDir, Settings: testdb.FastSettings, Database: "postgres"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cl2.Stop(context.Background()) }()
	count := func(sql string) int {
		var k int
		if err := pool.QueryRow(ctx, sql).Scan(&k); err != nil {
			return -1
		}
		return k
	}
	waitFor(t, 60*time.Second, "every job to complete after the restart", func() bool {
		return count(`SELECT count(*) FROM job_history WHERE state = 'completed'`) == n
	})
	if err := w.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left := count(`SELECT count(*) FROM jobs`); left != 0 {
		t.Fatalf("%d jobs left", left)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(ran) != n {
		t.Fatalf("%d of %d jobs' handlers ran", len(ran), n)
	}
	twice := 0
	for _, k := range ran {
		if k > 1 {
			twice++
		}
	}
	t.Logf("%d jobs had run when the database went down; %d handlers ran twice (re-delivered)", down, twice)
	if down >= n {
		t.Fatal("the restart happened after the run: the test proved nothing")
	}
}

// manyJobs is the job count of TestTwoProcessesManyJobs: 100,000 (about 10 seconds on
// two cores), or 20,000 under -short or the race detector, unless STRATA_QUEUE_FULL=1.
func manyJobs() int {
	if (testing.Short() || raceEnabled) && os.Getenv("STRATA_QUEUE_FULL") != "1" {
		return 20000
	}
	return 100000
}

// Two worker processes with many workers each: every job's handler ran, every job
// completed exactly once, FIFO groups never overlapped and ran in push order, and the
// limited queue never ran more than its cap at once nor started more than its rate in
// any one-second window.
func TestTwoProcessesManyJobs(t *testing.T) {
	t.Parallel()
	e := setup(t, queue.Config{})
	ctx := e.ctx
	url := e.Pool.Config().ConnString()
	if _, err := e.Pool.Exec(ctx, `CREATE TABLE public.ran (job_id bigint NOT NULL, pid int NOT NULL, queue text NOT NULL,
		grp text NOT NULL, started timestamptz NOT NULL, ended timestamptz NOT NULL)`); err != nil {
		t.Fatal(err)
	}
	const maxRunning, maxRate = 4, 150
	five, rate := maxRunning, maxRate
	if _, err := e.q.QueueUpdate(ctx, e.Tenant, "limited", queue.QueueSettings{MaxRunning: &five, MaxStartsPerSecond: &rate}); err != nil {
		t.Fatal(err)
	}
	total := manyJobs()
	const groups, perGroup, limited = 40, 25, 600
	plain := total - groups*perGroup - limited
	a := startWorkerProcess(t, "many", url, e.Tenant)
	b := startWorkerProcess(t, "many", url, e.Tenant)
	start := time.Now()
	// Push while the workers run: groups interleaved, in batches.
	var fifo []queue.JobInput
	for i := range perGroup {
		for g := range groups {
			fifo = append(fifo, queue.JobInput{Kind: "work", GroupKey: fmt.Sprintf("g%d", g), Payload: []byte(strconv.Itoa(i))})
		}
	}
	for i := 0; i < len(fifo); i += 100 {
		if _, err := e.q.JobPushMany(ctx, e.Tenant, "fifo", fifo[i:i+100]); err != nil {
			t.Fatal(err)
		}
	}
	lim := make([]queue.JobInput, limited)
	for i := range lim {
		lim[i] = queue.JobInput{Kind: "work"}
	}
	if _, err := e.q.JobPushMany(ctx, e.Tenant, "limited", lim); err != nil {
		t.Fatal(err)
	}
	for pushed := 0; pushed < plain; pushed += 5000 {
		in := make([]queue.JobInput, min(5000, plain-pushed))
		for i := range in {
			in[i] = queue.JobInput{Kind: "work"}
		}
		if _, err := e.q.JobPushMany(ctx, e.Tenant, "plain", in); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 5*time.Minute, "every job to complete", func() bool {
		return e.count(t, `SELECT count(*) FROM job_history`) == total
	})
	elapsed := time.Since(start)
	a.stop(t)
	b.stop(t)

	if left := e.count(t, `SELECT count(*) FROM jobs`); left != 0 {
		t.Fatalf("%d jobs left", left)
	}
	if bad := e.count(t, `SELECT count(*) FROM job_history WHERE state <> 'completed'`); bad != 0 {
		t.Fatalf("%d jobs did not complete", bad)
	}
	if missing := e.count(t, `SELECT count(*) FROM job_history h WHERE NOT EXISTS (SELECT 1 FROM public.ran r WHERE r.job_id = h.id)`); missing != 0 {
		t.Fatalf("%d jobs completed without their handler running", missing)
	}
	runs, pids := e.count(t, `SELECT count(*) FROM public.ran`), e.count(t, `SELECT count(DISTINCT pid) FROM public.ran`)
	if pids != 2 {
		t.Fatalf("jobs ran in %d processes, want both", pids)
	}

	// FIFO groups: one at a time, in push order.
	rows, err := e.Pool.Query(ctx, `SELECT r.grp, r.job_id, r.started, r.ended, (j.payload #>> '{}')::int
		FROM public.ran r JOIN job_history j ON j.id = r.job_id WHERE r.queue = 'fifo' ORDER BY r.grp, r.started`)
	if err != nil {
		t.Fatal(err)
	}
	type run struct {
		grp        string
		id         int64
		start, end time.Time
		seq        int
	}
	fifoRuns, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (run, error) {
		var x run
		err := r.Scan(&x.grp, &x.id, &x.start, &x.end, &x.seq)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(fifoRuns) != groups*perGroup {
		t.Fatalf("%d FIFO runs, want %d", len(fifoRuns), groups*perGroup)
	}
	for i := 1; i < len(fifoRuns); i++ {
		p, q := fifoRuns[i-1], fifoRuns[i]
		if p.grp != q.grp {
			if q.seq != 0 {
				t.Fatalf("group %s started with job #%d", q.grp, q.seq)
			}
			continue
		}
		if q.start.Before(p.end) {
			t.Fatalf("group %s: job %d started at %s before job %d ended at %s", q.grp, q.id, q.start, p.id, p.end)
		}
		if q.seq != p.seq+1 {
			t.Fatalf("group %s: job #%d ran after #%d", q.grp, q.seq, p.seq)
		}
	}
	// Limited queue: running at once (handler intervals lie inside the database's), and
	// starts per sliding second (the claim times the database recorded).
	rows, err = e.Pool.Query(ctx, `SELECT started, ended FROM public.ran WHERE queue = 'limited'`)
	if err != nil {
		t.Fatal(err)
	}
	type edge struct {
		at time.Time
		d  int
	}
	var edges []edge
	var s, en time.Time
	if _, err := pgx.ForEachRow(rows, []any{&s, &en}, func() error {
		edges = append(edges, edge{s, 1}, edge{en, -1})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(edges, func(x, y edge) int {
		if c := x.at.Compare(y.at); c != 0 {
			return c
		}
		return x.d - y.d // ends before starts at the same instant
	})
	peak, cur := 0, 0
	for _, ed := range edges {
		cur += ed.d
		peak = max(peak, cur)
	}
	if peak > maxRunning {
		t.Fatalf("the limited queue ran %d jobs at once; its cap is %d", peak, maxRunning)
	}
	var starts []time.Time
	rows, _ = e.Pool.Query(ctx, `SELECT h.started_at FROM job_history h JOIN queues q ON q.id = h.queue_id WHERE q.name = 'limited' ORDER BY 1`)
	starts, err = pgx.CollectRows(rows, pgx.RowTo[time.Time])
	if err != nil {
		t.Fatal(err)
	}
	peakRate := 0
	for i, j := 0, 0; i < len(starts); i++ {
		for j < len(starts) && starts[j].Before(starts[i].Add(time.Second)) {
			j++
		}
		peakRate = max(peakRate, j-i)
	}
	if peakRate > maxRate {
		t.Fatalf("the limited queue started %d jobs within one second; its rate is %d", peakRate, maxRate)
	}
	t.Logf("%d jobs in %s (%.0f/s) by 2 processes: %d handler runs; FIFO: %d groups × %d in order, no overlap; "+
		"limited: peak %d running (cap %d), peak %d starts in a second (cap %d)",
		total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), runs, groups, perGroup, peak, maxRunning, peakRate, maxRate)
	if peak < 2 || peakRate < maxRate/2 {
		t.Fatalf("the limits were never approached (peak %d running, %d/s): the test proved nothing", peak, peakRate)
	}
}
