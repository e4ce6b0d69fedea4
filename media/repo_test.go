package media_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/media"
	"github.com/stratadb/strata/problem"
)

// hashCreate records a fake blob hash directly (the repository contract's create_hash).
func (e *env) hashCreate(t *testing.T, i int, at time.Time, ident string) (string, error) {
	t.Helper()
	sum := sha256.Sum256(fmt.Appendf(nil, "blob %d", i))
	h := hex.EncodeToString(sum[:])
	err := pgx.BeginFunc(context.Background(), e.Pool, func(tx pgx.Tx) error {
		return e.s.HashCreateTx(e.ctx, tx, e.Tenant, media.HashInput{Hash: h, Identifier: ident,
			Details: media.Details{Size: 10, Format: "file", ContentType: "application/octet-stream", CreatedAt: at}})
	})
	return h, err
}

// Decision 2: an existing hash is "already exists"; an identifier another hash uses is a
// distinct conflict.
func TestHashCreateConflicts(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	at := time.Now()
	if _, err := e.hashCreate(t, 1, at, "a/1"); err != nil {
		t.Fatal(err)
	}
	_, err := e.hashCreate(t, 1, at, "a/2")
	wantProblem(t, err, 409, "hash_exists")
	_, err = e.hashCreate(t, 2, at, "a/1")
	wantProblem(t, err, 409, "identifier_taken")
	// The caller's transaction survives a conflict (savepoint) and can go on.
	err = pgx.BeginFunc(context.Background(), e.Pool, func(tx pgx.Tx) error {
		sum := sha256.Sum256([]byte("blob 1"))
		herr := e.s.HashCreateTx(e.ctx, tx, e.Tenant, media.HashInput{Hash: hex.EncodeToString(sum[:]), Identifier: "a/3",
			Details: media.Details{Size: 1, Format: "file"}})
		wantProblem(t, herr, 409, "hash_exists")
		up, err := e.s.AliasCreateTx(e.ctx, tx, e.Tenant, hex.EncodeToString(sum[:]))
		if err != nil || up.Alias == "" || up.DeleteToken == "" {
			t.Fatalf("alias after conflict: %+v %v", up, err)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(context.Background(), e.Pool, func(tx pgx.Tx) error {
		_, err := e.s.AliasCreateTx(e.ctx, tx, e.Tenant, hex.EncodeToString(make([]byte, 32)))
		return err
	})
	wantProblem(t, err, 404, "hash_not_found")
}

// Decisions 3 and 4: newest-first pages with a total order never skip or repeat a hash at
// a boundary, even when many share one timestamp; listing from a date starts at or before
// it; timestamps compare in UTC whatever the session time zone.
func TestHashListTotalOrder(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	// Sessions in a far-off zone (+13:45) must not shift anything.
	cfg := e.Pool.Config().Copy()
	cfg.ConnConfig.RuntimeParams["timezone"] = "Pacific/Chatham"
	far, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(far.Close)
	var tz string
	if err := far.QueryRow(context.Background(), `SHOW timezone`).Scan(&tz); err != nil || tz != "Pacific/Chatham" {
		t.Fatalf("session zone %q %v", tz, err)
	}
	e.s = media.New(far, e.Auth, e.store, media.Config{})
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	want := map[string]time.Time{}
	for i := range 13 {
		at := base.Add(time.Duration(i/5) * time.Minute) // groups of 5 share an instant
		h, err := e.hashCreate(t, i, at, fmt.Sprintf("x/%d", i))
		if err != nil {
			t.Fatal(err)
		}
		want[h] = at
	}
	for _, limit := range []int{1, 2, 3, 5, 100} {
		seen := map[string]bool{}
		var prev *media.Hash
		cursor := ""
		for pages := 0; ; pages++ {
			if pages > 20 {
				t.Fatal("listing does not end")
			}
			p, err := e.s.HashList(e.ctx, e.Tenant, &media.HashListOptions{Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range p.Items {
				if seen[h.Hash] {
					t.Fatalf("limit %d: %s repeated", limit, h.Hash)
				}
				seen[h.Hash] = true
				if prev != nil && (h.CreatedAt.After(prev.CreatedAt) || h.CreatedAt.Equal(prev.CreatedAt) && h.Hash > prev.Hash) {
					t.Fatalf("limit %d: out of order", limit)
				}
				if !h.CreatedAt.Equal(want[h.Hash]) {
					t.Fatalf("created_at %v, want %v", h.CreatedAt, want[h.Hash])
				}
				prev = &h
			}
			if p.NextCursor == "" {
				break
			}
			cursor = p.NextCursor
		}
		if len(seen) != 13 {
			t.Fatalf("limit %d: saw %d of 13", limit, len(seen))
		}
	}
	// From a date: the first page starts with the newest at or before it.
	p, err := e.s.HashList(e.ctx, e.Tenant, &media.HashListOptions{Limit: 100, Before: base.Add(time.Minute + time.Second)})
	if err != nil || len(p.Items) != 10 || !p.Items[0].CreatedAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("before: %d items %v", len(p.Items), err)
	}
	// The same instant expressed in another zone gives the same page.
	zone := time.FixedZone("UTC+13:45", 13*3600+45*60)
	p2, err := e.s.HashList(e.ctx, e.Tenant, &media.HashListOptions{Limit: 100, Before: base.Add(time.Minute + time.Second).In(zone)})
	if err != nil || len(p2.Items) != 10 || p2.Items[0].Hash != p.Items[0].Hash {
		t.Fatalf("before in another zone: %d %v", len(p2.Items), err)
	}
	_, err = e.s.HashList(e.ctx, e.Tenant, &media.HashListOptions{Cursor: "garbage!"})
	wantProblem(t, err, 400, "invalid_cursor")
}

// Every operation answers 401 to the anonymous, 404 to another tenant's people, 403 to
// those without the permission.
func TestTenantWall(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	body := pngBytes(t, 2, 2, 5)
	up := e.upload(t, body, "")
	ops := []struct {
		name string
		perm string // "read", "write", "admin"
		call func(ctx context.Context) error
	}{
		{"get", "read", func(ctx context.Context) error { _, err := e.s.MediaGet(ctx, e.Tenant, up.Alias); return err }},
		{"open", "read", func(ctx context.Context) error {
			b, _, err := e.s.MediaOpen(ctx, e.Tenant, up.Alias)
			if b != nil {
				_ = b.Close()
			}
			return err
		}},
		{"upload", "write", func(ctx context.Context) error {
			_, err := e.s.Upload(ctx, e.Tenant, media.UploadInput{Body: bytesReader(body)})
			return err
		}},
		{"delete", "write", func(ctx context.Context) error {
			x := e.upload(t, body, "")
			return e.s.MediaDelete(ctx, e.Tenant, x.Alias, x.DeleteToken)
		}},
		{"list", "admin", func(ctx context.Context) error { _, err := e.s.HashList(ctx, e.Tenant, nil); return err }},
		{"purge", "admin", func(ctx context.Context) error {
			x := e.upload(t, pngBytes(t, 3, 1, 1), "")
			err := e.s.HashPurge(ctx, e.Tenant, x.Hash)
			return err
		}},
		{"prune missing", "admin", func(ctx context.Context) error { _, err := e.s.HashPruneMissing(ctx, e.Tenant); return err }},
		{"not-found set", "admin", func(ctx context.Context) error { return e.s.NotFoundSet(ctx, e.Tenant, "") }},
		{"variants delete all", "admin", func(ctx context.Context) error { _, err := e.s.VariantsDeleteAll(ctx, e.Tenant); return err }},
		// These pass the wall into a refusal of their own (no queue; an invalid URL).
		{"variant", "read", func(ctx context.Context) error {
			_, _, err := e.s.VariantOpen(ctx, e.Tenant, up.Alias, "thumbnail=4", nil)
			return pastWall(err, "variants_unavailable")
		}},
		{"proxy", "write", func(ctx context.Context) error {
			_, err := e.s.ProxyGet(ctx, e.Tenant, "file:///etc/passwd")
			return pastWall(err, "invalid_url")
		}},
		{"background upload", "write", func(ctx context.Context) error {
			_, err := e.s.UploadBackground(ctx, e.Tenant, media.UploadInput{Body: bytesReader(body)})
			return pastWall(err, "background_unavailable")
		}},
		{"claim", "write", func(ctx context.Context) error {
			_, err := e.s.UploadClaim(ctx, e.Tenant, "0190b3c2-0000-7000-8000-000000000000", 0)
			return pastWall(err, "upload_not_found")
		}},
	}
	for _, op := range ops {
		for _, role := range testworld.Roles() {
			want := 0
			switch role {
			case "":
				want = 401
			case testworld.Outsider:
				want = 404
			case testworld.Viewer:
				if op.perm != "read" {
					want = 403
				}
			case testworld.Member, testworld.APIKey:
				if op.perm != "read" {
					want = 403
				}
			}
			err := op.call(e.As(role))
			if want == 0 && err != nil {
				t.Errorf("%s as %q: %v", op.name, role, err)
			}
			if want != 0 {
				if p, ok := problemOf(err); !ok || p != want {
					t.Errorf("%s as %q: %v, want %d", op.name, role, err, want)
				}
			}
		}
	}
	// The other tenant's owner sees nothing of ours in their own tenant.
	_, err := e.s.MediaGet(e.As(testworld.Outsider), e.Other, up.Alias)
	wantProblem(t, err, 404, "alias_not_found")
	p, err := e.s.HashList(e.As(testworld.Outsider), e.Other, nil)
	if err != nil || len(p.Items) != 0 {
		t.Fatalf("other tenant listed ours: %+v %v", p, err)
	}
	// The same bytes in another tenant are stored separately and deleting there leaves ours.
	o, err := e.s.Upload(e.As(testworld.Outsider), e.Other, media.UploadInput{Body: bytesReader(body)})
	if err != nil || o.Deduplicated {
		t.Fatalf("other tenant's upload: %+v %v", o, err)
	}
	if err := e.s.MediaDelete(e.As(testworld.Outsider), e.Other, o.Alias, o.DeleteToken); err != nil {
		t.Fatal(err)
	}
	if err := e.s.MediaDelete(e.As(testworld.Outsider), e.Other, up.Alias, up.DeleteToken); err != nil {
		t.Fatalf("deleting our alias in their tenant is a no-op: %v", err)
	}
	if _, err := e.s.MediaGet(e.ctx, e.Tenant, up.Alias); err != nil {
		t.Fatalf("our alias went: %v", err)
	}
}

// pastWall turns the refusal an operation gives once past authorization into success.
func pastWall(err error, code string) error {
	if problem.HasCode(err, code) {
		return nil
	}
	return err
}
