// Command smarthome runs seed 002 — a smart-home system — on Strata.
//
// Houses are tenants; users are owners or admins of houses with tenancy dates (the seed's
// HouseUser table is Strata's memberships); appliances are devices whose sensors publish
// Fernet-encrypted JSON readings over MQTT (each house has its key, like the seed's
// encryption_key_userN.key); the subscriber, Redis and the FastAPI backend of the seed
// are Strata itself: it decrypts, validates, stores the history, keeps the latest values
// and serves each user the houses they may see — /houses/{id}/data is
// GET /v1/t/{house}/devices/latest.
//
// Against a running strata (its embedded broker on the default address):
//
//	go run ./examples/smarthome -url http://127.0.0.1:8080 -admin-password '…' -for 30s
package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/fernet/fernet-go"
	"github.com/stratadb/strata/series"
)

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "Strata's HTTP API")
	adminPW := flag.String("admin-password", os.Getenv("STRATA_ADMIN_PASSWORD"), "password of the platform administrator \"admin\"")
	mqttAddr := flag.String("mqtt", "127.0.0.1:1883", "Strata's embedded MQTT broker")
	every := flag.Duration("every", time.Second, "how often each appliance publishes")
	dur := flag.Duration("for", 10*time.Second, "how long the simulator runs")
	flag.Parse()
	ctx := context.Background()
	c := &Client{Base: strings.TrimRight(*base, "/"), HTTP: http.DefaultClient}
	admin := Basic("admin", *adminPW)
	w, err := Seed(ctx, c, admin)
	if err != nil {
		log.Fatal(err)
	}
	n, err := Simulate(ctx, w, *mqttAddr, *every, time.Now().Add(*dur))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("published %d readings\n\n", n)
	if err := Report(ctx, c, w, os.Stdout); err != nil {
		log.Fatal(err)
	}
}

// Client calls Strata's HTTP API.
type Client struct {
	Base string
	HTTP *http.Client
}

// Basic is an Authorization header for HTTP Basic (the seed's API used it).
func Basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// StatusError is a non-2xx answer.
type StatusError struct {
	Status int
	Body   string
}

func (e *StatusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Body) }

