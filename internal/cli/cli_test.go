package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	stratapkg "github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/internal/cli"
	"github.com/stratadb/strata/internal/testdb"
)

// With STRATA_CLI_MAIN=1 the test binary is the strata command, so tests can signal a real
// process.
func TestMain(m *testing.M) {
	if os.Getenv("STRATA_CLI_MAIN") == "1" {
		os.Exit(cli.Main())
	}
	testdb.Main(m)
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// strata runs the CLI in-process with the given environment and returns its exit code,
// stdout and stderr.
func strata(ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	var out, errOut syncBuffer
	code := cli.Run(ctx, args, cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &errOut,
		Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
	return code, out.String(), errOut.String()
}

func TestVersion(t *testing.T) {
	t.Parallel()
	code, out, _ := strata(context.Background(), nil, "version")
	if code != 0 || !strings.HasPrefix(out, "strata ") || !strings.Contains(out, "go1.") {
		t.Fatalf("exit %d, output %q", code, out)
	}
}

func TestConfigPrecedenceAndRedaction(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "strata.toml")
	conf := "http-addr = \"10.0.0.1:1\"\ndatabase_url = \"postgres://app:filepw@db/app\"\nlog-level = \"warn\"\ndata-dir = \"/from/file\"\n"
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"STRATA_CONFIG": file, "STRATA_HTTP_ADDR": "10.0.0.2:2"}
	code, out, errOut := strata(context.Background(), env, "config", "--log-level", "debug")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`"10.0.0.2:2"`, "env STRATA_HTTP_ADDR", // env beats file
		`"debug"`, "flag --log-level", // flag beats file
		`"/from/file"`, "file " + file, // file beats default
		"postgres://app:xxxxx@db/app", // secret redacted
		`"60s"`, "default",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("config output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "filepw") {
		t.Errorf("config output shows the password:\n%s", out)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	badFile := filepath.Join(t.TempDir(), "bad.toml")
	_ = os.WriteFile(badFile, []byte("htp-addr = \"x\"\n"), 0o600)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--no-such-flag"}, "unknown flag: --no-such-flag"},
		{[]string{"frobnicate"}, "unknown command"},
		{[]string{"serve", "--http-addr", "nonsense"}, "--http-addr (STRATA_HTTP_ADDR): \"nonsense\" is not host:port"},
		{[]string{"serve", "--database-wait", "soon"}, "--database-wait (STRATA_DATABASE_WAIT)"},
		{[]string{"serve", "--log-level", "loud"}, "--log-level (STRATA_LOG_LEVEL)"},
		{[]string{"serve", "--graph-memory-edges", "lots"}, "--graph-memory-edges (STRATA_GRAPH_MEMORY_EDGES): \"lots\" is not a whole number"},
		{[]string{"config", "--config", badFile}, `unknown setting "htp-addr"`},
		{[]string{"migrate"}, "up or status"},
	}
	for _, c := range cases {
		code, _, errOut := strata(context.Background(), nil, c.args...)
		if code != 2 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "goroutine ") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 mentioning %q", c.args, code, errOut, c.want)
		}
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestServeFailsClearly(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "a-file")
	_ = os.WriteFile(file, nil, 0o600)
	unusedDir := filepath.Join(t.TempDir(), "never-created")
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"port in use", []string{"--http-addr", busy.Addr().String(), "--data-dir", unusedDir}, "already in use"},
		{"data dir is a file", []string{"--http-addr", "127.0.0.1:0", "--data-dir", file}, "is not a directory"},
		{"database down", []string{"--http-addr", "127.0.0.1:0", "--database-wait", "300ms",
			"--database-url", "postgres://app:hunter2@" + freeAddr(t) + "/app"}, "cannot reach PostgreSQL"},
	}
	for _, c := range cases {
		code, _, errOut := strata(context.Background(), nil, append([]string{"serve", "--log-level", "error"}, c.args...)...)
		if code != 1 || !strings.Contains(errOut, c.want) || strings.Contains(errOut, "hunter2") || strings.Contains(errOut, "goroutine ") {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 mentioning %q", c.name, code, errOut, c.want)
		}
	}
	if _, err := os.Stat(unusedDir); err == nil {
		t.Error("a serve that could not bind its port created the data dir anyway")
	}
}

