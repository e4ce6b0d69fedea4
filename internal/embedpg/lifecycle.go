package embedpg

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

var errStopping = errors.New("the cluster is stopping")

// startServer spawns the postmaster, makes it current, and waits until it accepts
// connections. If Stop has begun meanwhile, the new server is told to shut down at once.
func (c *Cluster) startServer(ctx context.Context) error {
	start := time.Now()
	cmd := exec.Command(c.bin.Path("postgres"), c.serverArgs()...) //nolint:noctx // the server lives until Stop, not until a context ends
	cmd.Env = childEnv()
	// Our own pipe, so the reader owns its end: exec's StderrPipe is closed by Wait, which
	// can lose the last lines a failing server writes.
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd.Stderr = w
	proc, err := spawn(cmd, c.owner)
	_ = w.Close()
	if err != nil {
		_ = r.Close()
		return fmt.Errorf("starting postgres: %w", err)
	}
	proc.pumped = make(chan struct{})
	go c.pump(r, proc.pumped)
	c.mu.Lock()
	c.proc = proc
	stopping := c.stopping
	c.mu.Unlock()
	if stopping {
		proc.signal(syscall.SIGINT)
		return errStopping
	}
	if err := c.waitReady(ctx, proc); err != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_ = c.shutdown(sctx, proc, 5*time.Second)
		cancel()
		return err
	}
	c.log.Info("PostgreSQL ready", "pid", cmd.Process.Pid, "socket_dir", c.sockDir, "elapsed", time.Since(start).Round(time.Millisecond))
	return nil
}

func (c *Cluster) waitReady(ctx context.Context, proc *child) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.StartTimeout)
	defer cancel()
	for {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		conn, err := pgconn.Connect(cctx, c.url("postgres", false))
		ccancel()
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-proc.done:
			select { // let the pump read the server's last words
			case <-proc.pumped:
			case <-time.After(time.Second):
			}
			return fmt.Errorf("postgres exited during startup (%w); its last messages:\n%s", proc.err, c.tail.String())
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("postgres did not accept connections within %s; its last messages:\n%s", c.opts.StartTimeout, c.tail.String())
			}
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
}

func (c *Cluster) current() *child {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc
}

func (c *Cluster) isStopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopping
}

// supervise restarts the server if it exits while strata is not stopping it, with backoff
// (1s doubling to 30s).
func (c *Cluster) supervise() {
	defer close(c.stopped)
	backoff := time.Second
	for {
		if proc := c.current(); proc != nil {
			<-proc.done
			if c.isStopping() {
				return
			}
			c.log.Error("PostgreSQL exited unexpectedly; restarting", "err", proc.err, "retry_in", backoff, "last_messages", c.tail.String())
		}
		select {
		case <-c.stopCh:
			return
		case <-time.After(backoff):
		}
		c.tail.reset()
		_ = c.clearStalePID(context.Background())
		if err := c.startServer(context.Background()); err != nil {
			if errors.Is(err, errStopping) {
				return
			}
			c.log.Error("restarting PostgreSQL failed", "err", err)
			c.mu.Lock()
			c.proc = nil
			c.mu.Unlock()
			backoff = min(backoff*2, 30*time.Second)
			continue
		}
		backoff = time.Second
	}
}

// Stop shuts the server down: fast shutdown (active transactions roll back, a checkpoint is
// written), escalating to immediate shutdown if ctx ends first. It then releases the data
// dir. Stop is safe to call more than once.
func (c *Cluster) Stop(ctx context.Context) error {
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		<-c.stopped
		return nil
	}
	c.stopping = true
	close(c.stopCh)
	proc := c.proc
	c.mu.Unlock()
	defer c.release()
	err := c.shutdown(ctx, proc, 5*time.Second)
	<-c.stopped
	// The supervisor may have started a server just before it saw Stop; it signaled it.
	if p := c.current(); p != proc {
		if e := c.shutdown(ctx, p, 5*time.Second); err == nil {
			err = e
		}
	}
	if err == nil {
		c.log.Info("PostgreSQL stopped")
	}
	return err
}

