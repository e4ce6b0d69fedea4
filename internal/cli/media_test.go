package cli_test

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	platform "github.com/stratadb/strata"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/media"
)

// startVersitygw starts a real S3-compatible server on loopback, or skips when the
// versitygw binary is not installed.
func startVersitygw(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("STRATA_VERSITYGW")
	if bin == "" {
		bin, _ = exec.LookPath("versitygw")
	}
	if home, err := os.UserHomeDir(); bin == "" && err == nil {
		if _, err := os.Stat(filepath.Join(home, "go", "bin", "versitygw")); err == nil {
			bin = filepath.Join(home, "go", "bin", "versitygw")
		}
	}
	if bin == "" {
		t.Skip("versitygw not installed")
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin, "--access", "cli-test", "--secret", "cli-test-secret", "--port", addr, "posix", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	for deadline := time.Now().Add(15 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			_ = c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			t.Fatal("versitygw did not start")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestMediaMigrateStoreCommand(t *testing.T) {
	t.Parallel()
	s3 := startVersitygw(t)
	url, dir := testdb.NewURL(t), t.TempDir()
	ctx := context.Background()
	s, err := platform.Open(ctx, platform.Config{DatabaseURL: url, DataDir: dir, AdminPassword: "root-password",
		Auth: auth.Config{Argon2: auth.Argon2Params{MemoryKiB: 64, Time: 1, Threads: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	sys := auth.System(ctx)
	u, err := s.Auth().UserCreate(ctx, auth.UserInput{Username: "owner", Password: "owner-password"})
	if err != nil {
		t.Fatal(err)
	}
	owner := auth.WithPrincipal(ctx, &auth.Principal{UserID: u.ID, Username: u.Username})
	ten, err := s.Auth().TenantCreate(owner, "t")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	_ = png.Encode(&b, image.NewGray(image.Rect(0, 0, 3, 3)))
	up, err := s.Media().Upload(sys, ten.ID, media.UploadInput{Body: &b})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	env := map[string]string{"STRATA_DATABASE_URL": url, "STRATA_DATA_DIR": dir, "STRATA_MEDIA_S3_ENDPOINT": s3,
		"STRATA_MEDIA_S3_BUCKET": "media", "STRATA_MEDIA_S3_ACCESS_KEY": "cli-test", "STRATA_MEDIA_S3_SECRET_KEY": "cli-test-secret",
		"STRATA_MEDIA_S3_INSECURE": "true", "STRATA_LOG_LEVEL": "error"}
	if code, _, errOut := strata(ctx, env, "media", "migrate-store"); code != 2 || !strings.Contains(errOut, "--to") {
		t.Fatalf("without --to: %d %q", code, errOut)
	}
	code, out, errOut := strata(ctx, env, "media", "migrate-store", "--to", "s3")
	if code != 0 || !strings.Contains(out, "moved 1 blobs") || !strings.Contains(out, "now points at the s3 store") {
		t.Fatalf("migrate-store: exit %d %q %q", code, out, errOut)
	}
	// The repository points at the new store: a node on the old one refuses to start.
	if _, err := platform.Open(ctx, platform.Config{DatabaseURL: url, DataDir: dir}); err == nil ||
		!strings.Contains(err.Error(), "the media blobs are in the s3 store") {
		t.Fatalf("a node on the old store: %v", err)
	}
	// Configured on the new store, the platform serves the bytes from S3.
	env["STRATA_MEDIA_STORE"] = "s3"
	st, err := media.NewS3Store(ctx, media.S3Config{Endpoint: s3, Bucket: "media", AccessKey: "cli-test", SecretKey: "cli-test-secret", Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	s, err = platform.Open(ctx, platform.Config{DatabaseURL: url, DataDir: t.TempDir(), MediaStore: st})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	blob, _, err := s.Media().MediaOpen(owner, ten.ID, up.Alias)
	if err != nil {
		t.Fatalf("after the move: %v", err)
	}
	_ = blob.Close()
}
