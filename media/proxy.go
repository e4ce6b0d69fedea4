package media

import (
	"context"
	"errors"
	"hash/fnv"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

func invalidURL(format string, args ...any) *problem.Error {
	return problem.Unprocessable("invalid_url", format, args...).WithField("query.url", "invalid")
}

// NormalizeURL is the form proxied URLs are compared in: http or https only, no
// credentials, scheme and host in lower case, default port and fragment dropped, an empty
// path as "/". Query strings are kept as sent (their order may matter to the origin).
func NormalizeURL(raw string) (string, error) {
	if len(raw) == 0 || len(raw) > 4096 {
		return "", invalidURL("a proxied URL is 1 to 4096 characters")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", invalidURL("the URL does not parse")
	}
	u.Scheme = strings.ToLower(u.Scheme)
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", invalidURL("only http and https URLs can be proxied")
	}
	if u.User != nil {
		return "", invalidURL("a proxied URL cannot carry credentials")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" {
		return "", invalidURL("the URL has no host")
	}
	if (u.Scheme == "http" && port == "80") || (u.Scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	u.Host = host
	if port != "" {
		u.Host += ":" + port
	}
	u.Fragment, u.RawFragment = "", ""
	if u.Path == "" {
		u.Path = "/"
	}
	u.Opaque = ""
	return u.String(), nil
}

// forbiddenAddr reports whether an address is not a public unicast one: loopback,
// private, link-local, unspecified, multicast, carrier-grade NAT, benchmarking,
// documentation and other reserved ranges (IPv4-mapped IPv6 included).
func forbiddenAddr(a netip.Addr) bool {
	a = a.Unmap()
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() || !a.IsValid() {
		return true
	}
	for _, p := range reserved {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

var reserved = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{"0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "192.0.2.0/24", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4", "255.255.255.255/32", "64:ff9b::/96", "64:ff9b:1::/48",
		"2001:db8::/32", "2002::/16", "100::/64"} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

var errForbiddenAddr = errors.New("media proxy: address not allowed")

// proxyClient fetches with the SSRF guard in the dialer, so every connection (redirects
// too) is checked against the address actually dialled, after DNS resolution.
func (s *Service) proxyClient() *http.Client {
	d := &net.Dialer{Timeout: s.cfg.ProxyTimeout}
	if !s.cfg.ProxyAllowPrivate {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || forbiddenAddr(ap.Addr()) {
				return errForbiddenAddr
			}
			return nil
		}
	}
	tr := &http.Transport{DialContext: d.DialContext, Proxy: nil, ForceAttemptHTTP2: true,
		TLSHandshakeTimeout: s.cfg.ProxyTimeout, ResponseHeaderTimeout: s.cfg.ProxyTimeout, MaxIdleConns: 10, IdleConnTimeout: 30 * time.Second}
	return &http.Client{Transport: tr, Timeout: s.cfg.ProxyTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return errors.New("redirect to a scheme other than http(s)")
			}
			return nil
		}}
}

// proxyLockKey spreads (tenant, url) over advisory lock keys; a collision only makes two
// first fetches wait for each other.
func proxyLockKey(tenant, u string) int32 {
	h := fnv.New32a()
	_, _ = h.Write([]byte(tenant + "\x00" + u))
	return int32(h.Sum32()) //nolint:gosec // a hash folded to the lock key space
}

// proxyLockClass is the advisory lock class of first proxy fetches ('mp' 'x').
const proxyLockClass = 0x6d7078

// proxyLock takes the advisory lock of a first fetch of u, or answers the media another
// request (on any node) fetched meanwhile. Waiters poll with try-locks instead of blocking
// on a pooled connection, so many requests for one URL cannot exhaust the pool while the
// fetch (which needs connections of its own) runs.
func (s *Service) proxyLock(ctx context.Context, tenant, u string) (func(), Media, error) {
	key := proxyLockKey(tenant, u)
	deadline := time.Now().Add(2 * s.cfg.ProxyTimeout)
	for {
		conn, err := s.pool.Acquire(ctx)
		if err != nil {
			return nil, Media{}, db.Translate(err, "proxy")
		}
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1, $2)`, proxyLockClass, key).Scan(&got); err != nil {
			conn.Release()
			return nil, Media{}, db.Translate(err, "proxy")
		}
		if got {
			return func() {
				if _, err := conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1, $2)`, proxyLockClass, key); err != nil {
					_ = conn.Conn().Close(context.Background()) // never pool a connection still holding the lock
				}
				conn.Release()
			}, Media{}, nil
		}
		conn.Release()
		if time.Now().After(deadline) {
			return nil, Media{}, problem.Unavailable("proxy_busy", "another request is still fetching this URL; retry")
		}
		select {
		case <-ctx.Done():
			return nil, Media{}, ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
		if m, ok, err := s.proxyLookup(ctx, tenant, u); err != nil || ok {
			return nil, m, err
		}
	}
}

