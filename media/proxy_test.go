package media_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/media"
)

func TestNormalizeURL(t *testing.T) {
	t.Parallel()
	same := []string{"http://Example.COM:80/a.png", "HTTP://example.com/a.png#top", "http://example.com/a.png"}
	for _, u := range same {
		n, err := media.NormalizeURL(u)
		if err != nil || n != "http://example.com/a.png" {
			t.Errorf("%s → %q %v", u, n, err)
		}
	}
	if n, _ := media.NormalizeURL("https://example.com"); n != "https://example.com/" {
		t.Errorf("empty path: %q", n)
	}
	if n, _ := media.NormalizeURL("https://[::1]:443/x?b=1&a=2"); n != "https://[::1]/x?b=1&a=2" {
		t.Errorf("ipv6: %q", n)
	}
	for _, bad := range []string{"", "file:///etc/passwd", "gopher://x/", "http://user:pw@example.com/", "http:///nohost", "javascript:alert(1)", "::"} {
		if _, err := media.NormalizeURL(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// origin serves a PNG and counts its hits.
func origin(t *testing.T, body []byte) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		switch r.URL.Path {
		case "/a.png":
			time.Sleep(20 * time.Millisecond) // let concurrent first requests pile up
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write(body)
		case "/redirect":
			http.Redirect(w, r, "/a.png", http.StatusFound)
		case "/text":
			w.Header().Set("Content-Type", "image/png")
			_, _ = w.Write([]byte("not a png"))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

func TestProxyRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	srv, hits := origin(t, pngBytes(t, 2, 2, 1))
	for _, u := range []string{srv.URL + "/a.png", "http://localhost:" + strings.Split(srv.URL, ":")[2] + "/a.png",
		"http://169.254.169.254/latest/meta-data/", "http://[::1]:1/", "http://0.0.0.0:1/", "http://10.1.2.3:1/", "http://[::ffff:127.0.0.1]:1/"} {
		_, err := e.s.ProxyGet(e.ctx, e.Tenant, u)
		wantProblem(t, err, 403, "proxy_address_forbidden")
	}
	_, err := e.s.ProxyGet(e.ctx, e.Tenant, "file:///etc/passwd")
	wantProblem(t, err, 422, "invalid_url")
	if hits.Load() != 0 || e.count(t, "media_proxies")+e.count(t, "media_hashes") != 0 || len(e.blobs(t)) != 0 {
		t.Fatalf("a refused URL was fetched or kept: %d hits", hits.Load())
	}
}

func TestProxyFetchOnceAndEvict(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	e := setup(t, media.Config{ProxyAllowPrivate: true, Now: clock})
	body := pngBytes(t, 4, 4, 2)
	srv, hits := origin(t, body)
	const n = 6
	got := make([]media.Media, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		u := srv.URL + "/a.png"
		if i%2 == 1 {
			u = strings.ToUpper(srv.URL[:4]) + srv.URL[4:] + "/a.png#frag" // same URL, other spelling
		}
		wg.Go(func() { got[i], errs[i] = e.s.ProxyGet(e.ctx, e.Tenant, u) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i].Alias != got[0].Alias || got[i].Details.Width != 4 {
			t.Fatalf("%d: %+v %v", i, got[i], errs[i])
		}
	}
	if hits.Load() != 1 || e.count(t, "media_proxies") != 1 || e.count(t, "media_aliases") != 1 {
		t.Fatalf("hits %d proxies %d", hits.Load(), e.count(t, "media_proxies"))
	}
	// A redirect is followed (through the same guard) and a second URL maps to the same bytes.
	r, err := e.s.ProxyGet(e.ctx, e.Tenant, srv.URL+"/redirect")
	if err != nil || r.Hash != got[0].Hash || r.Alias == got[0].Alias {
		t.Fatalf("redirect: %+v %v", r, err)
	}
	_, err = e.s.ProxyGet(e.ctx, e.Tenant, srv.URL+"/missing")
	wantProblem(t, err, 502, "proxy_fetch_failed")
	_, err = e.s.ProxyGet(e.ctx, e.Tenant, srv.URL+"/text")
	wantProblem(t, err, 422, "content_mismatch")
	_, err = e.s.ProxyGet(e.As(testworld.Viewer), e.Tenant, srv.URL+"/a.png")
	wantProblem(t, err, 403, "forbidden")
	// Eviction: the redirect's proxy is touched later, so only the first goes.
	clockMu.Lock()
	now = now.Add(time.Hour)
	clockMu.Unlock()
	if _, err := e.s.ProxyGet(e.ctx, e.Tenant, srv.URL+"/redirect"); err != nil {
		t.Fatal(err)
	}
	evicted, err := e.s.ProxiesEvict(context.Background(), now.Add(-time.Minute))
	if err != nil || evicted != 1 {
		t.Fatalf("evict: %d %v", evicted, err)
	}
	if _, err := e.s.MediaGet(e.ctx, e.Tenant, got[0].Alias); err == nil {
		t.Fatal("evicted alias still there")
	}
	if _, err := e.s.MediaGet(e.ctx, e.Tenant, r.Alias); err != nil || len(e.blobs(t)) != 1 {
		t.Fatalf("the recent proxy lost its media: %v %v", err, e.blobs(t))
	}
	// Fetched again after eviction.
	if _, err := e.s.ProxyGet(e.ctx, e.Tenant, srv.URL+"/a.png"); err != nil || hits.Load() != 6 {
		t.Fatalf("refetch: %v, %d hits", err, hits.Load())
	}
}
