package embedpg

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// child is a started program and the channel closed when it has exited.
type child struct {
	cmd    *exec.Cmd
	done   chan struct{}
	err    error         // Wait's result, readable after done is closed
	pumped chan struct{} // closed when its output has been read to the end (servers only)
}

// spawn starts cmd as o, tied to strata's life.
//
// On Linux the child gets a parent-death signal (SIGINT: PostgreSQL's fast shutdown), so
// a postmaster never outlives a strata killed with SIGKILL. The kernel sends that signal
// when the *thread* that forked the child exits, not the process, so the fork happens on a
// goroutine locked to its OS thread for as long as the child lives; Go never reuses or
// retires a locked thread while its goroutine runs.
func spawn(cmd *exec.Cmd, o owner) (*child, error) {
	cmd.SysProcAttr = sysProcAttr(o)
	c := &child{cmd: cmd, done: make(chan struct{})}
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread is discarded with this goroutine, once the child is gone.
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.err = cmd.Wait()
		close(c.done)
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return c, nil
}

// run starts cmd as o and waits for it.
func run(cmd *exec.Cmd, o owner) error {
	c, err := spawn(cmd, o)
	if err != nil {
		return err
	}
	<-c.done
	return c.err
}

func (c *child) signal(sig os.Signal) {
	if c.cmd.Process != nil {
		_ = c.cmd.Process.Signal(sig)
	}
}

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// childEnv is the environment of PostgreSQL's programs: strata's, without variables that
// would change what they do (PGDATA, PGHOST, locale), with messages in English.
func childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") || strings.HasPrefix(k, "LC_") || k == "LANG" || k == "LANGUAGE" {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "TZ=UTC")
}

// processUID returns the real uid of pid, or -1 when it cannot be read.
func processUID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			n, err := strconv.Atoi(f[1])
			if err == nil {
				return n
			}
		}
	}
	return -1
}

// isPostgresProcess reports whether pid is alive and runs a postgres program.
func isPostgresProcess(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) == syscall.ESRCH {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		// Without /proc (not Linux) a live pid is assumed to be the server.
		return !os.IsNotExist(err) || runtime.GOOS != "linux"
	}
	arg0, _, _ := strings.Cut(string(b), "\x00")
	return strings.HasSuffix(arg0, "postgres") || strings.HasPrefix(arg0, "postgres:")
}
