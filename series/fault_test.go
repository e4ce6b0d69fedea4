package series_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/mqttpub"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testsvc"
	"github.com/stratadb/strata/series"
)

// ackLog remembers which messages (by number) a publisher saw acknowledged.
type ackLog struct {
	mu    sync.Mutex
	acked map[int]bool
	n     atomic.Int64
}

func (a *ackLog) add(i int) {
	a.mu.Lock()
	a.acked[i] = true
	a.mu.Unlock()
	a.n.Add(1)
}

// publishLoop publishes message after message (each a Fernet token whose temperature is its
// number) until ctx ends or the connection breaks, reconnecting as needed, and records
// acknowledgements. Messages sent on a connection that broke are sent again, numbered
// anew: only acknowledged numbers must be stored.
func publishLoop(ctx context.Context, addr string, cred series.Credentials, key *fernet.Key, deviceID string, log *ackLog, next *atomic.Int64) {
	for ctx.Err() == nil {
		c, err := mqttpub.Dial(ctx, addr, "fault-"+deviceID[:8], cred.Username, cred.Password, 200)
		if err != nil {
			time.Sleep(50 * time.Millisecond)
			continue
		}
		for ctx.Err() == nil {
			i := int(next.Add(1))
			p, _ := json.Marshal(map[string]any{"sensor_id": deviceID, "timestamp": time.Now().UTC().Format(time.RFC3339Nano),
				"values": map[string]any{"temperature": i}})
			tok, _ := fernet.EncryptAndSign(p, key)
			if err := c.Publish(ctx, cred.Topic, tok, func(byte) { log.add(i) }); err != nil {
				break
			}
			if i%50 == 0 {
				if c.Flush() != nil {
					break
				}
			}
		}
		_ = c.Close()
	}
}

