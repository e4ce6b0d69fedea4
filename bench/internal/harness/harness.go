// Package harness is what the side-by-side benchmarks share: a platform on a real
// PostgreSQL (embedded, production settings, in a temporary data dir — or the one named by
// STRATA_TEST_DATABASE_URL), bounded load loops, and a markdown report.
package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
)

// Platform opens Strata for a benchmark and returns it with a cleanup. cfg's DataDir and
// DatabaseURL are filled in.
func Platform(ctx context.Context, cfg strata.Config) (*strata.Strata, func(), error) {
	var dir string
	if u := os.Getenv("STRATA_TEST_DATABASE_URL"); u != "" && cfg.DatabaseURL == "" {
		cfg.DatabaseURL = u
	} else {
		d, err := os.MkdirTemp("", "strata-bench-")
		if err != nil {
			return nil, nil, err
		}
		_ = os.Chmod(d, 0o711) // as root, PostgreSQL runs as another user
		dir = filepath.Join(d, "data")
		cfg.DataDir = dir
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := strata.Open(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return s, func() {
		_ = s.Close()
		if dir != "" {
			_ = os.RemoveAll(filepath.Dir(dir))
		}
	}, nil
}

// Tenant creates a tenant, as the platform administrator "admin", and returns its id.
func Tenant(ctx context.Context, s *strata.Strata, name string) (string, error) {
	admin, err := s.Auth().UserByName(ctx, "admin")
	if err != nil {
		return "", err
	}
	t, err := s.Auth().TenantCreate(auth.WithPrincipal(ctx, &auth.Principal{UserID: admin.ID, Username: "admin", PlatformAdmin: true}), name)
	return t.ID, err
}

// Result is one measured load.
type Result struct {
	Name     string
	Ops      int64
	Elapsed  time.Duration
	P50, P99 time.Duration
	Errors   int64
}

// PerSecond is the throughput.
func (r Result) PerSecond() float64 { return float64(r.Ops) / r.Elapsed.Seconds() }

// Load runs op from workers goroutines until d passes or maxOps ops are done, and returns
// the throughput and latency percentiles. Failed ops are counted, not timed.
func Load(name string, workers int, d time.Duration, maxOps int64, op func(ctx context.Context) error) Result {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var done, failed atomic.Int64
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil && done.Load() < maxOps {
				t := time.Now()
				if err := op(ctx); err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				lat[w] = append(lat[w], time.Since(t))
				done.Add(1)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return Result{Name: name, Ops: done.Load(), Elapsed: elapsed, P50: pct(all, 0.50), P99: pct(all, 0.99), Errors: failed.Load()}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[int(math.Min(float64(len(sorted)-1), p*float64(len(sorted))))]
}

// Table writes results as a markdown table with each result's throughput as a ratio to
// the baseline's.
func Table(w io.Writer, baseline Result, results ...Result) {
	fmt.Fprintln(w, "| case | ops/s | ratio to baseline | p50 | p99 | errors |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|")
	for _, r := range append([]Result{baseline}, results...) {
		fmt.Fprintf(w, "| %s | %.0f | %.2f× | %s | %s | %d |\n", r.Name, r.PerSecond(), r.PerSecond()/baseline.PerSecond(),
			round(r.P50), round(r.P99), r.Errors)
	}
}

func round(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
	default:
		return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
	}
}

// Case is one named load for Interleave.
type Case struct {
	Name string
	Op   func(ctx context.Context) error
}

// Interleave runs the cases in turn, rounds times, each for d per round, and merges each
// case's rounds. Taking turns spreads a shared machine's drift (other load, GC, caches)
// across all cases instead of charging it to whichever ran at the wrong moment.
func Interleave(rounds, workers int, d time.Duration, cases ...Case) []Result {
	out := make([]Result, len(cases))
	for i, c := range cases {
		out[i].Name = c.Name
	}
	lats := make([][]time.Duration, len(cases))
	for range rounds {
		for i, c := range cases {
			r, l := loadWithLatencies(c.Name, workers, d, c.Op)
			out[i].Ops += r.Ops
			out[i].Elapsed += r.Elapsed
			out[i].Errors += r.Errors
			lats[i] = append(lats[i], l...)
		}
	}
	for i := range out {
		slices.Sort(lats[i])
		out[i].P50, out[i].P99 = pct(lats[i], 0.50), pct(lats[i], 0.99)
	}
	return out
}

func loadWithLatencies(name string, workers int, d time.Duration, op func(ctx context.Context) error) (Result, []time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var done, failed atomic.Int64
	lat := make([][]time.Duration, workers)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				t := time.Now()
				if err := op(ctx); err != nil {
					if ctx.Err() == nil {
						failed.Add(1)
					}
					continue
				}
				lat[w] = append(lat[w], time.Since(t))
				done.Add(1)
			}
		})
	}
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	return Result{Name: name, Ops: done.Load(), Elapsed: time.Since(start), Errors: failed.Load()}, all
}

// Generate streams what write produces (buffered, from its own goroutine), for imports of
// generated data that would not fit in memory as one string.
func Generate(write func(w io.Writer)) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		bw := bufio.NewWriterSize(pw, 1<<20)
		write(bw)
		_ = bw.Flush()
		_ = pw.Close()
	}()
	return pr
}

// CPUProfile starts a CPU profile into path ("" profiles nothing) and returns the call
// that stops it; a benchmark that cannot write its profile stops at once.
func CPUProfile(path string) (stop func()) {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		log.Fatalf("cpu profile: %v", err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
