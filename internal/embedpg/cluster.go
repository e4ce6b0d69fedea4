// Package embedpg runs a private PostgreSQL server as a child process: the machine's own
// server binaries, a cluster initialized on first start in <data-dir>/pg, listening on a
// unix socket inside the data dir (and TCP only if asked), owned by an unprivileged user when
// strata is root, and never outliving strata.
package embedpg

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// Superuser is the PostgreSQL role initdb creates and strata connects as.
const Superuser = "strata"

// Options configures a cluster. Only DataDir is required.
type Options struct {
	// DataDir is strata's data directory; the cluster lives in DataDir/pg.
	DataDir string
	// BinDir holds postgres and initdb; empty means discover them (see FindBinaries).
	BinDir string
	// User is the OS user PostgreSQL runs as when strata is root; empty means "postgres",
	// then "nobody". Ignored when strata is not root (the server runs as strata's user).
	User string
	// ListenAddr, when set ("127.0.0.1:5433"), also serves TCP with password
	// authentication; empty means the unix socket only.
	ListenAddr string
	// Database is created after start if missing. Default "strata".
	Database string
	// Settings override server settings (postgresql.conf names), on top of the defaults
	// tuned for a small machine.
	Settings map[string]string
	// InitFrom names a data dir holding an initialized cluster (its pg directory and
	// password file) to copy instead of running initdb. The test harness uses it.
	InitFrom string
	// StartTimeout bounds the wait for the server to accept connections, which includes
	// crash recovery after an unclean stop. Default 5 minutes.
	StartTimeout time.Duration
	// Logger receives the server's log lines (at debug, warnings and worse above) and
	// lifecycle events. Nil is quiet.
	Logger *slog.Logger
}

// DefaultSettings are the server settings for a small machine (2 cores, a few GiB), and
// for a server that only strata uses. Options.Settings overrides any of them.
var DefaultSettings = map[string]string{
	"max_connections":                     "200",
	"shared_buffers":                      "128MB",
	"effective_cache_size":                "1GB",
	"work_mem":                            "8MB",
	"maintenance_work_mem":                "128MB",
	"max_wal_size":                        "1GB",
	"min_wal_size":                        "80MB",
	"checkpoint_completion_target":        "0.9",
	"random_page_cost":                    "1.1",
	"effective_io_concurrency":            "100",
	"wal_level":                           "replica",
	"max_wal_senders":                     "4",
	"max_worker_processes":                "8",
	"max_parallel_workers":                "2",
	"idle_in_transaction_session_timeout": "10min",
	"log_line_prefix":                     "",
	"log_error_verbosity":                 "terse",
	"log_min_error_statement":             "panic", // statements may carry data; never log them
	"log_timezone":                        "UTC",
	"timezone":                            "UTC",
}

// Cluster is a running embedded PostgreSQL server.
type Cluster struct {
	opts     Options
	bin      Binaries
	owner    owner
	pgdata   string
	sockDir  string
	tmpSock  bool // sockDir was made in /tmp because the data dir path is too long
	port     int
	password string
	lock     *dirLock
	log      *slog.Logger
	tail     *tailBuffer

	mu       sync.Mutex
	proc     *child // the running postmaster, or nil between a crash and its restart
	stopping bool
	stopCh   chan struct{} // closed by Stop, to cut the supervisor's backoff short
	stopped  chan struct{} // closed when the supervisor has finished
}

// Start takes the data dir's lock, initializes the cluster on first use, starts the server
// and waits until it accepts connections, then creates Options.Database if missing. If the
// server later exits on its own, it is restarted with backoff until Stop is called.
func Start(ctx context.Context, o Options) (*Cluster, error) {
	if o.DataDir == "" {
		return nil, errors.New("embedded PostgreSQL needs a data dir")
	}
	dir, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	o.DataDir = dir
	o.Database = cmp.Or(o.Database, "strata")
	o.StartTimeout = cmp.Or(o.StartTimeout, 5*time.Minute)
	c := &Cluster{opts: o, pgdata: filepath.Join(dir, "pg"), log: o.Logger, tail: newTailBuffer(40),
		stopCh: make(chan struct{}), stopped: make(chan struct{})}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if err := writableDir(dir); err != nil {
		return nil, err
	}
	if c.lock, err = lockDataDir(dir); err != nil {
		return nil, err
	}
	if err := c.prepare(ctx); err != nil {
		c.release()
		return nil, err
	}
	if err := c.startServer(ctx); err != nil {
		c.release()
		return nil, err
	}
	go c.supervise()
	if err := c.ensureDatabase(ctx); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_ = c.Stop(sctx)
		return nil, err
	}
	return c, nil
}

