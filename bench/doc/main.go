// Command doc measures the document store against raw PostgreSQL, in one run on one
// server (an embedded PostgreSQL with production durability: fsync and synchronous commit
// on):
//
//   - single create (document + version row + feed entry + audit row, one transaction) via
//     the Go API, against a bare single-row INSERT into a one-column JSONB table;
//
//   - NDJSON import against COPY of the same lines into a bare JSONB table;
//
//   - get by id over HTTP (keep-alive) against pgbench's prepared primary-key SELECT of the
//     same rows, at the same concurrency;
//
//   - point-in-time read of version 1 of a document with 1,000 versions (p50);
//
//   - a filtered list on an indexed path over -docs documents, a page of 50 (p50).
//
//     go run ./doc [-docs 1000000] [-c 8] [-d 10s] [-only create,import,get,pit,list] [-cpuprofile file]
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/bench/internal/harness"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/internal/server"
)

var (
	nDocs   = flag.Int("docs", 1_000_000, "documents in the filtered-list collection")
	nGet    = flag.Int("get-docs", 100_000, "documents for the get-by-id comparison")
	nImp    = flag.Int("import-docs", 200_000, "lines in the import comparison")
	conc    = flag.Int("c", 8, "concurrent clients for create and get")
	dur     = flag.Duration("d", 10*time.Second, "duration of each timed case")
	rounds  = flag.Int("rounds", 5, "interleaved rounds for timed comparisons")
	only    = flag.String("only", "", "run only these cases, comma-separated: create, import, get, pit, list")
	cpuProf = flag.String("cpuprofile", "", "write a CPU profile of the run (Strata and the load clients) to this file")
)

func main() {
	flag.Parse()
	ctx := context.Background()
	s, cleanup, err := harness.Platform(ctx, strata.Config{AdminPassword: "bench-admin-password"})
	if err != nil {
		fatal(err)
	}
	defer cleanup()
	sys := auth.System(ctx)
	tenant := newTenant(ctx, s, "bench")
	fmt.Printf("# Documents (GOMAXPROCS=%d, %s)\n\n", runtime.GOMAXPROCS(0), time.Now().UTC().Format(time.DateOnly))

	defer harness.CPUProfile(*cpuProf)()
	for _, c := range []struct {
		name string
		run  func(context.Context, *strata.Strata, context.Context, string)
	}{{"create", create}, {"import", importCmp}, {"get", getByID}, {"pit", pointInTime}, {"list", filteredList}} {
		if *only == "" || slices.Contains(strings.Split(*only, ","), c.name) {
			c.run(ctx, s, sys, tenant)
		}
	}
}

func newTenant(ctx context.Context, s *strata.Strata, name string) string {
	t, err := harness.Tenant(ctx, s, name)
	if err != nil {
		log.Fatal(err)
	}
	return t
}

func body(i int) string {
	return fmt.Sprintf(`{"title": "document %d", "status": "s%d", "n": %d, "tags": ["a", "b%d"], "text": "%s"}`,
		i, i%1000, i, i%7, strings.Repeat("lorem ipsum ", 10))
}

func mustExec(ctx context.Context, s *strata.Strata, sql string) {
	if _, err := s.Pool().Exec(ctx, sql); err != nil {
		log.Fatalf("%s: %v", sql, err)
	}
}

func create(ctx context.Context, s *strata.Strata, sys context.Context, tenant string) {
	if _, err := s.Docs().CollectionCreate(sys, tenant, doc.CollectionInput{Name: "creates"}); err != nil {
		fatal(err)
	}
	mustExec(ctx, s, `CREATE TABLE bench_bare (body jsonb)`)
	var n atomic.Int64
	rs := harness.Interleave(*rounds, *conc, *dur/time.Duration(*rounds),
		harness.Case{Name: "bare INSERT into a one-column jsonb table (baseline)", Op: func(ctx context.Context) error {
			_, err := s.Pool().Exec(ctx, `INSERT INTO bench_bare (body) VALUES ($1)`, body(int(n.Add(1))))
			return err
		}},
		harness.Case{Name: "DocCreate: document + version + feed + audit", Op: func(ctx context.Context) error {
			_, err := s.Docs().DocCreate(sys, tenant, "creates", doc.DocInput{Data: json.RawMessage(body(int(n.Add(1))))})
			return err
		}})
	fmt.Printf("## Single create via the Go API (%d clients, synchronous_commit on)\n\n", *conc)
	harness.Table(os.Stdout, rs[0], rs[1])
	fmt.Println()
}