// storedNumbers returns the temperatures stored for a device: the message numbers.
func storedNumbers(t *testing.T, ctx context.Context, url, deviceID string) map[int]bool {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT value::int FROM strata.readings WHERE device_id = $1 AND metric = 'temperature'`, deviceID)
	if err != nil {
		t.Fatal(err)
	}
	nums, err := pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		t.Fatal(err)
	}
	out := map[int]bool{}
	for _, n := range nums {
		out[n] = true
	}
	return out
}

func checkAcked(t *testing.T, acks *ackLog, stored map[int]bool) {
	t.Helper()
	acks.mu.Lock()
	defer acks.mu.Unlock()
	var lost []int
	for i := range acks.acked {
		if !stored[i] {
			lost = append(lost, i)
		}
	}
	if len(lost) > 0 {
		t.Fatalf("%d acknowledged messages are not in PostgreSQL (first: %v)", len(lost), lost[:min(len(lost), 10)])
	}
	t.Logf("%d messages acknowledged, %d stored: every acknowledged one is stored", len(acks.acked), len(stored))
}

// strataProcess is strata serve running as a real process (this test binary in strata mode).
type strataProcess struct {
	cmd  *exec.Cmd
	logs *bytes.Buffer
	mu   *sync.Mutex
	url  string
}

func startStrata(t *testing.T, args ...string) *strataProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--http-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	cmd.Env = append(os.Environ(), "STRATA_CLI_MAIN=1", "STRATA_ADMIN_PASSWORD=fault-admin-pw")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &strataProcess{cmd: cmd, logs: &bytes.Buffer{}, mu: &sync.Mutex{}}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			var rec struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal(sc.Bytes(), &rec) == nil && rec.Msg == "strata is ready" {
				ready <- rec.URL
			}
		}
	}()
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	select {
	case p.url = <-ready:
	case <-time.After(60 * time.Second):
		p.mu.Lock()
		defer p.mu.Unlock()
		t.Fatalf("strata never became ready:\n%s", p.logs.String())
	}
	return p
}

func (p *strataProcess) call(t *testing.T, method, path, body string, out any) {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), method, p.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:fault-admin-pw")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatal(err)
		}
	}
}

// kill -9 strata while a device publishes at QoS 1: after a restart, every message the
// device saw acknowledged is in PostgreSQL.
func TestKillStrataLosesNoAcknowledgedReading(t *testing.T) {
	t.Parallel()
	url := testdb.NewURL(t)
	mqttAddr := testsvc.FreeAddr(t)
	args := []string{"--database-url", url, "--mqtt-addr", mqttAddr, "--data-dir", t.TempDir()}
	p := startStrata(t, args...)

	var tenant auth.Tenant
	p.call(t, "POST", "/v1/tenants", `{"name":"fault house"}`, &tenant)
	var created struct {
		Device      series.Device
		Credentials series.Credentials
	}
	p.call(t, "POST", "/v1/t/"+tenant.ID+"/devices", `{"name":"thermo","metrics":{"temperature":{}}}`, &created)
	var key struct{ Secret string }
	p.call(t, "POST", "/v1/t/"+tenant.ID+"/devices/"+created.Device.ID+"/keys", `{}`, &key)
	k, err := fernet.DecodeKey(key.Secret)
	if err != nil {
		t.Fatal(err)
	}

	acks := &ackLog{acked: map[int]bool{}}
	var next atomic.Int64
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		publishLoop(ctx, mqttAddr, created.Credentials, k, created.Device.ID, acks, &next)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for acks.n.Load() < 3000 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()
	ackedAtKill := acks.n.Load()
	sentAtKill := next.Load()
	stop()
	<-done
	if ackedAtKill < 1000 {
		t.Fatalf("only %d acknowledgements before the kill", ackedAtKill)
	}
	t.Logf("killed with %d messages sent, %d acknowledged", sentAtKill, ackedAtKill)

	startStrata(t, args...) // restarts cleanly on the same database
	checkAcked(t, acks, storedNumbers(t, context.Background(), url, created.Device.ID))
}

// PostgreSQL restarts while devices publish: ingest holds messages (unacknowledged,
// within the bounded queue), resumes when it is back, and loses nothing acknowledged.
func TestPostgresRestartMidStream(t *testing.T) {
	t.Parallel()
	c := testdb.Cluster(t)
	url := c.URL("postgres")
	s, err := strata.Open(context.Background(), strata.Config{DatabaseURL: url, AdminPassword: "restart-admin-pw",
		Auth:   auth.Config{Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}},
		Series: series.Config{MQTTAddr: "127.0.0.1:0", QueueSize: 2000}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	admin, err := s.Auth().Authenticate(context.Background(), "Basic "+base64.StdEncoding.EncodeToString([]byte("admin:restart-admin-pw")), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := auth.WithPrincipal(context.Background(), admin)
	ten, err := s.Auth().TenantCreate(ctx, "restart house")
	if err != nil {
		t.Fatal(err)
	}
	d, cred, err := s.Series().DeviceCreate(ctx, ten.ID, series.DeviceInput{Name: "thermo", Metrics: map[string]series.Metric{"temperature": {}}})
	if err != nil {
		t.Fatal(err)
	}
	_, secret, err := s.Series().KeyCreate(ctx, ten.ID, series.KeyInput{DeviceID: d.ID})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := fernet.DecodeKey(secret)

	acks := &ackLog{acked: map[int]bool{}}
	var next atomic.Int64
	pctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		publishLoop(pctx, s.Series().MQTTAddr(), cred, k, d.ID, acks, &next)
	}()
	waitAcks := func(n int64) {
		deadline := time.Now().Add(60 * time.Second)
		for acks.n.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("stuck at %d acknowledgements (want %d)", acks.n.Load(), n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitAcks(2000)
	pid := c.PID()
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil { // fast shutdown; the supervisor starts it again
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	before := acks.n.Load()
	waitAcks(before + 2000) // only after PostgreSQL is back
	if c.PID() == pid {
		t.Fatal("PostgreSQL was not restarted")
	}
	stop()
	<-done // the publisher's connection is closed: no acknowledgement can arrive after this
	checkAcked(t, acks, storedNumbers(t, context.Background(), url, d.ID))
}
