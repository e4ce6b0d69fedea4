package kv_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/internal/testdb"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/kv"
	"github.com/stratadb/strata/problem"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type env struct {
	*testworld.World
	s   *kv.Store
	ctx context.Context
}

func setup(t *testing.T) *env {
	t.Helper()
	w := testworld.New(t, kv.Schema)
	return &env{World: w, s: kv.New(w.Pool, w.Auth, w.Feed, kv.Config{}), ctx: w.As(testworld.Owner)}
}

func wantProblem(t *testing.T, err error, status int, code string) *problem.Error {
	t.Helper()
	p, ok := problem.As(err)
	if !ok || p.Status != status || p.Code != code {
		t.Fatalf("err = %v, want %d %s", err, status, code)
	}
	return p
}

func str(s string) *string { return &s }

func TestPutGetCompareAndSet(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := e.ctx
	e1, created, err := e.s.KeyPut(ctx, e.Tenant, "settings/theme", kv.PutInput{Value: []byte(`{"dark":true}`), Description: str("UI theme")})
	if err != nil || !created || e1.ContentType != kv.JSON || e1.Version == 0 || e1.Description != "UI theme" {
		t.Fatalf("put: %+v %v %v", e1, created, err)
	}
	got, err := e.s.KeyGet(ctx, e.Tenant, "settings/theme")
	if err != nil || string(got.Value) != `{"dark":true}` || got.Version != e1.Version {
		t.Fatalf("get: %+v %v", got, err)
	}
	// Compare-and-set: a stale version changes nothing and names the current one.
	_, _, err = e.s.KeyPut(ctx, e.Tenant, "settings/theme", kv.PutInput{Value: []byte(`1`), IfMatch: e1.Version + 1})
	p := wantProblem(t, err, 412, "version_mismatch")
	if p.Extensions["current_version"] != e1.Version {
		t.Fatalf("412 extensions: %v", p.Extensions)
	}
	e2, created, err := e.s.KeyPut(ctx, e.Tenant, "settings/theme", kv.PutInput{Value: []byte(`{"dark":false}`), IfMatch: e1.Version})
	if err != nil || created || e2.Version <= e1.Version || e2.Description != "UI theme" {
		t.Fatalf("cas: %+v %v %v", e2, created, err)
	}
	_, _, err = e.s.KeyPut(ctx, e.Tenant, "settings/theme", kv.PutInput{Value: []byte(`2`), IfNoneMatch: true})
	wantProblem(t, err, 412, "version_mismatch")
	_, _, err = e.s.KeyPut(ctx, e.Tenant, "absent", kv.PutInput{Value: []byte(`2`), IfMatch: 5})
	wantProblem(t, err, 412, "version_mismatch")
	// Delete, then a re-created key never reuses a version.
	wantProblem(t, e.s.KeyDelete(ctx, e.Tenant, "settings/theme", e1.Version), 412, "version_mismatch")
	if err := e.s.KeyDelete(ctx, e.Tenant, "settings/theme", e2.Version); err != nil {
		t.Fatal(err)
	}
	_, err = e.s.KeyGet(ctx, e.Tenant, "settings/theme")
	wantProblem(t, err, 404, "key_not_found")
	wantProblem(t, e.s.KeyDelete(ctx, e.Tenant, "settings/theme", 0), 404, "key_not_found")
	e3, created, err := e.s.KeyPut(ctx, e.Tenant, "settings/theme", kv.PutInput{Value: []byte(`3`), IfNoneMatch: true})
	if err != nil || !created || e3.Version <= e2.Version || e3.Description != "" {
		t.Fatalf("re-create: %+v %v %v", e3, created, err)
	}
	// Bad input.
	_, _, err = e.s.KeyPut(ctx, e.Tenant, "j", kv.PutInput{Value: []byte(`{no`), ContentType: "application/json"})
	wantProblem(t, err, 422, "invalid_json")
	_, _, err = e.s.KeyPut(ctx, e.Tenant, "bad\nkey", kv.PutInput{Value: []byte(`1`)})
	wantProblem(t, err, 422, "invalid_key")
	_, _, err = e.s.KeyPut(ctx, e.Tenant, "big", kv.PutInput{Value: make([]byte, 1<<20+1)})
	wantProblem(t, err, 413, "value_too_large")
}

// Bytes of every value go in and come out unchanged, with their content type.
func TestBinarySafe(t *testing.T) {
	t.Parallel()
	e := setup(t)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	if _, _, err := e.s.KeyPut(e.ctx, e.Tenant, "blob", kv.PutInput{Value: all}); err != nil {
		t.Fatal(err)
	}
	got, err := e.s.KeyGet(e.ctx, e.Tenant, "blob")
	if err != nil || !bytes.Equal(got.Value, all) || got.ContentType != "application/octet-stream" || got.Size != 256 {
		t.Fatalf("blob: %v %q %v", got.Value[:8], got.ContentType, err)
	}
	if _, _, err := e.s.KeyPut(e.ctx, e.Tenant, "empty", kv.PutInput{Value: nil, ContentType: "text/plain"}); err != nil {
		t.Fatal(err)
	}
	got, err = e.s.KeyGet(e.ctx, e.Tenant, "empty")
	if err != nil || got.Value == nil || len(got.Value) != 0 || got.ContentType != "text/plain" {
		t.Fatalf("empty: %+v %v", got, err)
	}
	b, _ := json.Marshal(got)
	if !strings.Contains(string(b), `"size":0`) {
		t.Fatalf("json: %s", b)
	}
}