// shutdown asks proc for a fast shutdown and waits; when ctx ends first it forces an
// immediate shutdown, then kills after grace.
func (c *Cluster) shutdown(ctx context.Context, proc *child, grace time.Duration) error {
	if proc == nil || proc.exited() {
		return nil
	}
	proc.signal(syscall.SIGINT)
	select {
	case <-proc.done:
		return nil
	case <-ctx.Done():
	}
	c.log.Warn("PostgreSQL did not stop in time; forcing an immediate shutdown (crash recovery at next start)")
	proc.signal(syscall.SIGQUIT)
	select {
	case <-proc.done:
	case <-time.After(grace):
		proc.signal(syscall.SIGKILL)
		<-proc.done
	}
	return fmt.Errorf("PostgreSQL did not stop cleanly: %w", ctx.Err())
}

// maxLogLine bounds a logged server line; longer ones (an error quoting a huge value) are
// cut, never allowed to stop the reading — a full pipe would block every backend.
const maxLogLine = 8 << 10

// pump forwards the server's stderr into the log and keeps the last lines for errors. It
// drains the pipe until the server closes it, whatever it reads.
func (c *Cluster) pump(r io.ReadCloser, done chan struct{}) {
	defer close(done)
	defer r.Close()
	br := bufio.NewReaderSize(r, 64<<10)
	level := slog.LevelDebug
	for {
		line, err := br.ReadSlice('\n')
		long := errors.Is(err, bufio.ErrBufferFull)
		if len(line) > 0 {
			text := strings.TrimRight(string(line[:min(len(line), maxLogLine)]), "\r\n")
			if long || len(line) > maxLogLine {
				text += " …(truncated)"
			}
			level = c.logLine(text, level)
		}
		for long { // skip the rest of an overlong line
			_, err = br.ReadSlice('\n')
			long = errors.Is(err, bufio.ErrBufferFull)
		}
		if err != nil {
			_, _ = io.Copy(io.Discard, br)
			return
		}
	}
}

// logLine logs one server line at a level from its severity (continuation lines such as
// DETAIL keep the previous one's) and returns that level.
func (c *Cluster) logLine(line string, prev slog.Level) slog.Level {
	c.tail.add(line)
	level := prev
	if sev, msg, ok := strings.Cut(line, ":  "); ok && !strings.Contains(sev, " ") {
		level = severityLevel(sev, msg)
		line = msg
	}
	c.log.Log(context.Background(), level, line, "component", "postgres")
	return level
}

// routineFatal are FATAL messages every start and stop produces; they are not problems.
var routineFatal = []string{"the database system is starting up", "the database system is shutting down",
	"terminating connection due to administrator command"}

// crashSigns are LOG messages that mean a backend crashed or the server is recovering.
var crashSigns = []string{"was terminated by signal", "terminating any other active server processes",
	"all server processes terminated; reinitializing", "database system was interrupted",
	"database system was not properly shut down", "automatic recovery in progress"}

// severityLevel maps a server message to a log level: warnings and worse above debug,
// ERRORs (which the client that caused them reports) at debug, crash and recovery notices
// as warnings.
func severityLevel(sev, msg string) slog.Level {
	switch sev {
	case "FATAL":
		if slices.Contains(routineFatal, msg) {
			return slog.LevelDebug
		}
		return slog.LevelWarn // ends one session, not the server
	case "WARNING":
		return slog.LevelWarn
	case "PANIC":
		return slog.LevelError
	case "LOG":
		for _, s := range crashSigns {
			if strings.Contains(msg, s) {
				return slog.LevelWarn
			}
		}
	}
	return slog.LevelDebug
}

// tailBuffer keeps the last n lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	lines []string
	n     int
}

func newTailBuffer(n int) *tailBuffer { return &tailBuffer{n: n} }

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}

func (t *tailBuffer) reset() {
	t.mu.Lock()
	t.lines = nil
	t.mu.Unlock()
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return "  " + strings.Join(t.lines, "\n  ")
}
