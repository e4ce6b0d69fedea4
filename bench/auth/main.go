// Command auth measures what authentication costs per request: requests/s of GET /v1/ping
// over loopback HTTP (keep-alive, the same concurrency) with a JWT, with HTTP Basic after
// its first (argon2-verified) request, and with an API key, each as a ratio to the same
// endpoint called anonymously, in one run; and the argon2id cost of one sign-in.
//
//	go run ./auth [-d 10s] [-c 16] [-rounds 10]
package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/bench/internal/harness"
	"github.com/stratadb/strata/internal/server"
	"golang.org/x/crypto/argon2"
)

func main() {
	dur := flag.Duration("d", 10*time.Second, "total duration of each case")
	conc := flag.Int("c", 16, "concurrent clients")
	rounds := flag.Int("rounds", 10, "interleaved rounds")
	flag.Parse()
	ctx := context.Background()
	s, cleanup, err := harness.Platform(ctx, strata.Config{AdminPassword: "bench-admin-password",
		Auth: auth.Config{SignInPerMinute: 1 << 20, SignInPerMinutePerIP: 1 << 20}})
	if err != nil {
		log.Fatal(err)
	}
	defer cleanup()
	api := server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Auth: s.Auth(), Audit: s.Audit(), Version: "bench"})
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	srv := server.NewHTTPServer(server.Config{}, api, nil)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	base := "http://" + ln.Addr().String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc * 2, MaxConnsPerHost: *conc * 2}}

	call := func(method, path, authz, body string) (int, []byte) {
		req, _ := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := client.Do(req)
		if err != nil {
			log.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	// A user with a tenant and an API key.
	start := time.Now()
	code, b := call("POST", "/v1/auth/token", "", `{"username":"admin","password":"bench-admin-password"}`)
	signIn := time.Since(start)
	if code != 200 {
		log.Fatalf("sign in: %d %s", code, b)
	}
	var tok auth.Tokens
	_ = json.Unmarshal(b, &tok)
	_, b = call("POST", "/v1/tenants", "Bearer "+tok.AccessToken, `{"name":"bench"}`)
	var ten auth.Tenant
	_ = json.Unmarshal(b, &ten)
	_, b = call("POST", "/v1/t/"+ten.ID+"/api-keys", "Bearer "+tok.AccessToken, `{"name":"bench","role":"member"}`)
	var key struct{ Key string }
	_ = json.Unmarshal(b, &key)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:bench-admin-password"))

	ping := func(authz string) func(context.Context) error {
		return func(ctx context.Context) error {
			req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/ping", nil)
			if authz != "" {
				req.Header.Set("Authorization", authz)
			}
			resp, err := client.Do(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
	}
	// Warm up every path (the Basic credential's first verification happens here).
	for _, a := range []string{"", "Bearer " + tok.AccessToken, basic, "Bearer " + key.Key} {
		harness.Load("warm", *conc, 500*time.Millisecond, 1<<40, ping(a))
	}
	before := s.Auth().PasswordVerifications()
	rs := harness.Interleave(*rounds, *conc, *dur/time.Duration(*rounds),
		harness.Case{Name: "anonymous (baseline)", Op: ping("")},
		harness.Case{Name: "JWT bearer", Op: ping("Bearer " + tok.AccessToken)},
		harness.Case{Name: "HTTP Basic (cached after first)", Op: ping(basic)},
		harness.Case{Name: "API key", Op: ping("Bearer " + key.Key)})
	after := s.Auth().PasswordVerifications()

	fmt.Printf("## Authentication cost per request (GET /v1/ping, %d clients, %s per case in %d interleaved rounds, GOMAXPROCS=%d)\n\n",
		*conc, *dur, *rounds, runtime.GOMAXPROCS(0))
	harness.Table(os.Stdout, rs[0], rs[1:]...)
	fmt.Printf("\nargon2id verifications during the measured Basic run: %d (the cache served the rest)\n", after-before)
	fmt.Printf("one sign-in over HTTP (argon2id 64 MiB, 1 pass, 2 lanes, plus session insert): %s\n", signIn.Round(time.Millisecond))
	p := auth.Argon2Params{}.Defaults()
	const n = 10
	t0 := time.Now()
	for range n {
		_ = argon2.IDKey([]byte("bench-admin-password"), []byte("0123456789abcdef"), p.Time, p.MemoryKiB, p.Threads, 32)
	}
	fmt.Printf("argon2id alone (%d KiB, %d pass, %d lanes): %s per hash (mean of %d)\n", p.MemoryKiB, p.Time, p.Threads,
		(time.Since(t0) / n).Round(time.Millisecond), n)
}
