package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/server"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testsvc"
	"github.com/stratadb/strata/series"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// platform is Strata with its embedded broker and, when given, an external broker.
func platform(t *testing.T, brokerURL string) (*strata.Strata, *Client) {
	t.Helper()
	s, err := strata.Open(context.Background(), strata.Config{DatabaseURL: testdb.NewURL(t), AdminPassword: "seed-admin-pw",
		Auth:   auth.Config{Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}, SignInPerMinute: 1 << 20, SignInPerMinutePerIP: 1 << 20},
		Series: series.Config{MQTTAddr: "127.0.0.1:0", BrokerURL: brokerURL, BrokerClientID: "smarthome-" + t.Name()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	srv := httptest.NewServer(server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Version: "test", Auth: s.Auth(), Audit: s.Audit(),
		Series: s.Series()}))
	t.Cleanup(srv.Close)
	return s, &Client{Base: srv.URL, HTTP: srv.Client()}
}

func notFound(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status == 404
}

// Seed 002 end to end: houses, users with owner/admin roles and tenancy dates, appliances
// publishing encrypted readings; each user sees exactly their houses' data.
func TestSmartHome(t *testing.T) {
	t.Parallel()
	s, c := platform(t, "")
	ctx := context.Background()
	w, err := Seed(ctx, c, Basic("admin", "seed-admin-pw"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := Simulate(ctx, w, s.Series().MQTTAddr(), 50*time.Millisecond, time.Now().Add(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3 * len(appliances()); n < want {
		t.Fatalf("%d readings published, want at least %d", n, want)
	}
	var out bytes.Buffer
	if err := Report(ctx, c, w, &out); err != nil {
		t.Fatal(err)
	}
	report := out.String()
	for _, want := range []string{"alice sees 2 house(s)", "bob sees 1 house(s)", "carol sees 1 house(s)", "dave sees 0 house(s)",
		"Smart thermostat", "temperature=", "co_ppm="} {
		if !strings.Contains(report, want) {
			t.Errorf("the report lacks %q:\n%s", want, report)
		}
	}
	alice, bob, carol, dave := w.Users["alice"], w.Users["bob"], w.Users["carol"], w.Users["dave"]
	for _, h := range w.Houses[:2] { // alice's houses: every appliance has its latest values
		var latest struct{ Items []series.DeviceLatest }
		if err := c.Do(ctx, alice.Auth(), "GET", "/v1/t/"+h.ID+"/devices/latest", nil, &latest); err != nil {
			t.Fatal(err)
		}
		for _, d := range latest.Items {
			if len(d.Values) == 0 {
				t.Errorf("%s / %s has no latest values", h.Name, d.Name)
			}
		}
	}
	// The walls: bob and dave see none of alice's houses, carol only the one she administers.
	for _, u := range []*User{bob, dave} {
		if err := c.Do(ctx, u.Auth(), "GET", "/v1/t/"+w.Houses[0].ID+"/devices/latest", nil, nil); !notFound(err) {
			t.Errorf("%s reading alice's house: %v", u.Name, err)
		}
	}
	if err := c.Do(ctx, dave.Auth(), "GET", "/v1/t/"+w.Houses[2].ID+"/devices/latest", nil, nil); !notFound(err) {
		t.Errorf("dave, whose tenancy ended, reading bob's house: %v", err)
	}
	if err := c.Do(ctx, carol.Auth(), "GET", "/v1/t/"+w.Houses[0].ID+"/devices/latest", nil, nil); err != nil {
		t.Errorf("carol on the house she administers: %v", err)
	}
	if err := c.Do(ctx, carol.Auth(), "GET", "/v1/t/"+w.Houses[1].ID+"/devices/latest", nil, nil); !notFound(err) {
		t.Errorf("carol on alice's other house: %v", err)
	}
}

// The seed's own stack as a peer: its Python publisher (Debian's python3-paho-mqtt and
// python3-cryptography's Fernet) publishes through Debian's Mosquitto and through
// Strata's embedded broker; Strata decrypts every reading, stores it for the right house,
// refuses a token made with another key, and an owner sees only their houses' data.
func TestPythonPublisherInterop(t *testing.T) {
	t.Parallel()
	python := testsvc.Python(t, "paho.mqtt.client", "cryptography.fernet")
	mq := testsvc.Mosquitto(t)
	s, c := platform(t, "mqtt://"+mq.Addr)
	ctx := context.Background()
	w, err := Seed(ctx, c, Basic("admin", "seed-admin-pw"))
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, func() bool {
		st, err := s.Series().Stats(auth.System(ctx), w.Houses[0].ID)
		return err == nil && st.Node.ExternalUp // subscribed: the SUBACK has come
	})
	house := w.Houses[0]
	thermo := house.Appliances[0]
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(python, append([]string{"publisher.py", "--metric", "humidity", "--count", "10", "--sensor-id", thermo.ID}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("publisher.py %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	// Through Mosquitto: anonymous, on the device's topic, with the house's key.
	if got := run("--broker", mq.Addr, "--topic", thermo.Creds.Topic, "--key", house.Key, "--start", "60", "--client-id", "py-mosquitto"); got != "10" {
		t.Fatalf("through Mosquitto: %s acknowledged", got)
	}
	// Through the embedded broker: with the device's credentials.
	if got := run("--broker", s.Series().MQTTAddr(), "--topic", thermo.Creds.Topic, "--key", house.Key, "--start", "70",
		"--username", thermo.Creds.Username, "--password", thermo.Creds.Password, "--client-id", "py-embedded"); got != "10" {
		t.Fatalf("through the embedded broker: %s acknowledged", got)
	}
	alice := w.Users["alice"]
	var h series.History
	eventually(t, func() bool {
		err := c.Do(ctx, alice.Auth(), "GET", "/v1/t/"+house.ID+"/devices/"+thermo.ID+"/history?bucket=raw&metric=humidity", nil, &h)
		return err == nil && len(h.Series) == 1 && len(h.Series[0].Points) == 20
	})
	seen := map[float64]bool{}
	for _, p := range h.Series[0].Points {
		seen[p.Value] = true
	}
	for v := 60.0; v < 80; v++ {
		if !seen[v] {
			t.Fatalf("reading %v is missing: %+v", v, h.Series[0].Points)
		}
	}
	var latest struct{ Items []series.DeviceLatest }
	if err := c.Do(ctx, alice.Auth(), "GET", "/v1/t/"+house.ID+"/devices/latest", nil, &latest); err != nil {
		t.Fatal(err)
	}
	if latest.Items[0].Name != "Smart thermostat" || latest.Items[0].Values[0].Metric != "humidity" || latest.Items[0].Values[0].Value != 79 {
		t.Fatalf("alice's latest data: %+v", latest.Items[0])
	}
	// A token made with another house's key is refused (the embedded broker answers it,
	// so the publisher still sees an acknowledgement: the refusal is in the statistics).
	run("--broker", s.Series().MQTTAddr(), "--topic", thermo.Creds.Topic, "--key", w.Houses[2].Key, "--start", "1", "--count", "1",
		"--username", thermo.Creds.Username, "--password", thermo.Creds.Password, "--client-id", "py-forger")
	var st series.Stats
	if err := c.Do(ctx, alice.Auth(), "GET", "/v1/t/"+house.ID+"/devices/stats", nil, &st); err != nil {
		t.Fatal(err)
	}
	if st.Rejected["forged"] != 1 || st.Readings != 20 {
		t.Fatalf("stats %+v", st)
	}
	// bob, owner of another house, sees none of it.
	if err := c.Do(ctx, w.Users["bob"].Auth(), "GET", "/v1/t/"+house.ID+"/devices/"+thermo.ID+"/history", nil, nil); !notFound(err) {
		t.Fatalf("bob reading alice's thermostat: %v", err)
	}
	var bobs struct{ Items []series.DeviceLatest }
	if err := c.Do(ctx, w.Users["bob"].Auth(), "GET", "/v1/t/"+w.Houses[2].ID+"/devices/latest", nil, &bobs); err != nil {
		t.Fatal(err)
	}
	for _, d := range bobs.Items {
		if len(d.Values) != 0 {
			t.Fatalf("bob's house shows readings nobody published there: %+v", d)
		}
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second) // generous: CI runs every package at once on 2 cores
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(fmt.Errorf("timed out"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
