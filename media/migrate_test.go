package media_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/stratadb/strata/media"
)

// countingStore counts Opens per identifier and can fail the nth Put.
type countingStore struct {
	media.Store
	mu      sync.Mutex
	opens   map[string]int
	puts    int
	failPut int
}

func (c *countingStore) Open(ctx context.Context, id string) (media.Blob, error) {
	c.mu.Lock()
	c.opens[id]++
	c.mu.Unlock()
	return c.Store.Open(ctx, id)
}

func (c *countingStore) Put(ctx context.Context, id, path string) error {
	c.mu.Lock()
	c.puts++
	fail := c.puts == c.failPut
	c.mu.Unlock()
	if fail {
		return errors.New("injected failure")
	}
	return c.Store.Put(ctx, id, path)
}

func TestStoreMigrateResumes(t *testing.T) {
	t.Parallel()
	targets := map[string]func(t *testing.T) media.Store{
		"file": func(t *testing.T) media.Store {
			st, err := media.NewFileStore(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
		"s3": func(t *testing.T) media.Store {
			st, err := media.NewS3Store(context.Background(), versitygw(t))
			if err != nil {
				t.Fatal(err)
			}
			return st
		},
	}
	for name, target := range targets {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := setup(t, media.Config{})
			old := &countingStore{Store: e.store, opens: map[string]int{}}
			e.s = media.New(e.Pool, e.Auth, old, media.Config{SpoolDir: t.TempDir()})
			var bodies [][]byte
			var ups []media.Upload
			for i := range 4 {
				b := pngBytes(t, 3, 3, byte(i*40))
				bodies = append(bodies, b)
				up, err := e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(b)})
				if err != nil {
					t.Fatal(err)
				}
				ups = append(ups, up)
			}
			if err := e.s.StoreCheck(context.Background()); err != nil {
				t.Fatal(err)
			}
			to := &countingStore{Store: target(t), opens: map[string]int{}, failPut: 3}
			var last int64
			rep, err := e.s.StoreMigrate(context.Background(), to, &media.MigrateOptions{Progress: func(done, total int64) {
				if total != 4 {
					t.Errorf("total %d", total)
				}
				last = done
			}})
			if err == nil || rep.Moved != 2 || last != 2 || rep.Switched {
				t.Fatalf("first run: %+v %v (progress %d)", rep, err, last)
			}
			if err := e.s.StoreCheck(context.Background()); err != nil {
				t.Fatalf("an unfinished migration switched the store: %v", err)
			}
			opens := func() int {
				old.mu.Lock()
				defer old.mu.Unlock()
				n := 0
				for _, c := range old.opens {
					n += c
				}
				return n
			}
			before := opens()
			rep, err = e.s.StoreMigrate(context.Background(), to, nil)
			if err != nil || rep.Moved != 2 || rep.Skipped != 2 || !rep.Switched {
				t.Fatalf("resumed: %+v %v", rep, err)
			}
			// Only the failed blob and the one never reached are read from the old store.
			if n := opens() - before; n != 2 {
				t.Fatalf("the resumed run read %d blobs from the old store, want 2", n)
			}
			if e.count(t, "media_store_moves") != 0 {
				t.Fatal("bookkeeping not cleared")
			}
			// The repository now works on the new store, and points at it.
			moved := media.New(e.Pool, e.Auth, to.Store, media.Config{SpoolDir: t.TempDir()})
			if err := moved.StoreCheck(context.Background()); err != nil {
				t.Fatal(err)
			}
			if name == "s3" {
				err := e.s.StoreCheck(context.Background())
				if err == nil || !strings.Contains(err.Error(), "the media blobs are in the s3 store") || !strings.Contains(err.Error(), "--media-store s3") {
					t.Fatalf("the old store still passes: %v", err)
				}
				_, err = e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(pngBytes(t, 2, 2, 1))})
				wantProblem(t, err, 503, "media_store_moved")
			}
			for i, up := range ups {
				b, _, err := moved.MediaOpen(e.ctx, e.Tenant, up.Alias)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(b)
				_ = b.Close()
				if !bytes.Equal(got, bodies[i]) {
					t.Fatalf("blob %d differs in the new store", i)
				}
			}
		})
	}
}

// namedStore is a store under another kind's name.
type namedStore struct {
	media.Store
	name string
}

func (n namedStore) Name() string { return n.name }

// The repository records its store: a service on another kind refuses to start while
// blobs are recorded (and refuses new blobs), and may switch freely while none is.
func TestStoreCheck(t *testing.T) {
	t.Parallel()
	e := setup(t, media.Config{})
	ctx := context.Background()
	if err := e.s.StoreCheck(ctx); err != nil {
		t.Fatal(err)
	}
	other := media.New(e.Pool, e.Auth, namedStore{Store: e.store, name: "s3"}, media.Config{})
	if err := other.StoreCheck(ctx); err != nil {
		t.Fatalf("no blob yet, yet the switch was refused: %v", err)
	}
	if _, err := other.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(pngBytes(t, 2, 2, 9))}); err != nil {
		t.Fatal(err)
	}
	err := e.s.StoreCheck(ctx)
	if err == nil || !strings.Contains(err.Error(), "in the s3 store") || !strings.Contains(err.Error(), "configured with the file store") {
		t.Fatalf("a file node over s3 blobs: %v", err)
	}
	hashes := e.count(t, "media_hashes")
	_, err = e.s.Upload(e.ctx, e.Tenant, media.UploadInput{Body: bytes.NewReader(pngBytes(t, 2, 2, 10))})
	wantProblem(t, err, 503, "media_store_moved")
	if e.count(t, "media_hashes") != hashes || len(e.spooled(t)) != 0 {
		t.Fatal("a refused upload left something")
	}
	if err := other.StoreCheck(ctx); err != nil {
		t.Fatal(err)
	}
}
