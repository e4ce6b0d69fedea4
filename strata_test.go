package strata_test

import (
	"context"
	"testing"

	"github.com/stratadb/strata"
	"github.com/stratadb/strata/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestOpenExternal(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := strata.Open(ctx, strata.Config{DatabaseURL: testdb.NewURL(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, embedded := s.Postgres(); embedded {
		t.Error("external database reported as embedded")
	}
	states, err := s.MigrationStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range states {
		if st.AppliedAt.IsZero() {
			t.Errorf("%s pending after Open", st.ID)
		}
	}
}

func TestOpenEmbedded(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, err := strata.Open(ctx, strata.Config{DataDir: testdb.TempDir(t), Postgres: strata.PostgresConfig{Settings: testdb.FastSettings}})
	if err != nil {
		t.Fatal(err)
	}
	pid, _, embedded := s.Postgres()
	if !embedded || pid == 0 {
		t.Fatalf("embedded = %v, pid = %d", embedded, pid)
	}
	if err := s.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
