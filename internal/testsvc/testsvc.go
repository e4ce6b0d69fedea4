// Package testsvc starts the real services tests talk to — Redis, the Eclipse MQTT broker, Debian's
// Python — from the machine's binaries, on loopback, stopped when the test ends.
//
// A missing binary skips the test, unless STRATA_REQUIRE_SERVICES is set (as CI sets it),
// in which case it fails: a test that needs a service must never pass by not running.
package testsvc

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvRequire names the variable that turns a missing service into a failure.
const EnvRequire = "STRATA_REQUIRE_SERVICES"

// Binary finds a program by name (PATH, then the given absolute paths), or skips or fails
// the test as EnvRequire says.
func Binary(t testing.TB, name string, paths ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p
		}
	}
	if os.Getenv(EnvRequire) != "" {
		t.Fatalf("%s is not installed, and %s is set (CI installs it; apt-get install it)", name, EnvRequire)
	}
	t.Skipf("%s is not installed; set %s to make this a failure", name, EnvRequire)
	return ""
}

// FreeAddr returns a loopback address with a port free right now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := (&net.ListenConfig{}).Listen(t.Context(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// Process is a running service.
type Process struct {
	t    testing.TB
	Addr string
	bin  string
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	logs *tail
}

// Start runs the service (again, after Stop), and waits until its address accepts
// connections.
func (p *Process) Start() {
	p.t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	cmd := exec.CommandContext(context.Background(), p.bin, p.args...) // outlives a Start that restarts it
	cmd.Stdout, cmd.Stderr = p.logs, p.logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("starting %s: %v", p.bin, err)
	}
	p.cmd = cmd
	deadline := time.Now().Add(30 * time.Second) // generous: CI runs every package at once on 2 cores
	for {
		c, err := (&net.Dialer{Timeout: 200 * time.Millisecond}).DialContext(p.t.Context(), "tcp", p.Addr)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s did not listen on %s: %s", filepath.Base(p.bin), p.Addr, p.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the service (SIGKILL: as abrupt as an outage) and waits for it.
func (p *Process) Stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.cmd = nil
}

// Logs returns the last lines the service wrote.
func (p *Process) Logs() string { return p.logs.String() }

func start(t testing.TB, bin string, addr string, args ...string) *Process {
	p := &Process{t: t, Addr: addr, bin: bin, args: args, logs: &tail{}}
	p.Start()
	t.Cleanup(p.Stop)
	return p
}

// Redis starts redis-server like seed 002's: 256 MB, allkeys-lru, no persistence.
func Redis(t testing.TB) *Process {
	t.Helper()
	bin := Binary(t, "redis-server", "/usr/bin/redis-server")
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	return start(t, bin, addr, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", t.TempDir(), "--maxmemory", "256mb", "--maxmemory-policy", "allkeys-lru", "--protected-mode", "no")
}

// Mosquitto starts the Eclipse MQTT broker with anonymous access, no persistence, and
// in-flight and queue limits fit for consumers that acknowledge after a commit.
func Mosquitto(t testing.TB) *Process {
	t.Helper()
	bin := Binary(t, "mosquitto", "/usr/sbin/mosquitto")
	addr := FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	user := ""
	if os.Getuid() == 0 {
		user = "user root\n" // otherwise it runs as the mosquitto user, which cannot read the test's files
	}
	if err := os.WriteFile(conf, []byte(fmt.Sprintf("%slistener %s 127.0.0.1\nallow_anonymous true\npersistence false\n"+
		"max_inflight_messages 2000\nmax_queued_messages 100000\nsys_interval 1\nlog_dest stderr\nlog_type error\n", user, port)), 0o600); err != nil {
		t.Fatal(err)
	}
	return start(t, bin, addr, "-c", conf)
}

// Python returns Debian's python3 (the one with python3-paho-mqtt and python3-cryptography)
// after checking that it imports modules.
func Python(t testing.TB, modules ...string) string {
	t.Helper()
	bin := "/usr/bin/python3"
	if _, err := os.Stat(bin); err != nil {
		bin = Binary(t, "python3")
	}
	for _, m := range modules {
		if out, err := exec.CommandContext(t.Context(), bin, "-c", "import "+m).CombinedOutput(); err != nil {
			if os.Getenv(EnvRequire) != "" {
				t.Fatalf("%s cannot import %s (apt-get install python3-paho-mqtt python3-cryptography): %s", bin, m, out)
			}
			t.Skipf("%s cannot import %s; set %s to make this a failure", bin, m, EnvRequire)
		}
	}
	return bin
}

// tail keeps the last 8 KiB written.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tail) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > 8<<10 {
		w.buf = w.buf[len(w.buf)-8<<10:]
	}
	return len(p), nil
}

func (w *tail) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strconv.Quote(string(w.buf))
}