func importCmp(ctx context.Context, s *strata.Strata, sys context.Context, tenant string) {
	var buf bytes.Buffer
	for i := range *nImp {
		buf.WriteString(body(i))
		buf.WriteByte('\n')
	}
	lines := buf.Bytes()
	mustExec(ctx, s, `CREATE TABLE bench_copy (body jsonb)`)
	var copyTimes, importTimes []time.Duration
	for r := range 3 {
		mustExec(ctx, s, `TRUNCATE bench_copy`)
		conn, err := s.Pool().Acquire(ctx)
		if err != nil {
			fatal(err)
		}
		start := time.Now()
		if _, err := conn.Conn().PgConn().CopyFrom(ctx, bytes.NewReader(lines), `COPY bench_copy (body) FROM STDIN`); err != nil {
			fatal(err)
		}
		copyTimes = append(copyTimes, time.Since(start))
		conn.Release()

		name := fmt.Sprintf("imports%d", r)
		if _, err := s.Docs().CollectionCreate(sys, tenant, doc.CollectionInput{Name: name}); err != nil {
			fatal(err)
		}
		start = time.Now()
		rep, err := s.Docs().DocImport(sys, tenant, name, bytes.NewReader(lines), doc.ImportOptions{})
		if err != nil || rep.Imported != int64(*nImp) {
			log.Fatalf("import: %+v %v", rep, err)
		}
		importTimes = append(importTimes, time.Since(start))
	}
	c, i := median(copyTimes), median(importTimes)
	fmt.Printf("## NDJSON import (%d lines, %.1f MB, median of 3)\n\n", *nImp, float64(len(lines))/1e6)
	fmt.Println("| case | time | docs/s | ratio to COPY |")
	fmt.Println("|---|---:|---:|---:|")
	fmt.Printf("| COPY into a bare jsonb table (baseline) | %s | %.0f | 1.00× |\n", c.Round(time.Millisecond), float64(*nImp)/c.Seconds())
	fmt.Printf("| DocImport (validation, versions, feed, audit) | %s | %.0f | %.2f× |\n\n", i.Round(time.Millisecond),
		float64(*nImp)/i.Seconds(), c.Seconds()/i.Seconds())
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}

func getByID(ctx context.Context, s *strata.Strata, sys context.Context, tenant string) {
	if _, err := s.Docs().CollectionCreate(sys, tenant, doc.CollectionInput{Name: "gets"}); err != nil {
		fatal(err)
	}
	var buf bytes.Buffer
	for i := range *nGet {
		fmt.Fprintf(&buf, `{"id": "d%d", "data": %s}`+"\n", i, body(i))
	}
	if _, err := s.Docs().DocImport(sys, tenant, "gets", &buf, doc.ImportOptions{Envelopes: true}); err != nil {
		fatal(err)
	}
	mustExec(ctx, s, `VACUUM ANALYZE strata.documents`)
	var collID string
	if err := s.Pool().QueryRow(ctx, `SELECT id FROM strata.collections WHERE name = 'gets'`).Scan(&collID); err != nil {
		fatal(err)
	}
	// The API over loopback HTTP.
	api := server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Auth: s.Auth(), Audit: s.Audit(), Feed: s.Feed(), Docs: s.Docs(), Version: "bench"})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		fatal(err)
	}
	srv := server.NewHTTPServer(server.Config{}, api, nil)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	_, secret, err := s.Auth().APIKeyCreate(sys, tenant, auth.APIKeyInput{Name: "bench", Role: auth.RoleViewer})
	if err != nil {
		fatal(err)
	}
	base := "http://" + ln.Addr().String() + "/v1/t/" + tenant + "/collections/gets/docs/d"
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc * 2}}
	get := func(ctx context.Context) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+strconv.Itoa(rand.IntN(*nGet)), nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	}
	harness.Load("warm", *conc, time.Second, 1<<40, get)
	httpRes := harness.Load("GET /docs/{id} over HTTP, Go net/http client in this process (API key auth)", *conc, *dur, 1<<40, get)
	wrkRPS, wrkP50, wrkP99, wrkErr := wrk(ctx, base, secret)
	pgb, err := pgbench(ctx, s, collID)
	if err != nil {
		fmt.Printf("pgbench not run: %v\n\n", err)
		return
	}
	fmt.Printf("## Get by id (%d documents, %d clients, keep-alive)\n\n", *nGet, *conc)
	fmt.Println("| case | requests/s | ratio to pgbench | p50 | p99 |")
	fmt.Println("|---|---:|---:|---:|---:|")
	fmt.Printf("| pgbench -M prepared: SELECT body by primary key (baseline) | %.0f | 1.00× | | |\n", pgb)
	if wrkErr != nil {
		fmt.Printf("| GET /docs/{id} over HTTP, wrk (not run: %v) | | | | |\n", wrkErr)
	} else {
		fmt.Printf("| GET /docs/{id} over HTTP, wrk in its own process as pgbench is (API key auth) | %.0f | %.2f× | %s | %s |\n", wrkRPS, wrkRPS/pgb, wrkP50, wrkP99)
	}
	fmt.Printf("| %s | %.0f | %.2f× | %s | %s |\n\n", httpRes.Name, httpRes.PerSecond(), httpRes.PerSecond()/pgb, httpRes.P50, httpRes.P99)
}

