package embedpg_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/internal/embedpg"
	"github.com/stratadb/strata/internal/testdb"
)

const helperEnv = "STRATA_EMBEDPG_HELPER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(helperEnv); dir != "" {
		helper(dir)
		return
	}
	testdb.Main(m)
}

// helper is a stand-in for a strata process: it starts a cluster, prints the postmaster's
// pid and waits to be killed.
func helper(dir string) {
	c, err := embedpg.Start(context.Background(), embedpg.Options{DataDir: dir, InitFrom: os.Getenv("STRATA_EMBEDPG_INIT_FROM"), Settings: testdb.FastSettings})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Println(c.PID())
	time.Sleep(time.Minute)
	os.Exit(3)
}

func start(t *testing.T, dir string) *embedpg.Cluster {
	t.Helper()
	c, err := embedpg.Start(context.Background(), embedpg.Options{DataDir: dir, InitFrom: testdb.InitFrom(t), Settings: testdb.FastSettings})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop(context.Background()) })
	return c
}

func query(t *testing.T, url, sql string) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var s string
	if err := conn.QueryRow(ctx, sql).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// A first start runs initdb with checksums and UTF8; when strata is root the server and
// its files belong to an unprivileged user.
func TestFirstStartInitializes(t *testing.T) {
	t.Parallel()
	dir := testdb.TempDir(t)
	c, err := embedpg.Start(context.Background(), embedpg.Options{DataDir: dir, Settings: testdb.FastSettings})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop(context.Background())
	if got := query(t, c.URL(""), "SHOW data_checksums"); got != "on" {
		t.Errorf("data_checksums = %s", got)
	}
	if got := query(t, c.URL(""), "SHOW server_encoding"); got != "UTF8" {
		t.Errorf("server_encoding = %s", got)
	}
	if got := query(t, c.URL(""), "SELECT current_database()"); got != "strata" {
		t.Errorf("database = %s", got)
	}
	if got := query(t, c.URL(""), "SHOW listen_addresses"); got != "" {
		t.Errorf("listen_addresses = %q, want unix socket only", got)
	}
	st, err := os.Stat(filepath.Join(dir, "pg"))
	if err != nil {
		t.Fatal(err)
	}
	procUID := statusUID(t, c.PID())
	dirUID := st.Sys().(*syscall.Stat_t).Uid
	if os.Geteuid() == 0 {
		if procUID == 0 || dirUID == 0 {
			t.Errorf("as root: postgres runs as uid %d and pg/ is owned by uid %d; want an unprivileged user", procUID, dirUID)
		}
	} else if procUID != uint32(os.Geteuid()) {
		t.Errorf("postgres runs as uid %d, want %d", procUID, os.Geteuid())
	}
	if st.Mode().Perm() != 0o700 {
		t.Errorf("pg/ mode = %v, want 0700", st.Mode().Perm())
	}
}

func statusUID(t *testing.T, pid int) uint32 {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Skip("no /proc")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			n, _ := strconv.Atoi(f[1])
			return uint32(n)
		}
	}
	t.Fatal("no Uid in /proc status")
	return 0
}

func TestRestartKeepsData(t *testing.T) {
	t.Parallel()
	dir := testdb.TempDir(t)
	c := start(t, dir)
	execSQL(t, c.URL(""), "CREATE TABLE kept AS SELECT 'still here' AS v")
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	c2 := start(t, dir)
	if got := query(t, c2.URL(""), "SELECT v FROM kept"); got != "still here" {
		t.Fatalf("after restart: %q", got)
	}
}

func TestSecondStartOnSameDirFails(t *testing.T) {
	t.Parallel()
	dir := testdb.TempDir(t)
	start(t, dir)
	_, err := embedpg.Start(context.Background(), embedpg.Options{DataDir: dir, InitFrom: testdb.InitFrom(t)})
	if !errors.Is(err, embedpg.ErrLocked) || !strings.Contains(err.Error(), strconv.Itoa(os.Getpid())) {
		t.Fatalf("err = %v, want ErrLocked naming pid %d", err, os.Getpid())
	}
}

func TestStalePIDFileDoesNotBlock(t *testing.T) {
	t.Parallel()
	dir := testdb.TempDir(t)
	c := start(t, dir)
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A crash leaves postmaster.pid naming a pid that is gone (or reused by something else).
	stale := "999999\n" + filepath.Join(dir, "pg") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "pg", "postmaster.pid"), []byte(stale), 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := start(t, dir)
	if got := query(t, c2.URL(""), "SELECT 'up'"); got != "up" {
		t.Fatal(got)
	}
}

