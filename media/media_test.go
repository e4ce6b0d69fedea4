package media_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/kv"
	"github.com/stratadb/strata/media"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type env struct {
	*testworld.World
	s     *media.Service
	store *media.FileStore
	dir   string
	ctx   context.Context
	kv    *kv.Store
}

func setup(t *testing.T, cfg media.Config) *env { return setupB(t, cfg) }

func setupB(t testing.TB, cfgs ...media.Config) *env {
	t.Helper()
	cfg := media.Config{Limits: media.Limits{Kinds: []string{media.KindImage, media.KindFile}}}
	if len(cfgs) > 0 {
		cfg = cfgs[0]
	}
	w := testworld.New(t, media.Schema)
	dir := t.TempDir()
	st, err := media.NewFileStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KV == nil {
		cfg.KV = kv.New(w.Pool, w.Auth, w.Feed, kv.Config{})
	}
	return &env{World: w, s: media.New(w.Pool, w.Auth, st, cfg), store: st, dir: dir, ctx: w.As(testworld.Owner), kv: cfg.KV}
}

// blobs lists the store's blobs.
func (e *env) blobs(t *testing.T) []string {
	t.Helper()
	var ids []string
	if err := e.store.List(context.Background(), func(id string, _ time.Time) error { ids = append(ids, id); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(ids)
	return ids
}

// spooled lists leftover spool files.
func (e *env) spooled(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir(e.store.TempDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range ents {
		names = append(names, x.Name())
	}
	return names
}

func (e *env) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func wantProblem(t *testing.T, err error, status int, code string) *problem.Error {
	t.Helper()
	return testworld.WantProblem(t, err, status, code)
}

func pngBytes(t testing.TB, w, h int, seed uint8) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for i := range img.Pix {
		img.Pix[i] = seed + uint8(i)
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegBytes(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, image.NewRGBA(image.Rect(0, 0, w, h)), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func gifBytes(t testing.TB, frames int) []byte {
	t.Helper()
	g := &gif.GIF{}
	pal := color.Palette{color.Black, color.White}
	for i := range frames {
		img := image.NewPaletted(image.Rect(0, 0, 4, 3), pal)
		img.SetColorIndex(i%4, 0, 1)
		g.Image = append(g.Image, img)
		g.Delay = append(g.Delay, 1)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, g); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func (e *env) upload(t *testing.T, body []byte, ct string) media.Upload {
	t.Helper()
	up, err := e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(body), ContentType: ct})
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	return up
}

func TestUploadDetailsAndOriginal(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	body := pngBytes(t, 7, 5, 1)
	up := e.upload(t, body, "image/png")
	if !strings.HasSuffix(up.Alias, ".png") || up.DeleteToken == "" || len(up.Hash) != 64 || up.Deduplicated {
		t.Fatalf("upload: %+v", up)
	}
	d := up.Details
	if d.Width != 7 || d.Height != 5 || d.Frames != 1 || d.ContentType != "image/png" || d.Format != "png" ||
		d.Size != int64(len(body)) || d.CreatedAt.IsZero() || d.CreatedAt.Location() != time.UTC {
		t.Fatalf("details: %+v", d)
	}
	m, err := e.s.MediaGet(e.ctx, e.Tenant, up.Alias)
	if err != nil || m.Hash != up.Hash || m.Details != d {
		t.Fatalf("get: %+v %v (want %+v)", m, err, d)
	}
	b, _, err := e.s.MediaOpen(e.As(testworld.Viewer), e.Tenant, up.Alias)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(b)
	_ = b.Close()
	if !bytes.Equal(got, body) {
		t.Fatal("original differs from the upload")
	}
	if len(e.blobs(t)) != 1 || len(e.spooled(t)) != 0 {
		t.Fatalf("blobs %v spool %v", e.blobs(t), e.spooled(t))
	}
	// GIF frames are counted; JPEG passes.
	g := e.upload(t, gifBytes(t, 3), "image/gif")
	if g.Details.Frames != 3 || g.Details.Format != "gif" || !strings.HasSuffix(g.Alias, ".gif") {
		t.Fatalf("gif: %+v", g)
	}
	j := e.upload(t, jpegBytes(t, 9, 8), "")
	if j.Details.Format != "jpeg" || j.Details.Width != 9 || !strings.HasSuffix(j.Alias, ".jpg") {
		t.Fatalf("jpeg: %+v", j)
	}
	_, err = e.s.MediaGet(e.ctx, e.Tenant, "nope.png")
	wantProblem(t, err, 404, "alias_not_found")
	// An audit row per upload.
	var n int
	_ = e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = 'media.upload'`).Scan(&n)
	if n != 3 {
		t.Fatalf("audit rows: %d", n)
	}
}

func TestDedupeAndDelete(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	body := pngBytes(t, 3, 3, 9)
	a := e.upload(t, body, "image/png")
	b := e.upload(t, body, "image/png")
	if !b.Deduplicated || a.Alias == b.Alias || a.DeleteToken == b.DeleteToken || a.Hash != b.Hash {
		t.Fatalf("dedupe: %+v %+v", a, b)
	}
	if n := len(e.blobs(t)); n != 1 {
		t.Fatalf("%d blobs for one content", n)
	}
	// Tokens are stored hashed.
	var leaked bool
	_ = e.Pool.QueryRow(context.Background(), `SELECT EXISTS (SELECT 1 FROM media_aliases WHERE encode(token_hash, 'escape') LIKE '%'||$1||'%')`, a.DeleteToken).Scan(&leaked)
	if leaked {
		t.Fatal("token stored in clear")
	}
	wantProblem(t, e.s.MediaDelete(e.ctx, e.Tenant, a.Alias, b.DeleteToken), 403, "wrong_delete_token")
	wantProblem(t, e.s.MediaDelete(e.ctx, e.Tenant, a.Alias, ""), 403, "wrong_delete_token")
	if err := e.s.MediaDelete(e.ctx, e.Tenant, a.Alias, a.DeleteToken); err != nil {
		t.Fatal(err)
	}
	if err := e.s.MediaDelete(e.ctx, e.Tenant, a.Alias, a.DeleteToken); err != nil {
		t.Fatalf("already deleted: %v", err)
	}
	if _, err := e.s.MediaGet(e.ctx, e.Tenant, b.Alias); err != nil || len(e.blobs(t)) != 1 {
		t.Fatalf("the other alias lost its blob: %v %v", err, e.blobs(t))
	}
	// The last alias takes everything with it.
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO media_variants (tenant_id, hash, spec, identifier, details)
		SELECT tenant_id, hash, 'thumbnail/8', 'v/x', '{}' FROM media_aliases WHERE alias = $1`, b.Alias); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO media_proxies (tenant_id, url, alias) SELECT tenant_id, 'https://x.test/a.png', alias FROM media_aliases WHERE alias = $1`, b.Alias); err != nil {
		t.Fatal(err)
	}
	if err := e.s.MediaDelete(e.ctx, e.Tenant, b.Alias, b.DeleteToken); err != nil {
		t.Fatal(err)
	}
	for _, tb := range []string{"media_hashes", "media_aliases", "media_details", "media_variants", "media_proxies", "media_gone"} {
		if n := e.count(t, tb); n != 0 {
			t.Errorf("%s has %d rows after the last alias went", tb, n)
		}
	}
	if ids := e.blobs(t); len(ids) != 0 {
		t.Fatalf("blobs left: %v", ids)
	}
	// Re-uploading the same bytes stores them again.
	c := e.upload(t, body, "image/png")
	if c.Deduplicated || len(e.blobs(t)) != 1 {
		t.Fatalf("re-upload: %+v %v", c, e.blobs(t))
	}
}

// errReader fails after some bytes, like a client that goes away.
type errReader struct{ n int }

func (r *errReader) Read(p []byte) (int, error) {
	if r.n <= 0 {
		return 0, errors.New("connection reset")
	}
	n := min(len(p), r.n)
	r.n -= n
	return n, nil
}

func TestBadInputKeepsNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{Limits: media.Limits{MaxBytes: 64 << 10, MaxWidth: 100, MaxHeight: 80, MaxArea: 5000, MaxFrames: 4}})
	good := pngBytes(t, 10, 10, 0)
	// A PNG header claiming 100000×100000 pixels in a few bytes (a decompression bomb).
	bomb := append([]byte(nil), good[:33]...)
	copy(bomb[16:], []byte{0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0})
	binary.BigEndian.PutUint32(bomb[29:], crc32.ChecksumIEEE(bomb[12:29]))
	cases := []struct {
		name, ct string
		body     io.Reader
		status   int
		code     string
	}{
		{"empty", "image/png", bytes.NewReader(nil), 422, "empty_upload"},
		{"oversize", "image/png", bytes.NewReader(make([]byte, 64<<10+1)), 413, "upload_too_large"},
		{"bomb", "image/png", bytes.NewReader(bomb), 422, "image_too_wide"},
		{"too tall", "", bytes.NewReader(pngBytes(t, 10, 81, 0)), 422, "image_too_tall"},
		{"area", "", bytes.NewReader(pngBytes(t, 100, 51, 0)), 422, "image_too_large"},
		{"frames", "image/gif", bytes.NewReader(gifBytes(t, 5)), 422, "too_many_frames"},
		{"truncated png", "image/png", bytes.NewReader(good[:len(good)-20]), 422, "truncated_image"},
		{"truncated gif", "image/gif", bytes.NewReader(gifBytes(t, 2)[:40]), 422, "truncated_image"},
		{"lying type", "image/png", bytes.NewReader(jpegBytes(t, 4, 4)), 422, "content_mismatch"},
		{"not an image", "image/png", strings.NewReader("hello, this is text"), 422, "content_mismatch"},
		{"file kind not allowed", "", strings.NewReader("hello, this is text"), 422, "kind_not_allowed"},
		{"interrupted", "image/png", io.MultiReader(bytes.NewReader(good[:10]), &errReader{n: 5}), 400, "upload_interrupted"},
	}
	for _, c := range cases {
		_, err := e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: c.body, ContentType: c.ct})
		p, ok := problem.As(err)
		if !ok || p.Status != c.status || p.Code != c.code {
			t.Errorf("%s: %v, want %d %s", c.name, err, c.status, c.code)
		}
	}
	if e.count(t, "media_hashes")+e.count(t, "media_aliases") != 0 || len(e.blobs(t)) != 0 || len(e.spooled(t)) != 0 {
		t.Fatalf("bad input left rows, blobs %v or spool files %v", e.blobs(t), e.spooled(t))
	}
}

// failingStore stores nothing: its Put fails after a delay, so an upload's rows are
// written (not committed) before the failure arrives.
type failingStore struct {
	media.Store
	delay time.Duration
}

func (f failingStore) Put(ctx context.Context, _, _ string) error {
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
	}
	return errors.New("disk on fire")
}

// An upload whose blob cannot be stored records nothing, whether the store fails before
// or after the rows are written, and with or without an Idempotency-Key.
func TestStoreFailureRecordsNothing(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	for i, delay := range []time.Duration{0, 200 * time.Millisecond} {
		for _, key := range []string{"", "k"} {
			if key != "" {
				key += strconv.Itoa(i)
			}
			s := media.New(e.Pool, e.Auth, failingStore{Store: e.store, delay: delay}, media.Config{})
			_, err := s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(pngBytes(t, 5, 5, uint8(i))), IdempotencyKey: key})
			if err == nil || !strings.Contains(err.Error(), "disk on fire") {
				t.Fatalf("delay %v key %q: %v", delay, key, err)
			}
		}
	}
	var audited int
	if err := e.Pool.QueryRow(context.Background(), `SELECT count(*) FROM audit_log WHERE action = 'media.upload'`).Scan(&audited); err != nil {
		t.Fatal(err)
	}
	if n := e.count(t, "media_hashes") + e.count(t, "media_aliases") + e.count(t, "media_details"); n != 0 || audited != 0 || len(e.spooled(t)) != 0 {
		t.Fatalf("a failed store left %d rows, %d audit rows, spool files %v", n, audited, e.spooled(t))
	}
	// The same bytes upload fine afterwards.
	up := e.upload(t, pngBytes(t, 5, 5, 0), "")
	if up.Deduplicated || len(e.blobs(t)) != 1 {
		t.Fatalf("after the failures: %+v, blobs %v", up, e.blobs(t))
	}
}

func TestFileKind(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{Limits: media.Limits{Kinds: []string{media.KindImage, media.KindFile}}})
	up := e.upload(t, []byte("%PDF-1.4 attachment"), "application/pdf")
	if up.Details.Format != "file" || up.Details.ContentType != "application/pdf" || up.Details.Width != 0 || !strings.HasSuffix(up.Alias, ".bin") {
		t.Fatalf("file: %+v", up)
	}
}

func TestConcurrentUploadsOfOneContent(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	body := pngBytes(t, 20, 20, 3)
	const n = 8
	var wg sync.WaitGroup
	ups := make([]media.Upload, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			ups[i], errs[i] = e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(body)})
		})
	}
	wg.Wait()
	fresh := 0
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if !ups[i].Deduplicated {
			fresh++
		}
	}
	if fresh != 1 || e.count(t, "media_hashes") != 1 || e.count(t, "media_aliases") != n || len(e.blobs(t)) != 1 {
		t.Fatalf("fresh %d hashes %d aliases %d blobs %v", fresh, e.count(t, "media_hashes"), e.count(t, "media_aliases"), e.blobs(t))
	}
}

// Uploading bytes while their last alias is being deleted never leaves an alias without
// its blob.
func TestUploadRacesLastAliasDelete(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	body := pngBytes(t, 6, 6, 7)
	for range 15 {
		first := e.upload(t, body, "")
		var wg sync.WaitGroup
		var up media.Upload
		var uerr, derr error
		wg.Go(func() { up, uerr = e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(body)}) })
		wg.Go(func() { derr = e.s.MediaDelete(e.ctx, e.Tenant, first.Alias, first.DeleteToken) })
		wg.Wait()
		if uerr != nil || derr != nil {
			t.Fatal(uerr, derr)
		}
		b, _, err := e.s.MediaOpen(e.ctx, e.Tenant, up.Alias)
		if err != nil {
			t.Fatalf("the new alias lost its blob: %v", err)
		}
		got, _ := io.ReadAll(b)
		_ = b.Close()
		if !bytes.Equal(got, body) {
			t.Fatal("wrong bytes")
		}
		if err := e.s.MediaDelete(e.ctx, e.Tenant, up.Alias, up.DeleteToken); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.s.BlobsPrune(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ids := e.blobs(t); len(ids) != 0 || e.count(t, "media_hashes") != 0 {
		t.Fatalf("left: %v", ids)
	}
}

func TestPruneOrphansAndGone(t *testing.T) {
	t.Parallel()
	now := time.Now()
	clock := func() time.Time { return now }
	e := setup(t, media.Config{Now: func() time.Time { return clock() }, OrphanGrace: time.Hour})
	kept := e.upload(t, pngBytes(t, 2, 2, 1), "")
	// A crash between storing and recording: a blob nobody names.
	spool := filepath.Join(t.TempDir(), "x")
	if err := os.WriteFile(spool, []byte("orphan"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Put(context.Background(), e.Tenant+"/or/ph/orphan.bin", spool); err != nil {
		t.Fatal(err)
	}
	// A crash after a deletion committed: the row in media_gone, the blob still stored.
	if err := os.WriteFile(spool, []byte("gone"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Put(context.Background(), e.Tenant+"/go/ne/gone.bin", spool); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO media_gone (identifier, tenant_id) VALUES ($1, $2)`, e.Tenant+"/go/ne/gone.bin", e.Tenant); err != nil {
		t.Fatal(err)
	}
	// A backgrounded upload's bytes waiting (long) for their job: named by its row only.
	if err := os.WriteFile(spool, []byte("incoming"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.store.Put(context.Background(), e.Tenant+"/in/co/incoming.bin", spool); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO media_uploads (tenant_id, id, incoming_identifier, expires_at)
		VALUES ($1, gen_random_uuid(), $2, now() + interval '1 day')`, e.Tenant, e.Tenant+"/in/co/incoming.bin"); err != nil {
		t.Fatal(err)
	}
	rep, err := e.s.BlobsPrune(context.Background())
	if err != nil || rep.Removed != 1 || rep.Orphans != 0 || len(e.blobs(t)) != 3 {
		t.Fatalf("young orphan pruned or gone kept: %+v %v %v", rep, err, e.blobs(t))
	}
	clock = func() time.Time { return now.Add(2 * time.Hour) }
	rep, err = e.s.BlobsPrune(context.Background())
	if err != nil || rep.Orphans != 1 || e.count(t, "media_gone") != 0 {
		t.Fatalf("old orphan kept: %+v %v", rep, err)
	}
	if _, err := e.s.MediaGet(e.ctx, e.Tenant, kept.Alias); err != nil || len(e.blobs(t)) != 2 {
		t.Fatalf("a recorded or incoming blob was pruned: %v %v", err, e.blobs(t))
	}
}

func TestHashPruneMissingAndPurge(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	a := e.upload(t, pngBytes(t, 2, 2, 1), "")
	b := e.upload(t, pngBytes(t, 2, 2, 2), "")
	b2 := e.upload(t, pngBytes(t, 2, 2, 2), "")
	ids := e.blobs(t)
	var identA string
	_ = e.Pool.QueryRow(context.Background(), `SELECT identifier FROM media_hashes WHERE encode(hash, 'hex') = $1`, a.Hash).Scan(&identA)
	if err := os.Remove(filepath.Join(e.dir, filepath.FromSlash(identA))); err != nil {
		t.Fatal(err, ids)
	}
	_, _, err := e.s.MediaOpen(e.ctx, e.Tenant, a.Alias)
	wantProblem(t, err, 404, "blob_missing")
	n, err := e.s.HashPruneMissing(e.ctx, e.Tenant)
	if err != nil || n != 1 {
		t.Fatalf("prune missing: %d %v", n, err)
	}
	_, err = e.s.MediaGet(e.ctx, e.Tenant, a.Alias)
	wantProblem(t, err, 404, "alias_not_found")
	wantProblem(t, e.s.HashPurge(e.ctx, e.Tenant, a.Hash), 404, "hash_not_found")
	wantProblem(t, e.s.HashPurge(e.ctx, e.Tenant, "zz"), 404, "hash_not_found")
	if err := e.s.HashPurge(e.ctx, e.Tenant, b.Hash); err != nil {
		t.Fatal(err)
	}
	for _, al := range []string{b.Alias, b2.Alias} {
		_, err = e.s.MediaGet(e.ctx, e.Tenant, al)
		wantProblem(t, err, 404, "alias_not_found")
	}
	if len(e.blobs(t)) != 0 || e.count(t, "media_hashes") != 0 {
		t.Fatalf("purge left %v", e.blobs(t))
	}
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }

func problemOf(err error) (int, bool) {
	p, ok := problem.As(err)
	if !ok {
		return 0, false
	}
	return p.Status, true
}

func TestBlurhash(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{Limits: media.Limits{Kinds: []string{media.KindImage, media.KindFile}}})
	up := e.upload(t, pngBytes(t, 64, 40, 7), "")
	m, err := e.s.MediaBlurhash(e.As(testworld.Viewer), e.Tenant, up.Alias)
	if err != nil || len(m.Details.Blurhash) < 20 {
		t.Fatalf("blurhash: %+v %v", m, err)
	}
	again, err := e.s.MediaGet(e.ctx, e.Tenant, up.Alias)
	if err != nil || again.Details.Blurhash != m.Details.Blurhash {
		t.Fatalf("not kept: %+v %v", again, err)
	}
	f := e.upload(t, []byte("plain bytes"), "text/plain")
	if m, err := e.s.MediaBlurhash(e.ctx, e.Tenant, f.Alias); err != nil || m.Details.Blurhash != "" {
		t.Fatalf("file: %+v %v", m, err)
	}
	_, err = e.s.MediaBlurhash(e.As(testworld.Outsider), e.Tenant, up.Alias)
	wantProblem(t, err, 404, "tenant_not_found")
}

// Deleting a tenant removes all its media rows through the cascades; the blobs become
// orphans that the prune deletes.
func TestTenantDeletionCascades(t *testing.T) {
	t.Parallel()
	now := time.Now()
	e := setup(t, media.Config{Now: func() time.Time { return now }})
	up := e.upload(t, pngBytes(t, 5, 5, 5), "")
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO media_variants (tenant_id, hash, spec, identifier, details)
		SELECT tenant_id, hash, 'thumbnail=1', 'v/1', '{}' FROM media_aliases WHERE alias = $1`, up.Alias); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool.Exec(context.Background(), `INSERT INTO media_proxies (tenant_id, url, alias) SELECT tenant_id, 'http://x/', alias FROM media_aliases`); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pool.Exec(context.Background(), `DELETE FROM tenants WHERE id = $1`, e.Tenant); err != nil {
		t.Fatalf("deleting the tenant: %v", err)
	}
	for _, tb := range []string{"media_hashes", "media_aliases", "media_details", "media_variants", "media_proxies"} {
		if n := e.count(t, tb); n != 0 {
			t.Errorf("%s: %d rows", tb, n)
		}
	}
	now = now.Add(2 * time.Hour)
	if rep, err := e.s.BlobsPrune(context.Background()); err != nil || rep.Orphans != 1 || len(e.blobs(t)) != 0 {
		t.Fatalf("prune: %+v %v %v", rep, err, e.blobs(t))
	}
}

func TestUploadIdempotencyKey(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	body := pngBytes(t, 4, 4, 4)
	up := func(b []byte, key string) (media.Upload, error) {
		return e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(b), IdempotencyKey: key})
	}
	a, err := up(body, "k1")
	if err != nil {
		t.Fatal(err)
	}
	b, err := up(body, "k1")
	if err != nil || b.Alias != a.Alias || b.DeleteToken != a.DeleteToken {
		t.Fatalf("replay: %+v %v", b, err)
	}
	if n := e.count(t, "media_aliases"); n != 1 || len(e.blobs(t)) != 1 {
		t.Fatalf("%d aliases, blobs %v", n, e.blobs(t))
	}
	_, err = up(pngBytes(t, 4, 4, 5), "k1")
	wantProblem(t, err, 422, "idempotency_key_reused")
	// After its bytes were deleted, a replay still answers the first result and keeps nothing new.
	if err := e.s.MediaDelete(e.ctx, e.Tenant, a.Alias, a.DeleteToken); err != nil {
		t.Fatal(err)
	}
	if c, err := up(body, "k1"); err != nil || c.Alias != a.Alias || e.count(t, "media_hashes") != 0 || len(e.blobs(t)) != 0 {
		t.Fatalf("replay after delete: %+v %v, blobs %v", c, err, e.blobs(t))
	}
	if c, err := up(body, "k2"); err != nil || c.Alias == a.Alias {
		t.Fatalf("new key: %+v %v", c, err)
	}
}

// The not-found image is a setting in the tenant's key-value store: visible there (with
// its description), read back by media, unset idempotently, and per tenant.
func TestNotFoundImageInKV(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	up := e.upload(t, pngBytes(t, 3, 3, 1), "")
	if _, _, ok, err := e.s.NotFoundOpen(e.ctx, e.Tenant); ok || err != nil {
		t.Fatalf("none set: %v %v", ok, err)
	}
	wantProblem(t, e.s.NotFoundSet(e.ctx, e.Tenant, "nope.png"), 404, "alias_not_found")
	if err := e.s.NotFoundSet(e.ctx, e.Tenant, up.Alias); err != nil {
		t.Fatal(err)
	}
	entry, err := e.kv.KeyGet(e.ctx, e.Tenant, "media/not-found")
	if err != nil || string(entry.Value) != `"`+up.Alias+`"` || entry.ContentType != "application/json" || entry.Description == "" {
		t.Fatalf("kv entry: %+v %v", entry, err)
	}
	b, m, ok, err := e.s.NotFoundOpen(e.ctx, e.Tenant)
	if err != nil || !ok || m.Alias != up.Alias {
		t.Fatalf("open: %+v %v %v", m, ok, err)
	}
	_ = b.Close()
	if _, _, ok, _ := e.s.NotFoundOpen(e.ctx, e.Other); ok {
		t.Fatal("another tenant sees the not-found image")
	}
	// A value that is not an alias (written through kv by hand) means none.
	if _, _, err := e.kv.KeyPut(e.ctx, e.Tenant, "media/not-found", kv.PutInput{Value: []byte(`{"x":1}`)}); err != nil {
		t.Fatal(err)
	}
	if _, _, ok, err := e.s.NotFoundOpen(e.ctx, e.Tenant); ok || err != nil {
		t.Fatalf("a non-alias value: %v %v", ok, err)
	}
	for range 2 { // unsetting twice is fine
		if err := e.s.NotFoundSet(e.ctx, e.Tenant, ""); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.kv.KeyGet(e.ctx, e.Tenant, "media/not-found"); err == nil {
		t.Fatal("unset left the key")
	}
}