// An expired key is invisible at once, can be re-created, and is swept with an "expire"
// change.
func TestTTL(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := e.ctx
	head, err := e.Feed.Head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.s.KeyPut(ctx, e.Tenant, "session", kv.PutInput{Value: []byte(`"x"`), TTL: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.KeyGet(ctx, e.Tenant, "session"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	_, err = e.s.KeyGet(ctx, e.Tenant, "session")
	wantProblem(t, err, 404, "key_not_found")
	if p, _ := e.s.KeyList(ctx, e.Tenant, nil); len(p.Items) != 0 {
		t.Fatalf("listed an expired key: %+v", p.Items)
	}
	if n, err := e.s.Sweep(ctx); err != nil || n != 1 {
		t.Fatalf("sweep: %d %v", n, err)
	}
	// The feed tells consumers: create, then expire.
	var ops []string
	deadline := time.Now().Add(5 * time.Second)
	for len(ops) < 2 && time.Now().Before(deadline) {
		changes, _, err := e.Feed.Read(ctx, e.Tenant, head, 100)
		if err != nil {
			t.Fatal(err)
		}
		ops = ops[:0]
		for _, c := range changes {
			if c.Kind == "kv" && c.Key == "session" {
				ops = append(ops, c.Op)
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if strings.Join(ops, ",") != "create,expire" {
		t.Fatalf("feed ops %v", ops)
	}
	// An expired key is replaced as if it were absent.
	if _, _, err := e.s.KeyPut(ctx, e.Tenant, "t2", kv.PutInput{Value: []byte(`1`), TTL: time.Millisecond, Description: str("old")}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond)
	e2, created, err := e.s.KeyPut(ctx, e.Tenant, "t2", kv.PutInput{Value: []byte(`2`), IfNoneMatch: true})
	if err != nil || !created || e2.Description != "" || e2.ExpiresAt != nil {
		t.Fatalf("over an expired key: %+v %v %v", e2, created, err)
	}
}

func TestPrefixListing(t *testing.T) {
	t.Parallel()
	e := setup(t)
	ctx := e.ctx
	for _, k := range []string{"app/a", "app/b", "app/c", "app%/x", "app_y", "apq", "other"} {
		if _, _, err := e.s.KeyPut(ctx, e.Tenant, k, kv.PutInput{Value: []byte(fmt.Sprintf("%q", k))}); err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	cursor := ""
	for range 10 {
		p, err := e.s.KeyList(e.As(testworld.Viewer), e.Tenant, &kv.ListOptions{Prefix: "app/", Limit: 2, Cursor: cursor, Values: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, it := range p.Items {
			keys = append(keys, it.Key)
			if string(it.Value) != fmt.Sprintf("%q", it.Key) {
				t.Fatalf("value of %s: %s", it.Key, it.Value)
			}
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if strings.Join(keys, " ") != "app/a app/b app/c" {
		t.Fatalf("keys %v", keys)
	}
	// LIKE's wildcards in a prefix are literal.
	p, err := e.s.KeyList(ctx, e.Tenant, &kv.ListOptions{Prefix: "app%"})
	if err != nil || len(p.Items) != 1 || p.Items[0].Key != "app%/x" || p.Items[0].Value != nil {
		t.Fatalf("prefix app%%: %+v %v", p.Items, err)
	}
	p, _ = e.s.KeyList(ctx, e.Tenant, &kv.ListOptions{Prefix: "app_"})
	if len(p.Items) != 1 || p.Items[0].Key != "app_y" {
		t.Fatalf("prefix app_: %+v", p.Items)
	}
	_, err = e.s.KeyList(ctx, e.Tenant, &kv.ListOptions{Cursor: "!!"})
	wantProblem(t, err, 400, "invalid_cursor")
}

// Every operation as every identity; another tenant's keys are invisible.
func TestTenantWall(t *testing.T) {
	t.Parallel()
	e := setup(t)
	if _, _, err := e.s.KeyPut(e.ctx, e.Tenant, "k", kv.PutInput{Value: []byte(`1`)}); err != nil {
		t.Fatal(err)
	}
	n := 0
	ops := []struct {
		name  string
		write bool
		call  func(ctx context.Context) error
	}{
		{"get", false, func(ctx context.Context) error { _, err := e.s.KeyGet(ctx, e.Tenant, "k"); return err }},
		{"list", false, func(ctx context.Context) error { _, err := e.s.KeyList(ctx, e.Tenant, nil); return err }},
		{"put", true, func(ctx context.Context) error {
			_, _, err := e.s.KeyPut(ctx, e.Tenant, "k", kv.PutInput{Value: []byte(`2`)})
			return err
		}},
		{"delete", true, func(ctx context.Context) error {
			n++
			key := fmt.Sprintf("del%d", n)
			if _, _, err := e.s.KeyPut(e.ctx, e.Tenant, key, kv.PutInput{Value: []byte(`1`)}); err != nil {
				return err
			}
			return e.s.KeyDelete(ctx, e.Tenant, key, 0)
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
			case testworld.Viewer, testworld.Member, testworld.APIKey:
				if op.write {
					want = 403
				}
			}
			err := op.call(e.As(role))
			var p *problem.Error
			if want == 0 && err != nil || want != 0 && (!errors.As(err, &p) || p.Status != want) {
				t.Errorf("%s as %q: %v, want %d", op.name, role, err, want)
			}
		}
	}
	if _, err := e.s.KeyGet(e.As(testworld.Outsider), e.Other, "k"); !problem.HasCode(err, "key_not_found") {
		t.Fatalf("the other tenant read our key: %v", err)
	}
	if p, err := e.s.KeyList(e.As(testworld.Outsider), e.Other, nil); err != nil || len(p.Items) != 0 {
		t.Fatalf("the other tenant listed: %+v %v", p, err)
	}
}
