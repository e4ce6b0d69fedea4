package media_test

import (
	"bytes"
	"context"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/media"
)

func TestUploadBackgroundClaim(t *testing.T) {
	t.Parallel()
	now := time.Now()
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := variantEnv(t, media.Config{Now: clock, UploadExpiry: time.Hour})
	img := pngBytes(t, 9, 9, 3)
	id, err := e.s.UploadBackground(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(img), ContentType: "image/png"})
	if err != nil || id == "" {
		t.Fatal(id, err)
	}
	up, err := e.s.UploadClaim(e.ctx, e.Tenant, id, 10*time.Second)
	if err != nil || up.Details.Width != 9 || up.DeleteToken == "" {
		t.Fatalf("claim: %+v %v", up, err)
	}
	_, err = e.s.UploadClaim(e.ctx, e.Tenant, id, time.Second)
	wantProblem(t, err, 404, "upload_not_found")
	if _, err := e.s.MediaGet(e.ctx, e.Tenant, up.Alias); err != nil {
		t.Fatal(err)
	}
	// The claimed token is the alias's token.
	wantProblem(t, e.s.MediaDelete(e.ctx, e.Tenant, up.Alias, "not-the-token"), 403, "wrong_delete_token")
	if err := e.s.MediaDelete(e.ctx, e.Tenant, up.Alias, up.DeleteToken); err != nil {
		t.Fatalf("the claimed token: %v", err)
	}
	if _, err := e.s.MediaGet(e.ctx, e.Tenant, up.Alias); err == nil {
		t.Fatal("the alias survived its deletion")
	}
	// A refused upload is claimed as its problem and leaves nothing.
	bad, err := e.s.UploadBackground(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(img[:len(img)-4]), ContentType: "image/png"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.s.UploadClaim(e.ctx, e.Tenant, bad, 10*time.Second)
	wantProblem(t, err, 422, "truncated_image")
	// Another tenant cannot claim ours; bytes over the limit are refused at once.
	other, err := e.s.UploadBackground(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(pngBytes(t, 3, 3, 1))})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.s.UploadClaim(e.As(testworld.Outsider), e.Other, other, time.Second)
	wantProblem(t, err, 404, "upload_not_found")
	_, err = e.s.UploadBackground(e.As(testworld.Viewer), e.Tenant, media.UploadInput{Body: bytes.NewReader(img)})
	wantProblem(t, err, 403, "forbidden")
	// Unclaimed results expire: their alias and bytes go.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var status string
		_ = e.Pool.QueryRow(context.Background(), `SELECT status FROM media_uploads WHERE id = $1`, other).Scan(&status)
		if status == "done" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never processed: %q", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if e.count(t, "media_hashes") != 1 {
		t.Fatalf("%d hashes", e.count(t, "media_hashes"))
	}
	// No delete token waits in the uploads table.
	var result string
	if err := e.Pool.QueryRow(context.Background(), `SELECT result::text FROM media_uploads WHERE id = $1`, other).Scan(&result); err != nil {
		t.Fatal(err)
	}
	if tok := regexp.MustCompile(`"delete_token":\s*"[^"]+"`).FindString(result); tok != "" {
		t.Fatalf("a delete token kept in clear: %s", tok)
	}
	mu.Lock()
	now = now.Add(2 * time.Hour)
	mu.Unlock()
	n, err := e.s.UploadsExpire(context.Background())
	if err != nil || n != 1 || e.count(t, "media_uploads") != 0 || e.count(t, "media_hashes") != 0 {
		t.Fatalf("expire: %d %v, %d hashes", n, err, e.count(t, "media_hashes"))
	}
	if _, err := e.s.BlobsPrune(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(e.blobs(t)) != 0 {
		t.Fatalf("blobs left: %v", e.blobs(t))
	}
}