// wrkScript asks for a random document of the get collection each request.
const wrkScript = `math.randomseed(os.time())
request = function()
  return wrk.format("GET", "%s" .. math.random(0, %d), {["Authorization"] = "Bearer %s"})
end
`

var wrkRE = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// wrk loads base with the C load generator wrk (Debian's package), as pgbench loads
// PostgreSQL: its own process, the same concurrency, keep-alive. It answers requests/s and
// the p50 and p99 latencies.
func wrk(ctx context.Context, base, secret string) (rps float64, p50, p99 string, err error) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		return 0, "", "", errors.New("wrk not found (apt-get install wrk)")
	}
	u, path, _ := strings.Cut(strings.TrimPrefix(base, "http://"), "/")
	script := filepath.Join(os.TempDir(), "strata-bench-get.lua")
	if err := os.WriteFile(script, fmt.Appendf(nil, wrkScript, "/"+path, *nGet-1, secret), 0o600); err != nil {
		return 0, "", "", err
	}
	defer os.Remove(script)
	out, err := exec.CommandContext(ctx, bin, "-t", "2", "-c", strconv.Itoa(*conc), "-d", strconv.Itoa(int(dur.Seconds()))+"s",
		"--latency", "-s", script, "http://"+u).CombinedOutput()
	if err != nil {
		return 0, "", "", fmt.Errorf("%w: %s", err, out)
	}
	if bytes.Contains(out, []byte("Non-2xx")) {
		return 0, "", "", fmt.Errorf("wrk saw errors: %s", out)
	}
	m := wrkRE.FindSubmatch(out)
	if m == nil {
		return 0, "", "", fmt.Errorf("no Requests/sec in %s", out)
	}
	lat := func(p string) string {
		if m := regexp.MustCompile(`\s` + p + `%\s+(\S+)`).FindSubmatch(out); m != nil {
			return string(m[1])
		}
		return ""
	}
	rps, err = strconv.ParseFloat(string(m[1]), 64)
	return rps, lat("50"), lat("99"), err
}