// Do sends a JSON request and decodes the answer into out (when not nil).
func (c *Client) Do(ctx context.Context, authz, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", authz)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return &StatusError{resp.StatusCode, string(b)}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// User is a person of the seed.
type User struct {
	Name, ID, Password string
}

// Auth is the user's Authorization header.
func (u *User) Auth() string { return Basic(u.Name, u.Password) }

// Appliance is a device of a house, with what it measures.
type Appliance struct {
	Name, Kind string
	Metrics    map[string]series.Metric
	ID         string
	Creds      series.Credentials
}

// House is a tenant, with its Fernet key.
type House struct {
	Name, Address, City string
	ID                  string
	Key                 string
	Appliances          []*Appliance
}

// World is the seeded system.
type World struct {
	Houses []*House
	Users  map[string]*User
}

func rng(lo, hi float64, unit string) series.Metric {
	return series.Metric{Min: &lo, Max: &hi, Unit: unit}
}

// appliances are the seed's sensors: fire/CO, leak, windows and doors, thermostat,
// motion, garage door, and a few household appliances.
func appliances() []*Appliance {
	flag := rng(0, 1, "")
	return []*Appliance{
		{Name: "Smart thermostat", Kind: "thermostat", Metrics: map[string]series.Metric{
			"temperature": rng(-20, 50, "°C"), "humidity": rng(0, 100, "%"), "setpoint": rng(5, 30, "°C")}},
		{Name: "Fire/CO detector", Kind: "smoke_co", Metrics: map[string]series.Metric{"co_ppm": rng(0, 1000, "ppm"), "smoke": flag}},
		{Name: "Leak sensor", Kind: "leak", Metrics: map[string]series.Metric{"moisture": rng(0, 100, "%"), "leak": flag}},
		{Name: "Front door", Kind: "contact", Metrics: map[string]series.Metric{"open": flag}},
		{Name: "Motion sensor", Kind: "motion", Metrics: map[string]series.Metric{"motion": flag}},
		{Name: "Garage door", Kind: "garage", Metrics: map[string]series.Metric{"open": flag}},
		{Name: "Refrigerator", Kind: "appliance", Metrics: map[string]series.Metric{"temperature": rng(-5, 15, "°C"), "power_w": rng(0, 500, "W")}},
		{Name: "Washing machine", Kind: "appliance", Metrics: map[string]series.Metric{"power_w": rng(0, 3000, "W"), "water_l": rng(0, 100, "l")}},
	}
}

// Seed creates the seed's users, houses, tenancies and appliances as the platform admin.
// alice owns two houses (New York, Boston), bob one; carol administers alice's New York
// house; dave's tenancy of bob's house ended last year, so he sees nothing.
func Seed(ctx context.Context, c *Client, admin string) (*World, error) {
	w := &World{Users: map[string]*User{}}
	suffix := fmt.Sprintf("%04d", rand.IntN(10000)) //nolint:gosec // a name suffix, not a secret
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		u := &User{Name: name + suffix, Password: name + "-pass-" + suffix}
		var out struct{ ID string }
		if err := c.Do(ctx, admin, "POST", "/v1/users", map[string]string{"username": u.Name, "password": u.Password}, &out); err != nil {
			return nil, fmt.Errorf("creating user %s: %w", name, err)
		}
		u.ID = out.ID
		w.Users[name] = u
	}
	houses := []struct {
		owner string
		house *House
	}{
		{"alice", &House{Name: "123 Elm Street", Address: "123 Elm Street, Suite 100", City: "New York"}},
		{"alice", &House{Name: "222 Cedar Avenue", Address: "222 Cedar Avenue", City: "Boston"}},
		{"bob", &House{Name: "9 Oak Road", Address: "9 Oak Road", City: "Amberg"}},
	}
	for _, h := range houses {
		owner := w.Users[h.owner]
		var t struct{ ID string }
		if err := c.Do(ctx, owner.Auth(), "POST", "/v1/tenants", map[string]string{"name": h.house.Name}, &t); err != nil {
			return nil, fmt.Errorf("creating house %s: %w", h.house.Name, err)
		}
		h.house.ID = t.ID
		var key struct{ Secret string }
		if err := c.Do(ctx, owner.Auth(), "POST", "/v1/t/"+t.ID+"/devices/keys", map[string]string{"name": "house key"}, &key); err != nil {
			return nil, err
		}
		h.house.Key = key.Secret
		for _, a := range appliances() {
			var out struct {
				Device      series.Device
				Credentials series.Credentials
			}
			meta := map[string]string{"address": h.house.Address, "city": h.house.City}
			if err := c.Do(ctx, owner.Auth(), "POST", "/v1/t/"+t.ID+"/devices",
				map[string]any{"name": a.Name, "kind": a.Kind, "metrics": a.Metrics, "metadata": meta}, &out); err != nil {
				return nil, fmt.Errorf("creating appliance %s: %w", a.Name, err)
			}
			a.ID, a.Creds = out.Device.ID, out.Credentials
			h.house.Appliances = append(h.house.Appliances, a)
		}
		w.Houses = append(w.Houses, h.house)
	}
	tenancies := []struct {
		house      int
		user, role string
		from, to   string
	}{
		{0, "carol", "admin", "2025-01-01", ""},
		{2, "dave", "owner", "2024-01-01", "2024-12-31"},
	}
	for _, m := range tenancies {
		body := map[string]any{"user_id": w.Users[m.user].ID, "role": m.role, "starts_on": m.from}
		if m.to != "" {
			body["ends_on"] = m.to
		}
		owner := w.Users["alice"]
		if m.house == 2 {
			owner = w.Users["bob"]
		}
		if err := c.Do(ctx, owner.Auth(), "POST", "/v1/t/"+w.Houses[m.house].ID+"/members", body, nil); err != nil {
			return nil, fmt.Errorf("adding %s to a house: %w", m.user, err)
		}
	}
	return w, nil
}

