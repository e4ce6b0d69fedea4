package media_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testsvc"
	"github.com/stratadb/strata/media"
)

// storeContract checks what the Service relies on from any Store.
func storeContract(t *testing.T, st media.Store) {
	t.Helper()
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "src")
	content := bytes.Repeat([]byte("0123456789"), 100_000)
	if err := os.WriteFile(src, content, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := st.Put(ctx, "t/ab/cd/blob-1.png", src); err != nil {
		t.Fatal(err)
	}
	if n, err := st.Stat(ctx, "t/ab/cd/blob-1.png"); err != nil || n != int64(len(content)) {
		t.Fatalf("stat: %d %v", n, err)
	}
	b, err := st.Open(ctx, "t/ab/cd/blob-1.png")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Seek(500_000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	tail, _ := io.ReadAll(b)
	_ = b.Close()
	if !bytes.Equal(tail, content[500_000:]) {
		t.Fatal("seek and read differ")
	}
	if _, err := st.Open(ctx, "t/none"); !errors.Is(err, media.ErrBlobNotFound) {
		t.Fatalf("open missing: %v", err)
	}
	if _, err := st.Stat(ctx, "t/none"); !errors.Is(err, media.ErrBlobNotFound) {
		t.Fatalf("stat missing: %v", err)
	}
	var ids []string
	if err := st.List(ctx, func(id string, mod time.Time) error {
		if time.Since(mod) > time.Hour || time.Until(mod) > time.Hour {
			t.Errorf("modified %v", mod)
		}
		ids = append(ids, id)
		return nil
	}); err != nil || len(ids) != 1 || ids[0] != "t/ab/cd/blob-1.png" {
		t.Fatalf("list: %v %v", ids, err)
	}
	stop := errors.New("stop")
	if err := st.List(ctx, func(string, time.Time) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("list does not stop: %v", err)
	}
	if err := st.Delete(ctx, "t/ab/cd/blob-1.png"); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(ctx, "t/ab/cd/blob-1.png"); err != nil {
		t.Fatalf("deleting a missing blob: %v", err)
	}
	if _, err := st.Stat(ctx, "t/ab/cd/blob-1.png"); !errors.Is(err, media.ErrBlobNotFound) {
		t.Fatalf("deleted blob still there: %v", err)
	}
}

func TestFileStoreContract(t *testing.T) {
	t.Parallel()
	st, err := media.NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	storeContract(t, st)
	src := filepath.Join(t.TempDir(), "x")
	_ = os.WriteFile(src, []byte("x"), 0o600)
	for _, bad := range []string{"../escape", "/abs", "a/../../b", ".tmp/x", ""} {
		if err := st.Put(context.Background(), bad, src); err == nil {
			t.Errorf("identifier %q accepted", bad)
		}
	}
}

// versitygw starts a real S3-compatible server (github.com/versity/versitygw) on
// loopback over a temporary directory, from the binary in $STRATA_VERSITYGW, on PATH or
// in ~/go/bin.
func versitygw(t *testing.T) media.S3Config {
	t.Helper()
	bin := os.Getenv("STRATA_VERSITYGW")
	if bin == "" {
		var extra []string
		if home, err := os.UserHomeDir(); err == nil {
			extra = append(extra, filepath.Join(home, "go", "bin", "versitygw"))
		}
		// Missing: skipped, or failed under STRATA_REQUIRE_SERVICES (CI installs it with
		// go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
		bin = testsvc.Binary(t, "versitygw", extra...)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "media"), 0o750); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--access", "strata-test", "--secret", "strata-test-secret", "--port", addr, "posix", root)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-done:
			t.Fatalf("versitygw exited: %s", out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("versitygw did not listen on %s: %s", addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	return media.S3Config{Endpoint: addr, Bucket: "media", AccessKey: "strata-test", SecretKey: "strata-test-secret",
		Region: "us-east-1", Insecure: true}
}

func TestS3StoreContract(t *testing.T) {
	t.Parallel()
	cfg := versitygw(t)
	cfg.Prefix = "p/"
	st, err := media.NewS3Store(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	storeContract(t, st)
	cfg.Bucket = "absent"
	if _, err := media.NewS3Store(context.Background(), cfg); err == nil {
		t.Fatal("a missing bucket was accepted")
	}
}

// The whole module over S3: upload, dedupe, original, delete of the last alias, prune.
func TestS3StoreEndToEnd(t *testing.T) {
	t.Parallel()
	cfg := versitygw(t)
	st, err := media.NewS3Store(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	e := setup(t, media.Config{})
	e.s = media.New(e.Pool, e.Auth, st, media.Config{SpoolDir: t.TempDir()})
	body := pngBytes(t, 16, 16, 8)
	a, err := e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(body)})
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(body)})
	if err != nil || !b.Deduplicated {
		t.Fatalf("dedupe: %+v %v", b, err)
	}
	count := func() int {
		n := 0
		_ = st.List(context.Background(), func(string, time.Time) error { n++; return nil })
		return n
	}
	if count() != 1 {
		t.Fatalf("%d objects", count())
	}
	blob, _, err := e.s.MediaOpen(e.ctx, e.Tenant, b.Alias)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(blob)
	_ = blob.Close()
	if !bytes.Equal(got, body) {
		t.Fatal("original differs")
	}
	for _, up := range []media.Upload{a, b} {
		if err := e.s.MediaDelete(e.ctx, e.Tenant, up.Alias, up.DeleteToken); err != nil {
			t.Fatal(err)
		}
	}
	if count() != 0 || e.count(t, "media_hashes") != 0 {
		t.Fatal(fmt.Sprint("left objects: ", count()))
	}
}
