package problem_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stratadb/strata/problem"
)

func TestIsMatchesKindAndCode(t *testing.T) {
	t.Parallel()
	err := fmt.Errorf("loading: %w", problem.NotFound("collection_not_found", "collection %q not found", "notes"))
	if !errors.Is(err, problem.ErrNotFound) {
		t.Error("a wrapped not-found problem does not match ErrNotFound")
	}
	if errors.Is(err, problem.ErrConflict) {
		t.Error("a not-found problem matches ErrConflict")
	}
	if !problem.HasCode(err, "collection_not_found") || problem.HasCode(err, "other") {
		t.Error("HasCode")
	}
	cause := errors.New("disk on fire")
	if !errors.Is(problem.Internal(cause), cause) {
		t.Error("Internal does not unwrap to its cause")
	}
}

func TestJSONShape(t *testing.T) {
	t.Parallel()
	p := problem.PreconditionFailed("version_mismatch", "document is at version 7").
		WithExtension("current_version", 7).WithField("header.If-Match", "stale")
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"type": "about:blank", "title": "Precondition Failed", "status": float64(412),
		"code": "version_mismatch", "detail": "document is at version 7", "current_version": float64(7)}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v (%s)", k, m[k], v, b)
		}
	}
	if errs, _ := m["errors"].([]any); len(errs) != 1 {
		t.Errorf("errors = %v", m["errors"])
	}
	if p.ContentType("application/json") != "application/problem+json" {
		t.Error("content type")
	}
}

func TestInternalHidesCause(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(problem.Internal(errors.New("password=hunter2 in a driver message")))
	if !json.Valid(b) || strings.Contains(string(b), "hunter2") {
		t.Fatalf("internal problem leaks its cause: %s", b)
	}
}

func TestRateLimitedRetryAfter(t *testing.T) {
	t.Parallel()
	if got := problem.RateLimited("too_many", 1500*time.Millisecond, "slow down").GetHeaders().Get("Retry-After"); got != "2" {
		t.Errorf("Retry-After = %q, want 2 (rounded up)", got)
	}
	if got := problem.RateLimited("too_many", 0, "slow down").GetHeaders().Get("Retry-After"); got != "1" {
		t.Errorf("Retry-After = %q, want at least 1", got)
	}
}
