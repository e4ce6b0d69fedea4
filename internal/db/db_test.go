package db_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/embedpg"
	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestRedact(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"postgres://u:s3cret@h:5432/db?sslmode=require": "postgres://u:xxxxx@h:5432/db?sslmode=require",
		"postgres://u@h/db?password=s3cret":             "postgres://u@h/db?password=xxxxx",
		"host=h user=u password=s3cret dbname=d":        "host=h user=u password=xxxxx dbname=d",
		"postgres://h/db":                               "postgres://h/db",
		"host=h password='a b' user=u":                  "host=h password=xxxxx user=u",
		"host=h password = s3cret user=u":               "host=h password = xxxxx user=u",
		`host=h password='it\'s' user=u`:                "host=h password=xxxxx user=u",
	}
	for in, want := range cases {
		if got := db.Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestTranslate(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	if _, err := pool.Exec(ctx, `CREATE TABLE things (id int PRIMARY KEY, n int CHECK (n > 0))`); err != nil {
		t.Fatal(err)
	}
	if _, err := pool.Exec(ctx, `INSERT INTO things VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		sql    string
		status int
		code   string
	}{
		{"SELECT id FROM things WHERE id = 99", 404, "not_found"},
		{"INSERT INTO things VALUES (1, 1)", 409, "already_exists"},
		{"INSERT INTO things VALUES (2, -1)", 422, "constraint_violation"},
		{"SELECT no_such_column FROM things", 500, "internal"},
	}
	for _, c := range cases {
		var id int
		err := db.Translate(pool.QueryRow(ctx, c.sql).Scan(&id), "thing 99")
		p, ok := problem.As(err)
		if !ok || p.Status != c.status || p.Code != c.code {
			t.Errorf("%s: got %v, want %d %s", c.sql, err, c.status, c.code)
		}
	}
	if err := db.Translate(nil, "x"); err != nil {
		t.Errorf("Translate(nil) = %v", err)
	}
	if err := db.Translate(context.Canceled, "x"); !errors.Is(err, context.Canceled) {
		t.Errorf("cancellation must pass through, got %v", err)
	}
	// A server that refuses the role or database is misconfigured, not down.
	u := strings.Replace(testdb.NewURL(t), "postgres://strata@", "postgres://nosuchrole@", 1)
	if _, err := db.Connect(ctx, u, &db.Options{Wait: 20 * time.Second}); err == nil || db.IsUnavailable(err) {
		t.Errorf("a missing role: err = %v, unavailable = %v; want a prompt, non-transient error", err, db.IsUnavailable(err))
	}
	if db.IsUnavailable(io.ErrUnexpectedEOF) {
		t.Error("a plain EOF, not from the driver, is not a database outage")
	}
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// A database that never comes up ends in a clear error, after retrying, without the
// password.
func TestConnectGivesUpClearly(t *testing.T) {
	t.Parallel()
	url := "postgres://u:hunter2@" + freeAddr(t) + "/db"
	start := time.Now()
	_, err := db.Connect(context.Background(), url, &db.Options{Wait: 800 * time.Millisecond})
	if err == nil {
		t.Fatal("connected to nothing")
	}
	msg := err.Error()
	if !strings.Contains(msg, "cannot reach PostgreSQL") || !strings.Contains(msg, "gave up after") || strings.Contains(msg, "hunter2") {
		t.Fatalf("error = %q", msg)
	}
	// Backoff from 50 ms doubling: within 800 ms it tries at least 4 times, and gives up
	// once the next wait would pass the deadline (not at a fixed time, so no timing check).
	var attempts int
	if _, err := fmt.Sscanf(msg[strings.Index(msg, "gave up after"):], "gave up after %d attempts", &attempts); err != nil || attempts < 4 {
		t.Fatalf("gave up after %d attempts in %s, want at least 4: %q", attempts, time.Since(start), msg)
	}
	if _, err := db.Connect(context.Background(), "postgres://u:hunter2@h:notaport/db", nil); err == nil ||
		strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "invalid") {
		t.Fatalf("bad URL: err = %v", err)
	}
}

// A database that comes up while Connect is waiting is used as soon as it answers.
func TestConnectWaitsForDatabase(t *testing.T) {
	t.Parallel()
	c := testdb.Cluster(t)
	dataDir := filepath.Dir(c.DataDir())
	url := c.URL("postgres")
	ctx := context.Background()
	if err := c.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(700 * time.Millisecond)
		c2, err := embedpg.Start(ctx, embedpg.Options{DataDir: dataDir, Settings: testdb.FastSettings, Database: "postgres"})
		if err != nil {
			t.Error(err)
			return
		}
		t.Cleanup(func() { _ = c2.Stop(ctx) })
	}()
	pool, err := db.Connect(ctx, url, &db.Options{Wait: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var one int
	if err := pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatal(err)
	}
	var sp string
	if err := pool.QueryRow(ctx, "SHOW search_path").Scan(&sp); err != nil || !strings.HasPrefix(sp, "strata") {
		t.Fatalf("search_path = %q (%v)", sp, err)
	}
}