// Simulate has every appliance of every house publish a Fernet-encrypted reading every
// interval until the deadline, over MQTT at QoS 1, and returns how many were acknowledged
// (so stored).
func Simulate(ctx context.Context, w *World, mqttAddr string, every time.Duration, until time.Time) (int, error) {
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for _, h := range w.Houses {
		key, err := fernet.DecodeKey(h.Key)
		if err != nil {
			return 0, err
		}
		for _, a := range h.Appliances {
			wg.Go(func() {
				n, err := runAppliance(ctx, a, key, mqttAddr, every, until)
				mu.Lock()
				total += n
				mu.Unlock()
				if err != nil {
					errs <- fmt.Errorf("%s: %w", a.Name, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	return total, <-errs
}

func runAppliance(ctx context.Context, a *Appliance, key *fernet.Key, addr string, every time.Duration, until time.Time) (int, error) {
	conn, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: "appliance-" + a.ID})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "appliance-" + a.ID, KeepAlive: 30, CleanStart: true,
		Username: a.Creds.Username, UsernameFlag: true, Password: []byte(a.Creds.Password), PasswordFlag: true})
	if err != nil {
		return 0, err
	}
	if ca.ReasonCode != 0 {
		return 0, fmt.Errorf("refused: %d", ca.ReasonCode)
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	sent := 0
	for {
		values := map[string]float64{}
		for name, m := range a.Metrics {
			v := *m.Min + rand.Float64()*(*m.Max-*m.Min) //nolint:gosec // simulated sensor values
			if *m.Max == 1 && *m.Min == 0 {
				v = float64(rand.IntN(2)) //nolint:gosec // simulated sensor values
			}
			values[name] = float64(int(v*10)) / 10
		}
		payload, _ := json.Marshal(map[string]any{"sensor_id": a.ID, "timestamp": time.Now().UTC().Format(time.RFC3339Nano), "values": values})
		tok, err := fernet.EncryptAndSign(payload, key)
		if err != nil {
			return sent, err
		}
		r, err := c.Publish(ctx, &paho.Publish{Topic: a.Creds.Topic, QoS: 1, Payload: tok})
		if err != nil {
			return sent, err
		}
		if r.ReasonCode != 0 {
			return sent, fmt.Errorf("reading refused: reason %#x", r.ReasonCode)
		}
		sent++
		if !time.Now().Add(every).Before(until) {
			return sent, nil
		}
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-time.After(every):
		}
	}
}

// Report prints, as each user, the houses they may see and each house's latest data.
func Report(ctx context.Context, c *Client, w *World, out io.Writer) error {
	for _, name := range []string{"alice", "bob", "carol", "dave"} {
		u := w.Users[name]
		var ts struct {
			Items []struct{ ID, Name, Role string }
		}
		if err := c.Do(ctx, u.Auth(), "GET", "/v1/tenants", nil, &ts); err != nil {
			return err
		}
		fmt.Fprintf(out, "%s sees %d house(s)\n", name, len(ts.Items))
		for _, t := range ts.Items {
			var latest struct{ Items []series.DeviceLatest }
			if err := c.Do(ctx, u.Auth(), "GET", "/v1/t/"+t.ID+"/devices/latest", nil, &latest); err != nil {
				return err
			}
			fmt.Fprintf(out, "  %s (%s):\n", t.Name, t.Role)
			for _, d := range latest.Items {
				var parts []string
				for _, v := range d.Values {
					parts = append(parts, fmt.Sprintf("%s=%g", v.Metric, v.Value))
				}
				fmt.Fprintf(out, "    %-18s %s\n", d.Name, strings.Join(parts, " "))
			}
		}
	}
	return nil
}