// ProxyGet answers the media kept for a remote URL (write on "media:*"), fetching it
// first when the tenant has not proxied it yet. URLs compare in NormalizeURL form;
// concurrent first requests for one URL (on any node) fetch it once and end with one
// alias. The fetch refuses non-public addresses unless ProxyAllowPrivate (403
// proxy_address_forbidden), and is bounded by ProxyTimeout and the upload limits. Each
// answer marks the proxy as accessed, for eviction.
func (s *Service) ProxyGet(ctx context.Context, tenant, rawURL string) (Media, error) {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermWrite); err != nil {
		return Media{}, err
	}
	u, err := NormalizeURL(rawURL)
	if err != nil {
		return Media{}, err
	}
	if m, ok, err := s.proxyLookup(ctx, tenant, u); err != nil || ok {
		return m, err
	}
	unlock, m, err := s.proxyLock(ctx, tenant, u)
	if err != nil || unlock == nil {
		return m, err
	}
	defer unlock()
	if m, ok, err := s.proxyLookup(ctx, tenant, u); err != nil || ok {
		return m, err
	}
	up, err := s.proxyFetch(ctx, tenant, u)
	if err != nil {
		return Media{}, err
	}
	if _, err := s.pool.Exec(ctx, `INSERT INTO media_proxies (tenant_id, url, alias, accessed_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (tenant_id, url) DO NOTHING`, tenant, u, up.Alias, s.cfg.Now()); err != nil {
		return Media{}, db.Translate(err, "proxy")
	}
	m, _, err = s.proxyLookup(ctx, tenant, u)
	return m, err
}

// proxyLookup finds the proxy's media and marks it accessed.
func (s *Service) proxyLookup(ctx context.Context, tenant, u string) (Media, bool, error) {
	var alias string
	err := s.pool.QueryRow(ctx, `UPDATE media_proxies SET accessed_at = greatest(accessed_at, $3)
		WHERE tenant_id = $1 AND url = $2 RETURNING alias`, tenant, u, s.cfg.Now()).Scan(&alias)
	if errors.Is(err, pgx.ErrNoRows) {
		return Media{}, false, nil
	}
	if err != nil {
		return Media{}, false, db.Translate(err, "proxy")
	}
	m, err := s.lookup(ctx, tenant, alias)
	return m, err == nil, err
}

func (s *Service) proxyFetch(ctx context.Context, tenant, u string) (Upload, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ProxyTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Upload{}, invalidURL("the URL cannot be requested")
	}
	req.Header.Set("User-Agent", "strata-media-proxy")
	resp, err := s.proxyClient().Do(req)
	if err != nil {
		if errors.Is(err, errForbiddenAddr) {
			return Upload{}, problem.Forbidden("proxy_address_forbidden", "the URL leads to an address that may not be fetched")
		}
		return Upload{}, problem.New(http.StatusBadGateway, "proxy_fetch_failed", "fetching the URL failed").WithCause(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Upload{}, problem.New(http.StatusBadGateway, "proxy_fetch_failed", "the URL answered %d", resp.StatusCode)
	}
	if resp.ContentLength > s.cfg.Limits.MaxBytes {
		return Upload{}, tooLarge(s.cfg.Limits.MaxBytes)
	}
	ct := resp.Header.Get("Content-Type")
	if i := strings.IndexByte(ct, ';'); i >= 0 {
		ct = ct[:i]
	}
	up, err := s.ingest(ctx, tenant, UploadInput{Body: resp.Body, ContentType: strings.TrimSpace(strings.ToLower(ct))})
	if p, ok := problem.As(err); ok && p.Code == "upload_interrupted" {
		return Upload{}, problem.New(http.StatusBadGateway, "proxy_fetch_failed", "reading the URL's answer failed").WithCause(err)
	}
	return up, err
}

// ProxyOpen is ProxyGet that also opens the media's bytes; the caller closes the blob.
func (s *Service) ProxyOpen(ctx context.Context, tenant, rawURL string) (Blob, Media, error) {
	m, err := s.ProxyGet(ctx, tenant, rawURL)
	if err != nil {
		return nil, Media{}, err
	}
	b, err := s.open(ctx, m)
	return b, m, err
}
