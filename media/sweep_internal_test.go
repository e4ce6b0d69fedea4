package media

import (
	"context"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testworld"
)

// One node per interval lists the store for orphans, whichever asks first.
func TestOrphanSweepElected(t *testing.T) {
	t.Parallel()
	w := testworld.New(t, Schema)
	st, err := NewFileStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a := New(w.Pool, w.Auth, st, Config{OrphanSweepInterval: time.Second})
	b := New(w.Pool, w.Auth, st, Config{OrphanSweepInterval: time.Second})
	ctx := context.Background()
	claims := func() (int, int) {
		t.Helper()
		na, nb := 0, 0
		for range 3 {
			for _, x := range []struct {
				s *Service
				n *int
			}{{a, &na}, {b, &nb}} {
				ok, err := x.s.sweepClaim(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if ok {
					*x.n++
				}
			}
		}
		return na, nb
	}
	if na, nb := claims(); na+nb != 1 || na != 1 {
		t.Fatalf("first interval: a %d, b %d sweeps; want a single one by a", na, nb)
	}
	time.Sleep(1100 * time.Millisecond)
	if na, nb := claims(); na+nb != 1 {
		t.Fatalf("second interval: a %d, b %d sweeps; want one", na, nb)
	}
}