// Init initializes the cluster in o.DataDir/pg if it is not already, without starting it.
// The test harness uses it to keep one initialized cluster to copy from.
func Init(ctx context.Context, o Options) error {
	if o.DataDir == "" {
		return errors.New("embedded PostgreSQL needs a data dir")
	}
	if err := writableDir(o.DataDir); err != nil {
		return err
	}
	c := &Cluster{opts: o, pgdata: filepath.Join(o.DataDir, "pg"), log: cmp.Or(o.Logger, slog.New(slog.DiscardHandler))}
	lock, err := lockDataDir(o.DataDir)
	if err != nil {
		return err
	}
	defer lock.release()
	if err := c.setupOwner(); err != nil {
		return err
	}
	want, err := dataDirMajor(c.pgdata)
	if err != nil || want > 0 {
		return err
	}
	if c.bin, err = FindBinaries(o.BinDir, 0); err != nil {
		return err
	}
	return c.initialize(ctx)
}

// Attach returns a connection URL for the PostgreSQL that another strata process runs in
// dataDir (its socket and port, read from postmaster.pid), for maintenance commands run
// beside `strata serve`. It fails when no such server is running.
func Attach(dataDir, database string) (string, error) {
	dir, err := filepath.Abs(dataDir)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(filepath.Join(dir, "pg", "postmaster.pid"))
	if err != nil {
		return "", fmt.Errorf("no PostgreSQL is running in %s: %w", dir, err)
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 5 {
		return "", fmt.Errorf("%s/pg/postmaster.pid is incomplete", dir)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(lines[0]))
	port, _ := strconv.Atoi(strings.TrimSpace(lines[3]))
	sock := strings.TrimSpace(lines[4])
	if !isPostgresProcess(pid) || port == 0 || sock == "" {
		return "", fmt.Errorf("the PostgreSQL recorded in %s/pg/postmaster.pid is not running", dir)
	}
	c := &Cluster{sockDir: sock, port: port}
	return c.url(cmp.Or(database, "strata"), false), nil
}

// prepare resolves binaries and the server's user, initializes the cluster if needed and
// readies the socket directory.
func (c *Cluster) prepare(ctx context.Context) error {
	if err := c.setupOwner(); err != nil {
		return err
	}
	want, err := dataDirMajor(c.pgdata)
	if err != nil {
		return err
	}
	if c.bin, err = FindBinaries(c.opts.BinDir, want); err != nil {
		return err
	}
	if want == 0 {
		if err := c.initialize(ctx); err != nil {
			return err
		}
	}
	if c.password, err = readPassword(c.opts.DataDir); err != nil {
		return err
	}
	if err := c.clearStalePID(ctx); err != nil {
		return err
	}
	return c.prepareSocket()
}

// setupOwner picks the server's OS user and makes sure it can reach the cluster.
func (c *Cluster) setupOwner() error {
	var err error
	if c.owner, err = resolveOwner(c.opts.User); err != nil {
		return err
	}
	if !c.owner.switching() {
		return nil
	}
	// The server's user must be able to pass through the data dir to reach pg/.
	if err := os.Chmod(c.opts.DataDir, 0o711); err != nil {
		return fmt.Errorf("data dir %s: %w", c.opts.DataDir, unwrapPath(err))
	}
	return c.owner.checkReachable(c.pgdata)
}

const passwordFile = "pg-password"

// initialize creates the cluster in pg.init and renames it to pg when complete, so a crash
// during initdb never leaves a half-made cluster that looks real.
func (c *Cluster) initialize(ctx context.Context) error {
	if entries, err := os.ReadDir(c.pgdata); err == nil && len(entries) > 0 {
		return fmt.Errorf("%s exists but is not a PostgreSQL data directory (no PG_VERSION); move it away", c.pgdata)
	}
	_ = os.Remove(c.pgdata)
	tmp := c.pgdata + ".init"
	if err := os.RemoveAll(tmp); err != nil {
		return err
	}
	if c.opts.InitFrom != "" {
		if err := c.copyCluster(tmp); err != nil {
			return err
		}
	} else if err := c.initdb(ctx, tmp); err != nil {
		_ = os.RemoveAll(tmp)
		return err
	}
	return os.Rename(tmp, c.pgdata)
}

func (c *Cluster) initdb(ctx context.Context, tmp string) error {
	start := time.Now()
	c.log.Info("initializing PostgreSQL cluster (first start)", "dir", c.pgdata, "postgres", c.bin.Version)
	if err := c.owner.mkdirOwned(tmp, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", tmp, err)
	}
	pw := make([]byte, 24)
	_, _ = rand.Read(pw)
	password := hex.EncodeToString(pw)
	// initdb reads the password from a file the server's user can read; it is deleted after.
	pwFile := filepath.Join(tmp, ".initdb-pw")
	if err := os.WriteFile(pwFile, []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	if err := c.owner.chownTree(pwFile); err != nil {
		return err
	}
	// initdb refuses a non-empty directory, so it writes into tmp/data, moved up after.
	target := filepath.Join(tmp, "data")
	args := []string{"-D", target, "-U", Superuser, "-E", "UTF8", "--data-checksums",
		"--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + pwFile,
		"--lc-collate=C", "--lc-ctype=" + ctypeLocale()}
	var out strings.Builder
	cmd := exec.CommandContext(ctx, c.bin.Path("initdb"), args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = childEnv(), &out, &out
	err := run(cmd, c.owner)
	_ = os.Remove(pwFile)
	if err != nil {
		return fmt.Errorf("initdb failed: %w\n%s", err, strings.TrimSpace(out.String()))
	}
	if err := moveUp(target, tmp); err != nil {
		return err
	}
	// The socket trusts processes that can reach it, which the data dir's permissions
	// restrict; TCP (when asked for) takes the password, from loopback only unless the
	// operator edits pg_hba.conf.
	if err := os.WriteFile(filepath.Join(c.opts.DataDir, passwordFile), []byte(password+"\n"), 0o600); err != nil {
		return err
	}
	c.log.Info("initialized PostgreSQL cluster", "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

// ctypeLocale is C.UTF-8 where the system has it, so character classes (used by full-text
// and trigram search) understand Unicode letters; sorting stays bytewise (collate C).
func ctypeLocale() string {
	for _, d := range []string{"/usr/lib/locale/C.utf8", "/usr/lib/locale/C.UTF-8"} {
		if _, err := os.Stat(d); err == nil {
			return "C.UTF-8"
		}
	}
	if out, err := output("locale", "-a"); err == nil {
		for _, l := range strings.Fields(string(out)) {
			if strings.EqualFold(l, "C.utf8") || strings.EqualFold(l, "C.UTF-8") {
				return l
			}
		}
	}
	return "C"
}

func (c *Cluster) copyCluster(tmp string) error {
	src := filepath.Join(c.opts.InitFrom, "pg")
	if err := copyTree(src, tmp); err != nil {
		return fmt.Errorf("copying cluster from %s: %w", src, err)
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return err
	}
	if err := c.owner.chownTree(tmp); err != nil {
		return err
	}
	pw, err := os.ReadFile(filepath.Join(c.opts.InitFrom, passwordFile))
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.opts.DataDir, passwordFile), pw, 0o600)
}

func readPassword(dataDir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, passwordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil // clusters made without one only serve the socket
	}
	return strings.TrimSpace(string(b)), err
}

// clearStalePID deals with postmaster.pid left behind. strata holds the data dir's lock, so
// no other strata uses this cluster: a live postgres of the server's user named in the file
// is an orphan of a killed strata, shutting down on its parent-death signal; wait for it.
// A pid that is gone, or reused by any other process (common in containers, where
// PostgreSQL itself would refuse to start), makes the file stale: it is removed.
func (c *Cluster) clearStalePID(ctx context.Context) error {
	path := filepath.Join(c.pgdata, "postmaster.pid")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	deadline := time.Now().Add(30 * time.Second)
	ours := func() bool { uid := processUID(pid); return uid < 0 || uid == int(c.owner.uid) }
	for isPostgresProcess(pid) && ours() {
		if time.Now().After(deadline) {
			return fmt.Errorf("a PostgreSQL server (pid %d) is still running on %s and did not stop within 30s; "+
				"it is not managed by this strata: stop it (pg_ctl -D %s stop) and retry", pid, c.pgdata, c.pgdata)
		}
		c.log.Info("waiting for the previous PostgreSQL to finish shutting down", "pid", pid)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	if _, err := os.Stat(path); err == nil {
		c.log.Info("removing stale postmaster.pid", "pid", pid)
		return os.Remove(path)
	}
	return nil
}

// maxSocketPath is the usable length of a unix socket path (sun_path is 108 bytes).
const maxSocketPath = 100

func (c *Cluster) prepareSocket() error {
	c.port = 5432
	if c.opts.ListenAddr != "" {
		_, p, err := net.SplitHostPort(c.opts.ListenAddr)
		if err != nil {
			return fmt.Errorf("--pg-listen %q: %w", c.opts.ListenAddr, err)
		}
		if c.port, err = strconv.Atoi(p); err != nil || c.port <= 0 || c.port > 65535 {
			return fmt.Errorf("--pg-listen %q: bad port", c.opts.ListenAddr)
		}
	}
	c.sockDir = filepath.Join(c.opts.DataDir, "run")
	if len(c.sockDir)+len("/.s.PGSQL.65535") > maxSocketPath {
		d, err := os.MkdirTemp("", "strata-pg-")
		if err != nil {
			return err
		}
		c.sockDir, c.tmpSock = d, true
	}
	return c.owner.mkdirOwned(c.sockDir, 0o700)
}

func (c *Cluster) serverArgs() []string {
	settings := maps.Clone(DefaultSettings)
	maps.Copy(settings, c.opts.Settings)
	settings["unix_socket_directories"] = c.sockDir
	settings["port"] = strconv.Itoa(c.port)
	settings["listen_addresses"] = ""
	if c.opts.ListenAddr != "" {
		host, _, _ := net.SplitHostPort(c.opts.ListenAddr)
		settings["listen_addresses"] = cmp.Or(host, "localhost")
	}
	args := []string{"-D", c.pgdata}
	for _, k := range slices.Sorted(maps.Keys(settings)) {
		args = append(args, "-c", k+"="+settings[k])
	}
	return args
}

func (c *Cluster) ensureDatabase(ctx context.Context) error {
	conn, err := pgconn.Connect(ctx, c.url("postgres", false))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	name := strings.ReplaceAll(c.opts.Database, "'", "''")
	res, err := conn.Exec(ctx, "SELECT 1 FROM pg_database WHERE datname = '"+name+"'").ReadAll()
	if err != nil {
		return err
	}
	if len(res) > 0 && len(res[0].Rows) > 0 {
		return nil
	}
	ident := `"` + strings.ReplaceAll(c.opts.Database, `"`, `""`) + `"`
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+ident).ReadAll(); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "42P04" { // created meanwhile
			return nil
		}
		return fmt.Errorf("creating database %s: %w", c.opts.Database, err)
	}
	return nil
}

func (c *Cluster) release() {
	if c.tmpSock {
		_ = os.RemoveAll(c.sockDir)
	}
	c.lock.release()
}

// URL returns a connection string for database (empty means Options.Database) over the
// unix socket.
func (c *Cluster) URL(database string) string {
	return c.url(cmp.Or(database, c.opts.Database), false)
}

// TCPURL returns a connection string over TCP with the superuser's password, or "" when
// the cluster does not listen on TCP.
func (c *Cluster) TCPURL(database string) string {
	if c.opts.ListenAddr == "" {
		return ""
	}
	return c.url(cmp.Or(database, c.opts.Database), true)
}

func (c *Cluster) url(database string, tcp bool) string {
	u := url.URL{Scheme: "postgres", Path: "/" + database}
	q := url.Values{}
	if tcp {
		host, _, _ := net.SplitHostPort(c.opts.ListenAddr)
		if host == "" || host == "0.0.0.0" || host == "*" {
			host = "127.0.0.1"
		}
		u.Host = net.JoinHostPort(host, strconv.Itoa(c.port))
		u.User = url.UserPassword(Superuser, c.password)
	} else {
		u.User = url.User(Superuser)
		q.Set("host", c.sockDir)
		q.Set("port", strconv.Itoa(c.port))
	}
	q.Set("sslmode", "disable")
	u.RawQuery = q.Encode()
	return u.String()
}

// PID returns the postmaster's process id (0 when not running).
func (c *Cluster) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil || c.proc.cmd.Process == nil || c.proc.exited() {
		return 0
	}
	return c.proc.cmd.Process.Pid
}

// Binaries returns the server programs in use.
func (c *Cluster) Binaries() Binaries { return c.bin }

// DataDir returns the cluster's PostgreSQL data directory (<data-dir>/pg).
func (c *Cluster) DataDir() string { return c.pgdata }