// If strata is killed with SIGKILL, the postmaster shuts itself down, and the next start
// works on the same data dir.
func TestPostmasterDiesWithStrata(t *testing.T) {
	t.Parallel()
	dir := testdb.TempDir(t)
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, "STRATA_EMBEDPG_INIT_FROM="+testdb.InitFrom(t))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	pid, convErr := strconv.Atoi(strings.TrimSpace(line))
	if err != nil || convErr != nil {
		_ = cmd.Process.Kill()
		t.Fatalf("helper said %q (%v)", line, err)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	deadline := time.Now().Add(15 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("postmaster %d still running 15s after strata was killed", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c := start(t, dir)
	if got := query(t, c.URL(""), "SELECT 'recovered'"); got != "recovered" {
		t.Fatal(got)
	}
}

func execSQL(t *testing.T, url, sql string) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatal(err)
	}
}

// alive reports whether pid runs and is not a zombie.
func alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	f := strings.Fields(string(b))
	return len(f) > 2 && f[2] != "Z"
}

// A postmaster that dies on its own is restarted by the supervisor.
func TestSupervisorRestartsServer(t *testing.T) {
	t.Parallel()
	c := start(t, testdb.TempDir(t))
	first := c.PID()
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if pid := c.PID(); pid != 0 && pid != first {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			conn, err := pgx.Connect(ctx, c.URL(""))
			cancel()
			if err == nil {
				conn.Close(context.Background())
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("server not back 20s after its postmaster was killed")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestBadDataDirs(t *testing.T) {
	t.Parallel()
	file := filepath.Join(testdb.TempDir(t), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ dir, want string }{
		"a file":          {file, "is not a directory"},
		"under a file":    {filepath.Join(file, "sub"), "not a directory"},
		"relative, empty": {"", "needs a data dir"},
	}
	for name, tc := range cases {
		_, err := embedpg.Start(context.Background(), embedpg.Options{DataDir: tc.dir})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

func TestFindBinaries(t *testing.T) {
	t.Parallel()
	b, err := embedpg.FindBinaries("", 0)
	if err != nil {
		t.Fatal(err)
	}
	if b.Major < 14 {
		t.Fatalf("major = %d", b.Major)
	}
	if _, err := embedpg.FindBinaries(testdb.TempDir(t), 0); err == nil || !strings.Contains(err.Error(), "no postgres program") {
		t.Errorf("empty dir: err = %v", err)
	}
	if _, err := embedpg.FindBinaries(b.Dir, b.Major+50); err == nil || !strings.Contains(err.Error(), "pg_upgrade") {
		t.Errorf("version mismatch: err = %v", err)
	}
}

// A data dir too deep for a unix socket path still works: the socket goes to a short
// temporary directory.
func TestLongDataDirPath(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(testdb.TempDir(t), strings.Repeat("d", 60), strings.Repeat("e", 40))
	c := start(t, dir)
	if got := query(t, c.URL(""), "SELECT 'ok'"); got != "ok" {
		t.Fatal(got)
	}
}

// A server line longer than any buffer (an error quoting a huge value) must not stop the
// reading of its output: a full pipe would block every backend.
func TestHugeLogLineDoesNotBlockServer(t *testing.T) {
	t.Parallel()
	c := start(t, testdb.TempDir(t))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.URL(""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for range 3 {
		_, err := conn.Exec(ctx, "SELECT repeat('x', 1100000)::int")
		if err == nil {
			t.Fatal("the cast should fail")
		}
	}
	qctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for range 20 {
		var n int
		if err := conn.QueryRow(qctx, "SELECT 1").Scan(&n); err != nil {
			t.Fatalf("server blocked after long log lines: %v", err)
		}
	}
}

// Stop during the supervisor's restart backoff leaves no server behind.
func TestStopDuringRestart(t *testing.T) {
	t.Parallel()
	c := start(t, testdb.TempDir(t))
	first := c.PID()
	if err := syscall.Kill(first, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDead(t, first)
	time.Sleep(200 * time.Millisecond) // inside the 1s backoff
	if err := c.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if pid := c.PID(); pid != 0 {
		t.Fatalf("a server (pid %d) runs after Stop", pid)
	}
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d still alive", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A server that cannot start says why.
func TestStartupFailureExplains(t *testing.T) {
	t.Parallel()
	_, err := embedpg.Start(context.Background(), embedpg.Options{DataDir: testdb.TempDir(t), InitFrom: testdb.InitFrom(t),
		Settings: map[string]string{"shared_buffers": "banana"}})
	if err == nil || !strings.Contains(err.Error(), "shared_buffers") {
		t.Fatalf("err = %v, want the server's complaint about shared_buffers", err)
	}
}
