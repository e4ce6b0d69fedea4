package server_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/png"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/server"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/media"
)

// mediaWorld is newWorld on a platform whose media live in a temporary directory, with
// small limits.
func mediaWorld(t *testing.T) (*world, *media.FileStore) {
	t.Helper()
	return mediaWorldWith(t, media.Config{Limits: media.Limits{MaxBytes: 256 << 10, MaxWidth: 500, MaxHeight: 500}})
}

func mediaWorldWith(t *testing.T, cfg media.Config) (*world, *media.FileStore) {
	t.Helper()
	s, err := strata.Open(context.Background(), strata.Config{DatabaseURL: testdb.NewURL(t, audit.Schema, auth.Schema),
		AdminPassword: "root-password", Auth: cheapAuth, DataDir: t.TempDir(), Media: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	p := &platform{t: t, s: s}
	p.h = server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Version: "test", Auth: s.Auth(), Audit: s.Audit(),
		Feed: s.Feed(), Queue: s.Queue(), Media: s.Media()})
	p.root = p.token("admin", "root-password")
	w := worldOn(p)
	st, ok := s.Media().Store().(*media.FileStore)
	if !ok {
		t.Fatal("not a file store")
	}
	return w, st
}

func testPNG(t *testing.T, w, h int, seed byte) []byte {
	t.Helper()
	img := image.NewGray(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = seed + byte(i)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// multipartBody builds a multipart/form-data body with one part named field.
func multipartBody(t *testing.T, field, contentType string, content []byte) (string, string) {
	t.Helper()
	var b bytes.Buffer
	mw := multipart.NewWriter(&b)
	_ = mw.WriteField("note", "ignored")
	h := textproto.MIMEHeader{}
	h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename="x"`, field))
	if contentType != "" {
		h.Set("Content-Type", contentType)
	}
	pw, err := mw.CreatePart(h)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = pw.Write(content)
	_ = mw.Close()
	return b.String(), mw.FormDataContentType()
}

// upload posts content as the part "file" and answers the response.
func (w *world) upload(who, contentType string, content []byte) response {
	w.t.Helper()
	body, ct := multipartBody(w.t, "file", contentType, content)
	return w.doHeaders("POST", "/v1/t/"+w.T+"/media", w.authz[who], body, map[string]string{"Content-Type": ct})
}

func (w *world) mediaRows() (hashes, aliases int) {
	w.t.Helper()
	err := w.s.Pool().QueryRow(context.Background(), `SELECT (SELECT count(*) FROM strata.media_hashes), (SELECT count(*) FROM strata.media_aliases)`).Scan(&hashes, &aliases)
	if err != nil {
		w.t.Fatal(err)
	}
	return
}

func storeBlobs(t *testing.T, st *media.FileStore) int {
	t.Helper()
	n := 0
	if err := st.List(context.Background(), func(string, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestMediaHTTPLifecycle(t *testing.T) {
	t.Parallel()
	w, st := mediaWorld(t)
	img := testPNG(t, 12, 7, 3)
	r := w.upload(owner, "image/png", img)
	if r.status != 201 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	var up media.Upload
	r.json(t, &up)
	if up.Details.Width != 12 || up.Details.Height != 7 || up.Details.Format != "png" || up.DeleteToken == "" || up.Deduplicated {
		t.Fatalf("upload: %+v", up)
	}
	base := "/v1/t/" + w.T + "/media/"
	// The original, with its type, the hash as ETag, ranges and conditional requests.
	g := w.must(200, "GET", base+up.Alias, w.authz[viewer], "")
	if g.body != string(img) || g.header.Get("Content-Type") != "image/png" || g.header.Get("ETag") != `"`+up.Hash+`"` {
		t.Fatalf("original: %d bytes, %v", len(g.body), g.header)
	}
	rg := w.doHeaders("GET", base+up.Alias, w.authz[viewer], "", map[string]string{"Range": "bytes=0-7"})
	if rg.status != 206 || rg.body != string(img[:8]) {
		t.Fatalf("range: %d %q", rg.status, rg.body)
	}
	nm := w.doHeaders("GET", base+up.Alias, w.authz[viewer], "", map[string]string{"If-None-Match": `"` + up.Hash + `"`})
	if nm.status != 304 {
		t.Fatalf("If-None-Match: %d", nm.status)
	}
	d := w.must(200, "GET", base+up.Alias+"/details?blurhash=true", w.authz[member], "")
	var m media.Media
	d.json(t, &m)
	if m.Hash != up.Hash || m.Details.Width != 12 || m.Details.ContentType != "image/png" || m.Details.Blurhash == "" {
		t.Fatalf("details: %+v", m)
	}
	// The same bytes again: a new alias and token, one blob.
	r2 := w.upload(admin, "", img)
	var up2 media.Upload
	r2.json(t, &up2)
	if r2.status != 201 || !up2.Deduplicated || up2.Alias == up.Alias || storeBlobs(t, st) != 1 {
		t.Fatalf("dedupe: %d %+v", r2.status, up2)
	}
	// Idempotency-Key: a retry answers the first result.
	ib, ict := multipartBody(t, "file", "", testPNG(t, 2, 9, 9))
	i1 := w.doHeaders("POST", "/v1/t/"+w.T+"/media", w.authz[owner], ib, map[string]string{"Content-Type": ict, "Idempotency-Key": "once"})
	i2 := w.doHeaders("POST", "/v1/t/"+w.T+"/media", w.authz[owner], ib, map[string]string{"Content-Type": ict, "Idempotency-Key": "once"})
	if i1.status != 201 || i2.status != 201 || i1.body != i2.body {
		t.Fatalf("idempotent upload: %d %s / %d %s", i1.status, i1.body, i2.status, i2.body)
	}
	// Admin listing.
	l := w.must(200, "GET", "/v1/t/"+w.T+"/media?limit=10", w.authz[owner], "")
	if !strings.Contains(l.body, up.Hash) || !strings.Contains(l.body, `"aliases":2`) || !strings.Contains(l.body, `"aliases":1`) {
		t.Fatalf("list: %s", l.body)
	}
	w.must(403, "GET", "/v1/t/"+w.T+"/media", w.authz[member], "")
	// Delete: wrong token 403, right token 204, again 204; the last alias removes the blob.
	del := func(alias, token string) response {
		return w.doHeaders("DELETE", base+alias, w.authz[owner], "", map[string]string{"Delete-Token": token})
	}
	if r := del(up.Alias, up2.DeleteToken); r.status != 403 || !strings.Contains(r.body, "wrong_delete_token") {
		t.Fatalf("wrong token: %d %s", r.status, r.body)
	}
	if r := w.do("DELETE", base+up.Alias, w.authz[owner], ""); r.status != 422 && r.status != 400 {
		t.Fatalf("no token: %d %s", r.status, r.body)
	}
	for range 2 {
		if r := del(up.Alias, up.DeleteToken); r.status != 204 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
	}
	w.must(404, "GET", base+up.Alias, w.authz[owner], "")
	w.must(200, "GET", base+up2.Alias, w.authz[owner], "")
	if r := del(up2.Alias, up2.DeleteToken); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	var iu media.Upload
	i1.json(t, &iu)
	if r := del(iu.Alias, iu.DeleteToken); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	if h, a := w.mediaRows(); h+a != 0 || storeBlobs(t, st) != 0 {
		t.Fatalf("left %d hashes %d aliases %d blobs", h, a, storeBlobs(t, st))
	}
	// Purge by hash.
	r3 := w.upload(owner, "", img)
	var up3 media.Upload
	r3.json(t, &up3)
	w.must(403, "DELETE", "/v1/t/"+w.T+"/media/hashes/"+up3.Hash, w.authz[member], "")
	w.must(204, "DELETE", "/v1/t/"+w.T+"/media/hashes/"+up3.Hash, w.authz[owner], "")
	w.must(404, "DELETE", "/v1/t/"+w.T+"/media/hashes/"+up3.Hash, w.authz[owner], "")
	w.must(404, "GET", base+up3.Alias, w.authz[owner], "")
	pr := w.must(200, "POST", "/v1/t/"+w.T+"/media/prune-missing", w.authz[owner], "")
	if !strings.Contains(pr.body, `"removed":0`) {
		t.Fatalf("prune: %s", pr.body)
	}
}

// Each bad upload gets its problem and leaves no row, blob or spool file.
func TestMediaHTTPBadUploads(t *testing.T) {
	t.Parallel()
	w, st := mediaWorld(t)
	img := testPNG(t, 5, 5, 1)
	bodyOf := func(field, ct string, content []byte) (string, map[string]string) {
		b, mct := multipartBody(t, field, ct, content)
		return b, map[string]string{"Content-Type": mct}
	}
	type req struct {
		body    string
		headers map[string]string
	}
	mk := func(field, ct string, content []byte) req { b, h := bodyOf(field, ct, content); return req{b, h} }
	cases := []struct {
		name   string
		who    string
		req    req
		status int
		code   string
	}{
		{"anonymous", anon, mk("file", "", img), 401, ""},
		{"outsider", outsider, mk("file", "", img), 404, ""},
		{"viewer", viewer, mk("file", "", img), 403, "forbidden"},
		{"not multipart", owner, req{"hello", map[string]string{"Content-Type": "text/plain"}}, 415, "unsupported_media_type"},
		{"no file part", owner, mk("other", "", img), 400, "missing_file"},
		{"empty", owner, mk("file", "image/png", nil), 422, "empty_upload"},
		{"too wide", owner, mk("file", "", testPNG(t, 501, 2, 0)), 422, "image_too_wide"},
		{"lying type", owner, mk("file", "image/gif", img), 422, "content_mismatch"},
		{"truncated", owner, mk("file", "image/png", img[:len(img)-5]), 422, "truncated_image"},
		{"oversize streamed", owner, mk("file", "", make([]byte, 256<<10+1)), 413, "upload_too_large"},
		{"garbage", owner, mk("file", "", []byte("just text")), 422, "kind_not_allowed"},
	}
	for _, c := range cases {
		r := w.doHeaders("POST", "/v1/t/"+w.T+"/media", w.authz[c.who], c.req.body, c.req.headers)
		if r.status != c.status || c.code != "" && !strings.Contains(r.body, `"code":"`+c.code+`"`) ||
			!strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") {
			t.Errorf("%s: %d %s, want %d %s", c.name, r.status, r.body, c.status, c.code)
		}
	}
	if h, a := w.mediaRows(); h+a != 0 || storeBlobs(t, st) != 0 {
		t.Fatalf("bad uploads left %d hashes %d aliases %d blobs", h, a, storeBlobs(t, st))
	}
	if ents, _ := os.ReadDir(st.TempDir()); len(ents) != 0 {
		t.Fatalf("spool files left: %d", len(ents))
	}
}

// countingReader counts how much of a body the server read.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// An upload whose Content-Length is over the limit is refused before its body is read.
func TestMediaHTTPOversizeBeforeBody(t *testing.T) {
	t.Parallel()
	w, _ := mediaWorld(t)
	body, ct := multipartBody(t, "file", "", make([]byte, 1<<20))
	cr := &countingReader{r: strings.NewReader(body)}
	req := httptest.NewRequest("POST", "/v1/t/"+w.T+"/media", cr)
	req.ContentLength = int64(len(body))
	req.Header.Set("Content-Type", ct)
	req.Header.Set("Authorization", w.authz[owner])
	rec := httptest.NewRecorder()
	w.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge || !strings.Contains(rec.Body.String(), "upload_too_large") {
		t.Fatalf("%d %s", rec.Code, rec.Body.String())
	}
	if cr.n != 0 {
		t.Fatalf("read %d bytes of an oversize body", cr.n)
	}
}

// Reads answer every identity of the tenant; another tenant's owner gets 404 and the
// anonymous 401, for every media route.
func TestMediaHTTPTenantWall(t *testing.T) {
	t.Parallel()
	w, _ := mediaWorld(t)
	r := w.upload(owner, "", testPNG(t, 2, 2, 9))
	var up media.Upload
	r.json(t, &up)
	base := "/v1/t/" + w.T + "/media"
	paths := []struct{ method, path string }{
		{"GET", base + "/" + up.Alias}, {"GET", base + "/" + up.Alias + "/details"}, {"GET", base},
		{"DELETE", base + "/hashes/" + up.Hash}, {"POST", base + "/prune-missing"},
	}
	for _, p := range paths {
		if r := w.do(p.method, p.path, "", ""); r.status != 401 {
			t.Errorf("%s %s anonymous: %d", p.method, p.path, r.status)
		}
		if r := w.do(p.method, p.path, w.authz[outsider], ""); r.status != 404 || strings.Contains(r.body, up.Hash) {
			t.Errorf("%s %s outsider: %d %s", p.method, p.path, r.status, r.body)
		}
	}
	if r := w.doHeaders("DELETE", base+"/"+up.Alias, w.authz[outsider], "", map[string]string{"Delete-Token": up.DeleteToken}); r.status != 404 {
		t.Errorf("outsider delete: %d", r.status)
	}
	for _, who := range []string{viewer, member, admin, owner, platAdm, apiKey} {
		w.must(200, "GET", base+"/"+up.Alias, w.authz[who], "")
	}
}

// Hostile proxy URLs get their problem and fetch nothing.
func TestMediaHTTPProxyRefusals(t *testing.T) {
	t.Parallel()
	w, st := mediaWorld(t)
	hits := 0
	origin := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits++ }))
	t.Cleanup(origin.Close)
	base := "/v1/t/" + w.T + "/media/proxy?url="
	cases := []struct {
		url, code string
		status    int
	}{
		{origin.URL + "/a.png", "proxy_address_forbidden", 403},
		{"http://169.254.169.254/latest/meta-data/", "proxy_address_forbidden", 403},
		{"file:///etc/passwd", "invalid_url", 422},
		{"http://user:secret@example.com/", "invalid_url", 422},
	}
	for _, c := range cases {
		r := w.do("GET", base+url.QueryEscape(c.url), w.authz[owner], "")
		if r.status != c.status || !strings.Contains(r.body, `"code":"`+c.code+`"`) || strings.Contains(r.body, "secret") {
			t.Errorf("%s: %d %s", c.url, r.status, r.body)
		}
	}
	w.must(401, "GET", base+url.QueryEscape(origin.URL), "", "")
	if r := w.do("GET", base+url.QueryEscape(origin.URL), w.authz[viewer], ""); r.status != 403 {
		t.Errorf("viewer: %d", r.status)
	}
	if h, a := w.mediaRows(); hits != 0 || h+a != 0 || storeBlobs(t, st) != 0 {
		t.Fatalf("refused proxies fetched %d times or kept rows", hits)
	}
}

func TestMediaHTTPVariants(t *testing.T) {
	t.Parallel()
	w, _ := mediaWorld(t)
	r := w.upload(owner, "", testPNG(t, 60, 30, 5))
	var up media.Upload
	r.json(t, &up)
	base := "/v1/t/" + w.T + "/media/" + up.Alias + "/variants/"
	w.must(404, "HEAD", base+"thumbnail=20/format=jpeg", w.authz[viewer], "")
	g := w.must(200, "GET", base+"thumbnail=20/format=jpeg", w.authz[viewer], "")
	cfg, format, err := image.DecodeConfig(strings.NewReader(g.body))
	if err != nil || format != "jpeg" || cfg.Width != 20 || cfg.Height != 10 || g.header.Get("Content-Type") != "image/jpeg" {
		t.Fatalf("variant: %v %s %+v %v", err, format, cfg, g.header)
	}
	w.must(200, "HEAD", base+"format=jpeg/thumbnail=20", w.authz[viewer], "") // the same spec, canonically
	if r := w.do("GET", base+"rotate=90", w.authz[owner], ""); r.status != 422 || !strings.Contains(r.body, "invalid_spec") {
		t.Fatalf("bad spec: %d %s", r.status, r.body)
	}
	if r := w.do("GET", base+"thumbnail=7?background=true", w.authz[owner], ""); r.status != 202 || r.header.Get("Retry-After") == "" {
		t.Fatalf("background: %d %s", r.status, r.body)
	}
	w.must(404, "GET", base+"thumbnail=20", w.authz[outsider], "")
	w.must(403, "DELETE", "/v1/t/"+w.T+"/media/variants", w.authz[member], "")
	d := w.must(200, "DELETE", "/v1/t/"+w.T+"/media/variants", w.authz[owner], "")
	if !strings.Contains(d.body, `"removed":`) {
		t.Fatalf("delete all: %s", d.body)
	}
	w.must(404, "HEAD", base+"thumbnail=20/format=jpeg", w.authz[viewer], "")
}

func TestMediaHTTPBackgroundUpload(t *testing.T) {
	t.Parallel()
	w, _ := mediaWorld(t)
	body, ct := multipartBody(t, "file", "image/png", testPNG(t, 8, 4, 2))
	r := w.doHeaders("POST", "/v1/t/"+w.T+"/media/uploads", w.authz[owner], body, map[string]string{"Content-Type": ct})
	var acc struct {
		UploadID string `json:"upload_id"`
	}
	r.json(t, &acc)
	if r.status != 202 || acc.UploadID == "" {
		t.Fatalf("background: %d %s", r.status, r.body)
	}
	claim := "/v1/t/" + w.T + "/media/uploads/" + acc.UploadID + "/claim?wait_seconds=10"
	w.must(404, "POST", claim, w.authz[outsider], "")
	c := w.must(201, "POST", claim, w.authz[owner], "")
	var up media.Upload
	c.json(t, &up)
	if up.Details.Width != 8 || up.DeleteToken == "" {
		t.Fatalf("claimed: %s", c.body)
	}
	if r := w.do("POST", claim, w.authz[owner], ""); r.status != 404 || !strings.Contains(r.body, "upload_not_found") {
		t.Fatalf("second claim: %d %s", r.status, r.body)
	}
	w.must(200, "GET", "/v1/t/"+w.T+"/media/"+up.Alias, w.authz[viewer], "")
}

func TestMediaHTTPNotFoundImage(t *testing.T) {
	t.Parallel()
	w, _ := mediaWorld(t)
	img := testPNG(t, 3, 3, 1)
	r := w.upload(owner, "", img)
	var up media.Upload
	r.json(t, &up)
	base := "/v1/t/" + w.T + "/media/"
	if r := w.do("GET", base+"missing.png", w.authz[viewer], ""); r.status != 404 || !strings.Contains(r.body, "alias_not_found") {
		t.Fatalf("before: %d %s", r.status, r.body)
	}
	w.must(403, "PUT", base+"not-found", w.authz[member], `{"alias":"`+up.Alias+`"}`)
	w.must(404, "PUT", base+"not-found", w.authz[owner], `{"alias":"nope.png"}`)
	w.must(204, "PUT", base+"not-found", w.authz[owner], `{"alias":"`+up.Alias+`"}`)
	r = w.do("GET", base+"missing.png", w.authz[viewer], "")
	if r.status != 404 || r.body != string(img) || r.header.Get("Content-Type") != "image/png" {
		t.Fatalf("not-found image: %d %q", r.status, r.header)
	}
	// Only after authorization: another tenant's people still get the plain 404.
	if r := w.do("GET", base+"missing.png", w.authz[outsider], ""); r.status != 404 || r.body == string(img) {
		t.Fatalf("outsider got the image: %d", r.status)
	}
	w.must(204, "PUT", base+"not-found", w.authz[owner], `{"alias":""}`)
	if r := w.do("GET", base+"missing.png", w.authz[viewer], ""); r.body == string(img) {
		t.Fatal("unset image still served")
	}
}

func (w *world) mediaDigest(t *testing.T) string {
	t.Helper()
	var d string
	if err := w.s.Pool().QueryRow(context.Background(), `SELECT md5(coalesce(string_agg(x, ',' ORDER BY x), '')) FROM (
		SELECT 'h' || tenant_id || encode(hash, 'hex') || identifier FROM strata.media_hashes
		UNION ALL SELECT 'a' || tenant_id || alias || encode(hash, 'hex') || encode(token_hash, 'hex') FROM strata.media_aliases
		UNION ALL SELECT 'v' || tenant_id || encode(hash, 'hex') || spec FROM strata.media_variants
		UNION ALL SELECT 'p' || tenant_id || url || alias FROM strata.media_proxies
		UNION ALL SELECT 'u' || tenant_id || id || status FROM strata.media_uploads
		UNION ALL SELECT 'k' || tenant_id || key || version FROM strata.kv WHERE key LIKE 'media/%') s(x)`).Scan(&d); err != nil {
		t.Fatal(err)
	}
	return d
}

// Every media endpoint × every identity: the status; a denial is a problem document,
// changes nothing and leaves one audit row; a write leaves an audit row.
func TestMediaEndpointsByIdentity(t *testing.T) {
	t.Parallel()
	origin := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "image/png")
		_, _ = rw.Write(testPNG(t, 3, 3, byte(len(r.URL.Path))))
	}))
	defer origin.Close()
	w, _ := mediaWorldWith(t, media.Config{ProxyAllowPrivate: true})
	base := "/v1/t/" + w.T + "/media"
	var seed media.Upload
	w.upload(owner, "", testPNG(t, 4, 4, 1)).json(t, &seed)
	w.must(200, "GET", base+"/"+seed.Alias+"/variants/thumbnail=2", w.authz[owner], "")
	seq := byte(10)
	fresh := func() media.Upload { // new bytes every time
		seq++
		var up media.Upload
		r := w.upload(owner, "", testPNG(t, 5, 5, seq))
		if r.status != 201 {
			t.Fatalf("upload: %d %s", r.status, r.body)
		}
		r.json(t, &up)
		return up
	}
	var contentType, token string
	multipartFresh := func(w *world, _ string) (string, string) {
		seq++
		body, ct := multipartBody(t, "file", "", testPNG(t, 6, 6, seq))
		contentType = ct
		return "", body
	}
	// Backgrounded uploads are kept by jobs: let them finish before the next attempt, so
	// that a later denial's digest sees only what that denial did.
	quiet := func() {
		deadline := time.Now().Add(15 * time.Second)
		for {
			var pending int
			if err := w.s.Pool().QueryRow(context.Background(), `SELECT count(*) FROM strata.media_uploads WHERE status = 'pending'`).Scan(&pending); err != nil {
				t.Fatal(err)
			}
			if pending == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d backgrounded uploads still pending", pending)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	read := statuses(200, anon, 401, outsider, 404)
	write := func(ok int) map[string]int { return tenantAdmin(ok) }
	eps := []endpoint{
		{"upload", "POST", func(w *world, who string) (string, string) {
			_, body := multipartFresh(w, who)
			return base, body
		}, write(201)},
		{"upload (background)", "POST", func(w *world, who string) (string, string) {
			quiet()
			_, body := multipartFresh(w, who)
			return base + "/uploads", body
		}, write(202)},
		{"upload claim", "POST", func(w *world, _ string) (string, string) {
			seq++
			body, ct := multipartBody(t, "file", "", testPNG(t, 6, 6, seq))
			r := w.doHeaders("POST", base+"/uploads", w.authz[owner], body, map[string]string{"Content-Type": ct})
			var id struct {
				UploadID string `json:"upload_id"`
			}
			r.json(t, &id)
			quiet()
			return base + "/uploads/" + id.UploadID + "/claim?wait_seconds=10", ""
		}, write(201)},
		{"original", "GET", func(*world, string) (string, string) { quiet(); return base + "/" + seed.Alias, "" }, read},
		{"details", "GET", fixed(base+"/"+seed.Alias+"/details", ""), read},
		{"variant", "GET", fixed(base+"/"+seed.Alias+"/variants/thumbnail=2", ""), read},
		{"variant head", "HEAD", fixed(base+"/"+seed.Alias+"/variants/thumbnail=2", ""), read},
		{"list", "GET", fixed(base, ""), write(200)},
		{"proxy", "GET", func(w *world, _ string) (string, string) {
			return base + "/proxy?url=" + url.QueryEscape(origin.URL+"/"+w.fresh("p")+".png"), ""
		}, write(200)},
		{"not-found set", "PUT", fixed(base+"/not-found", `{"alias":"`+seed.Alias+`"}`), write(204)},
		{"delete", "DELETE", func(w *world, _ string) (string, string) {
			up := fresh()
			token = up.DeleteToken
			return base + "/" + up.Alias, ""
		}, write(204)},
		{"hash purge", "DELETE", func(w *world, _ string) (string, string) { return base + "/hashes/" + fresh().Hash, "" }, write(204)},
		{"variants delete", "DELETE", fixed(base+"/variants", ""), write(200)},
		{"prune missing", "POST", fixed(base+"/prune-missing", ""), write(200)},
	}
	multipart := func(*world) map[string]string { return map[string]string{"Content-Type": contentType} }
	w.checkEndpoints(t, eps, func(t *testing.T, w *world) string { return w.mediaDigest(t) }, checkOptions{
		unaudited: []string{"variant head"},
		headers: map[string]func(*world) map[string]string{
			"upload": multipart, "upload (background)": multipart,
			"delete": func(*world) map[string]string { return map[string]string{"Delete-Token": token} },
		},
	})
}
