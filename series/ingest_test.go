package series_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fernet/fernet-go"
	"github.com/stratadb/strata/internal/mqttpub"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/series"
)

// While PostgreSQL cannot commit (here: the history table is locked), nothing is
// acknowledged, the queue fills to its bound and stays there (publishers are held back
// through TCP), and when commits resume every message is stored and acknowledged.
func TestBackpressureWhilePostgresIsStuck(t *testing.T) {
	t.Parallel()
	e := newEnv(t, series.Config{MQTTAddr: "127.0.0.1:0", QueueSize: 40, BatchSize: 10})
	d, cred, key := e.device(climate("cellar"))
	ctx := context.Background()
	lock, err := e.w.Pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lock.Exec(ctx, `LOCK TABLE strata.readings IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	pub, err := mqttpub.Dial(ctx, e.svc.MQTTAddr(), "cellar", cred.Username, cred.Password, 500)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	const n = 500
	var acked atomic.Int64
	var wg sync.WaitGroup
	base := time.Now().Add(-time.Minute)
	toks := make([][]byte, n)
	for i := range toks {
		toks[i] = seal(t, key, reading(d.ID, base.Add(time.Duration(i)*time.Millisecond), map[string]any{"temperature": 1}))
	}
	for i := range n {
		wg.Add(1)
		if err := pub.Publish(ctx, cred.Topic, toks[i], func(byte) { acked.Add(1); wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	_ = pub.Flush()
	eventually(t, "a full queue", func() bool {
		st, _ := e.svc.Stats(e.w.As(testworld.Owner), e.w.Tenant)
		return st.Node.QueueWaiting == st.Node.QueueCapacity
	})
	time.Sleep(200 * time.Millisecond)
	st, _ := e.svc.Stats(e.w.As(testworld.Owner), e.w.Tenant)
	if acked.Load() != 0 || st.Node.QueueWaiting > 40 {
		t.Fatalf("while stuck: %d acknowledged, %d queued (bound 40)", acked.Load(), st.Node.QueueWaiting)
	}
	_ = lock.Rollback(ctx)
	wg.Wait()
	if n := count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID); n != 500 {
		t.Fatalf("%d of 500 stored", n)
	}
}

// Keys rotate without a gap: while an older key is being retired both decrypt; once it
// is retired its tokens are refused. Passwords rotate with a grace period the same way.
func TestKeyAndPasswordRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, series.Config{MQTTAddr: "127.0.0.1:0"})
	owner := e.w.As(testworld.Owner)
	d, cred, oldKey := e.device(climate("attic"))
	keys, _ := e.svc.KeyList(owner, e.w.Tenant, d.ID)
	retire := 3600
	_, secret, err := e.svc.KeyCreate(owner, e.w.Tenant, series.KeyInput{DeviceID: d.ID, RetireOthersAfter: &retire})
	if err != nil {
		t.Fatal(err)
	}
	newKey, _ := fernet.DecodeKey(secret)
	c := mqttClient(t, e.svc.MQTTAddr(), "attic-1", cred.Username, cred.Password)
	msg := func(k *fernet.Key) []byte {
		return seal(t, k, reading(d.ID, time.Now(), map[string]any{"temperature": 20}))
	}
	if rc := publish(t, c, cred.Topic, msg(oldKey)); rc != 0 {
		t.Fatalf("the old key while rotating: %#x", rc)
	}
	if rc := publish(t, c, cred.Topic, msg(newKey)); rc != 0 {
		t.Fatalf("the new key: %#x", rc)
	}
	if err := e.svc.KeyRetire(owner, e.w.Tenant, keys[0].ID, 0); err != nil {
		t.Fatal(err)
	}
	if rc := publish(t, c, cred.Topic, msg(oldKey)); rc != 0x87 {
		t.Fatalf("the retired key: %#x, want refused", rc)
	}
	// A tenant-wide key does not serve a device with keys of its own.
	_, wide, err := e.svc.KeyCreate(owner, e.w.Tenant, series.KeyInput{})
	if err != nil {
		t.Fatal(err)
	}
	wk, _ := fernet.DecodeKey(wide)
	if rc := publish(t, c, cred.Topic, msg(wk)); rc != 0x87 {
		t.Fatalf("a tenant key for a device with its own: %#x", rc)
	}
	// ... but serves one without.
	d2, cred2, err := e.svc.DeviceCreate(owner, e.w.Tenant, climate("porch"))
	if err != nil {
		t.Fatal(err)
	}
	c2 := mqttClient(t, e.svc.MQTTAddr(), "porch-1", cred2.Username, cred2.Password)
	if rc := publish(t, c2, cred2.Topic, seal(t, wk, reading(d2.ID, time.Now(), map[string]any{"temperature": 20}))); rc != 0 {
		t.Fatalf("a tenant key for a device without its own: %#x", rc)
	}

	// Passwords: with a grace, both work; after a rotation without one, only the newest.
	cred3, err := e.svc.DeviceCredentialsRotate(owner, e.w.Tenant, d.ID, &series.CredentialRotateOptions{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{cred.Password, cred3.Password} {
		if _, err := mqttConnect(e.svc.MQTTAddr(), "attic-x", cred.Username, pw); err != nil {
			t.Fatalf("during the grace: %v", err)
		}
	}
	cred4, err := e.svc.DeviceCredentialsRotate(owner, e.w.Tenant, d.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	for pw, ok := range map[string]bool{cred.Password: false, cred3.Password: false, cred4.Password: true, "": false} {
		_, err := mqttConnect(e.svc.MQTTAddr(), "attic-y", cred.Username, pw)
		if (err == nil) != ok {
			t.Errorf("password %.8s…: connected %v, want %v", pw, err == nil, ok)
		}
	}
	// A device cannot publish under another device's topic.
	if rc := publish(t, c, cred2.Topic, msg(newKey)); rc != 0x87 {
		t.Fatalf("publishing to another device's topic: %#x", rc)
	}
}

// Live streams deliver readings as they commit, per device or per tenant, and never
// another tenant's.
func TestLiveStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, series.Config{})
	d1, _, _ := e.device(climate("one"))
	d2, _, _ := e.device(climate("two"))
	viewer := e.w.As(testworld.Viewer)
	all, err := e.svc.Subscribe(viewer, e.w.Tenant, "")
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	one, err := e.svc.Subscribe(viewer, e.w.Tenant, d1.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	other, _, err := e.svc.DeviceCreate(e.w.As(testworld.Outsider), e.w.Other, climate("elsewhere"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if _, err := e.svc.Ingest(e.w.As(testworld.Outsider), e.w.Other, items(t, fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":99}}`, other.ID, now)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Ingest(e.w.As(testworld.Owner), e.w.Tenant, items(t,
		fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":1}}`, d1.ID, now),
		fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":2}}`, d2.ID, now)), nil); err != nil {
		t.Fatal(err)
	}
	got := func(sub *series.Subscription, n int) []series.Event {
		var evs []series.Event
		timeout := time.After(30 * time.Second)
		for len(evs) < n {
			select {
			case batch := <-sub.C:
				evs = append(evs, batch...)
			case <-timeout:
				t.Fatalf("%d events, want %d", len(evs), n)
			}
		}
		return evs
	}
	evs := got(all, 2)
	for _, ev := range evs {
		if ev.Value == 99 {
			t.Fatal("another tenant's reading on the stream")
		}
	}
	if evs := got(one, 1); evs[0].DeviceID != d1.ID || evs[0].Value != 1 {
		t.Fatalf("device stream: %+v", evs)
	}
	select {
	case extra := <-one.C:
		t.Fatalf("the device stream got another device's reading: %+v", extra)
	case <-time.After(100 * time.Millisecond):
	}
}