// readyURL waits for serve's "strata is ready" log line and returns its URL and the
// embedded PostgreSQL's pid (0 when external).
func readyURL(t *testing.T, logs interface{ String() string }) (string, int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		for _, line := range strings.Split(logs.String(), "\n") {
			var rec struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
				PID int    `json:"postgres_pid"`
			}
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "strata is ready" {
				return rec.URL, rec.PID
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("strata never became ready; logs:\n%s", logs.String())
	return "", 0
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestServeExternalDatabase(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- cli.Run(ctx, []string{"serve", "--http-addr", "127.0.0.1:0", "--log-format", "json",
			"--database-url", testdb.NewURL(t), "--data-dir", t.TempDir()},
			cli.IO{Stdout: io.Discard, Stderr: &logs, Env: func(string) (string, bool) { return "", false }})
	}()
	url, pid := readyURL(t, &logs)
	if pid != 0 {
		t.Errorf("external database, yet an embedded postgres pid %d", pid)
	}
	if code, body := get(t, url+"/readyz"); code != 200 {
		t.Fatalf("readyz %d %s", code, body)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d; logs:\n%s", code, logs.String())
	}
}

func TestMigrateCommands(t *testing.T) {
	t.Parallel()
	url := testdb.NewURL(t)
	env := map[string]string{"STRATA_DATABASE_URL": url}
	code, out, errOut := strata(context.Background(), env, "migrate", "up", "--log-level", "error")
	if code != 0 || !strings.Contains(out, "up to date") && !strings.Contains(out, "applied ") {
		t.Fatalf("migrate up: exit %d, %q %q", code, out, errOut)
	}
	code, out, errOut = strata(context.Background(), env, "migrate", "status", "--log-level", "error")
	if code != 0 || !strings.Contains(out, "MIGRATION") || !strings.Contains(out, "0 pending") {
		t.Fatalf("migrate status: exit %d, %q %q", code, out, errOut)
	}
}

// process is strata running as a real OS process (the test binary in strata mode).
type process struct {
	cmd  *exec.Cmd
	logs *syncBuffer
}

func startProcess(t *testing.T, args ...string) *process {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "STRATA_CLI_MAIN=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, logs: &syncBuffer{}}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			fmt.Fprintln(p.logs, sc.Text())
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return p
}

func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

func waitGone(t *testing.T, pid int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("postgres %d still running %s later", pid, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The embedded platform end to end, as a real process: first start (initdb), SIGTERM
// (clean stop, no postgres left), restart, SIGKILL (postgres follows), restart (recovers).
func TestServeEmbeddedLifecycle(t *testing.T) {
	t.Parallel()
	dir := testdb.TempDir(t)
	args := []string{"serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--log-format", "json"}

	first := time.Now()
	p := startProcess(t, args...)
	url, pid := readyURL(t, p.logs)
	t.Logf("first start (initdb) ready in %s", time.Since(first).Round(time.Millisecond))
	if pid == 0 || !alive(pid) {
		t.Fatalf("no embedded postgres (pid %d)", pid)
	}
	if code, _ := get(t, url+"/readyz"); code != 200 {
		t.Fatalf("readyz %d", code)
	}
	// A second strata on the same data dir fails at once, clearly.
	code, _, errOut := strata(context.Background(), nil, "serve", "--data-dir", dir, "--http-addr", "127.0.0.1:0", "--log-level", "error")
	if code != 1 || !strings.Contains(errOut, "used by another strata process") {
		t.Errorf("second serve: exit %d, %q", code, errOut)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v; logs:\n%s", err, p.logs.String())
	}
	waitGone(t, pid, 2*time.Second)

	restart := time.Now()
	p = startProcess(t, args...)
	_, pid = readyURL(t, p.logs)
	t.Logf("restart ready in %s", time.Since(restart).Round(time.Millisecond))
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
	waitGone(t, pid, 15*time.Second)

	p = startProcess(t, args...)
	url, _ = readyURL(t, p.logs)
	if code, _ := get(t, url+"/readyz"); code != 200 {
		t.Fatalf("readyz after recovery %d", code)
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("after SIGTERM: %v", err)
	}
}

func TestAdminAndAuditCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	env := map[string]string{"STRATA_DATABASE_URL": testdb.NewURL(t), "STRATA_ADMIN_PASSWORD": "first-admin-pw"}
	run := func(stdin string, args ...string) (int, string, string) {
		var out, errOut syncBuffer
		code := cli.Run(ctx, append(args, "--log-level", "error"), cli.IO{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errOut,
			Env: func(k string) (string, bool) { v, ok := env[k]; return v, ok }})
		return code, out.String(), errOut.String()
	}
	code, out, errOut := run("bob-password\n", "admin", "create", "--username", "bob")
	if code != 0 || !strings.Contains(out, "created user bob") || strings.Contains(out, "password:") {
		t.Fatalf("admin create: %d %q %q", code, out, errOut)
	}
	code, out, _ = run("", "admin", "reset-password", "--username", "bob")
	if code != 0 || !strings.Contains(out, "password: ") {
		t.Fatalf("reset-password with nothing on stdin should generate one: %d %q", code, out)
	}
	if code, _, errOut = run("", "admin", "reset-password", "--username", "nobody"); code != 1 || !strings.Contains(errOut, "user not found") {
		t.Fatalf("reset-password of an unknown user: %d %q", code, errOut)
	}
	if code, out, _ = run("", "admin", "rotate-signing-key"); code != 0 || !strings.Contains(out, "new signing key") {
		t.Fatalf("rotate: %d %q", code, out)
	}
	// Give the sealer a moment, then verify the platform chain.
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, out, errOut = run("", "audit", "verify")
		if code == 0 && strings.Contains(out, "intact") && strings.Contains(out, "0 not yet sealed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit verify: %d %q %q", code, out, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if code, _, errOut = run("", "audit", "purge"); code != 2 || !strings.Contains(errOut, "before") {
		t.Fatalf("purge without --before: %d %q", code, errOut)
	}
	if code, out, _ = run("", "audit", "purge", "--before", "2000-01-01"); code != 0 || !strings.Contains(out, "purged 0 entries") {
		t.Fatalf("purge: %d %q", code, out)
	}
	// Tampering, as a database superuser would, is caught: exit 1 naming the entry.
	conn, err := pgx.Connect(ctx, env["STRATA_DATABASE_URL"])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica;
		UPDATE strata.audit_log SET actor_name = 'mallory' WHERE seq = 2 AND chain = '00000000-0000-0000-0000-000000000000'`); err != nil {
		t.Fatal(err)
	}
	code, _, errOut = run("", "audit", "verify")
	if code != 1 || !strings.Contains(errOut, "BROKEN at entry 2") {
		t.Fatalf("verify after tampering: %d %q", code, errOut)
	}
}

func TestImportExportCommands(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := testdb.NewURL(t)
	s, err := stratapkg.Open(ctx, stratapkg.Config{DatabaseURL: url, AdminPassword: "admin-password",
		Auth: auth.Config{Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	sys := auth.System(ctx)
	admin, err := s.Auth().UserByName(ctx, "admin")
	if err != nil {
		t.Fatal(err)
	}
	ten, err := s.Auth().TenantCreate(auth.WithPrincipal(ctx, &auth.Principal{UserID: admin.ID, Username: "admin", PlatformAdmin: true}), "cli")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Docs().CollectionCreate(sys, ten.ID, doc.CollectionInput{Name: "c"}); err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.ndjson")
	_ = os.WriteFile(in, []byte("{\"a\": 1}\n{\"a\": 2}\n{bad\n"), 0o600)
	env := map[string]string{"STRATA_DATABASE_URL": url}
	args := []string{"--tenant", ten.ID, "--collection", "c", "--log-level", "error"}
	code, out, errOut := strata(ctx, env, append([]string{"import", in}, args...)...)
	if code != 1 || !strings.Contains(out, "line 3: invalid_json") || !strings.Contains(errOut, "nothing was imported") {
		t.Fatalf("atomic import with a bad line: %d %q %q", code, out, errOut)
	}
	code, out, _ = strata(ctx, env, append([]string{"import", in, "--mode", "partial"}, args...)...)
	if code != 1 || !strings.Contains(out, "3 lines, 2 imported, 1 failed") {
		t.Fatalf("partial import: %d %q", code, out)
	}
	exported := filepath.Join(dir, "out.ndjson")
	code, _, errOut = strata(ctx, env, append([]string{"export", exported}, args...)...)
	b, _ := os.ReadFile(exported)
	if code != 0 || strings.Count(string(b), "\n") != 2 || !strings.Contains(errOut, "exported 2") {
		t.Fatalf("export: %d %q %q", code, b, errOut)
	}

	// Edges between the imported documents: all or nothing.
	var ids []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var env struct{ ID string }
		_ = json.Unmarshal([]byte(line), &env)
		ids = append(ids, env.ID)
	}
	edges := filepath.Join(dir, "edges.ndjson")
	_ = os.WriteFile(edges, []byte(fmt.Sprintf(`{"type": "next", "from": "c/%s", "to": "c/%s"}`+"\n", ids[0], ids[1])+
		`{"type": "next", "from": "c/nope", "to": "c/`+ids[0]+`"}`+"\n"), 0o600)
	edgeArgs := []string{"--tenant", ten.ID, "--edges", "--log-level", "error"}
	code, out, errOut = strata(ctx, env, append([]string{"import", edges}, edgeArgs...)...)
	if code != 1 || !strings.Contains(out, "line 2: document_not_found") || !strings.Contains(errOut, "nothing was imported") {
		t.Fatalf("edge import with a bad line: %d %q %q", code, out, errOut)
	}
	_ = os.WriteFile(edges, []byte(fmt.Sprintf(`{"type": "next", "from": "c/%s", "to": "c/%s"}`+"\n", ids[0], ids[1])), 0o600)
	code, out, errOut = strata(ctx, env, append([]string{"import", edges}, edgeArgs...)...)
	if code != 0 || !strings.Contains(out, "1 lines, 1 imported, 0 failed") || !strings.Contains(out, "edges/s") {
		t.Fatalf("edge import: %d %q %q", code, out, errOut)
	}
}