var tpsRE = regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`)

// pgbench runs the prepared primary-key SELECT of the same rows over the same socket.
func pgbench(ctx context.Context, s *strata.Strata, collID string) (float64, error) {
	cfg := s.Pool().Config().ConnConfig
	bin, err := exec.LookPath("pgbench")
	if err != nil {
		matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pgbench")
		if len(matches) == 0 {
			return 0, fmt.Errorf("pgbench not found")
		}
		bin = matches[len(matches)-1]
	}
	script := filepath.Join(os.TempDir(), "strata-bench-get.sql")
	sql := fmt.Sprintf("\\set n random(0, %d)\nSELECT body FROM strata.documents WHERE collection_id = '%s' AND id = 'd' || :n;\n", *nGet-1, collID)
	if err := os.WriteFile(script, []byte(sql), 0o644); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, bin, "-n", "-M", "prepared", "-c", strconv.Itoa(*conc), "-j", "2", "-T", strconv.Itoa(int(dur.Seconds())),
		"-f", script, "-h", cfg.Host, "-p", strconv.Itoa(int(cfg.Port)), "-U", cfg.User, cfg.Database)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+cfg.Password)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("%w: %s", err, out)
	}
	m := tpsRE.FindSubmatch(out)
	if m == nil {
		return 0, fmt.Errorf("no tps in %s", out)
	}
	return strconv.ParseFloat(string(m[1]), 64)
}

func pointInTime(ctx context.Context, s *strata.Strata, sys context.Context, tenant string) {
	if _, err := s.Docs().CollectionCreate(sys, tenant, doc.CollectionInput{Name: "history"}); err != nil {
		fatal(err)
	}
	for i := range 1000 {
		if _, err := s.Docs().DocReplace(sys, tenant, "history", "long", json.RawMessage(body(i)), nil); err != nil {
			fatal(err)
		}
	}
	res := harness.Load("DocGetAt version 1 of 1,000", 1, 3*time.Second, 2000, func(ctx context.Context) error {
		d, err := s.Docs().DocGetAt(sys, tenant, "history", "long", doc.At{Version: 1})
		if err == nil && d.Version != 1 {
			err = fmt.Errorf("version %d", d.Version)
		}
		return err
	})
	mid := harness.Load("DocGetAt version 500 of 1,000", 1, 3*time.Second, 2000, func(ctx context.Context) error {
		_, err := s.Docs().DocGetAt(sys, tenant, "history", "long", doc.At{Version: 500})
		return err
	})
	fmt.Println("## Point-in-time read (a document with 1,000 versions)")
	fmt.Println()
	fmt.Println("| case | p50 | p99 | target |")
	fmt.Println("|---|---:|---:|---|")
	fmt.Printf("| %s | %s | %s | p50 < 5 ms |\n| %s | %s | %s | |\n\n", res.Name, res.P50, res.P99, mid.Name, mid.P50, mid.P99)
}

func filteredList(ctx context.Context, s *strata.Strata, sys context.Context, tenant string) {
	if _, err := s.Docs().CollectionCreate(sys, tenant, doc.CollectionInput{Name: "million", Indexes: []string{"status"}}); err != nil {
		fatal(err)
	}
	start := time.Now()
	pr, pw := io.Pipe()
	go func() {
		for i := range *nDocs {
			fmt.Fprintln(pw, body(i))
		}
		pw.Close()
	}()
	rep, err := s.Docs().DocImport(sys, tenant, "million", pr, doc.ImportOptions{})
	if err != nil {
		fatal(err)
	}
	loaded := time.Since(start)
	for {
		c, err := s.Docs().CollectionGet(sys, tenant, "million")
		if err != nil {
			fatal(err)
		}
		if c.Indexes[0].Status == "ready" {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	indexed := time.Since(start) - loaded
	mustExec(ctx, s, `ANALYZE strata.documents`)
	res := harness.Load("DocList status = \"sN\", page of 50", 1, *dur, 5000, func(ctx context.Context) error {
		p, err := s.Docs().DocList(sys, tenant, "million", doc.Query{Filter: fmt.Sprintf(`status = "s%d"`, rand.IntN(1000)), Limit: 50})
		if err == nil && len(p.Items) != 50 {
			err = fmt.Errorf("%d items", len(p.Items))
		}
		return err
	})
	fmt.Printf("## Filtered list on an indexed path (%d documents: imported in %s, index built in %s)\n\n", rep.Imported,
		loaded.Round(time.Second), indexed.Round(time.Second))
	fmt.Println("| case | p50 | p99 | target |")
	fmt.Println("|---|---:|---:|---|")
	fmt.Printf("| %s | %s | %s | p50 < 10 ms |\n\n", res.Name, res.P50, res.P99)
	_ = pgx.Identifier{}
}

// fatal stops the benchmark, printing the whole cause chain.
func fatal(err error) {
	msg := err.Error()
	for e := errors.Unwrap(err); e != nil; e = errors.Unwrap(e) {
		msg += "\n  caused by: " + e.Error()
	}
	log.Fatal(msg)
}
