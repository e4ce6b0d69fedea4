// Package audit is Strata's audit log: one row per mutating request and per security event,
// written in the same transaction as the change it records, append-only (the database
// refuses UPDATE, DELETE and TRUNCATE), and hash-chained per tenant so that tampering is
// detected by Verify.
//
// Writers call Record inside their own transaction; who acted and the request's metadata
// travel in the context (WithActor, WithRequest), set once by the HTTP layer. Rows are
// sealed into their chain by a background sealer within milliseconds of commit, so writers
// in one tenant never wait on each other.
package audit

import (
	"context"
	"embed"
	"encoding/json"
	"net/netip"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stratadb/strata/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the audit module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "audit", FS: migrate.Dir(migrations, "migrations")}

// Platform is the chain of platform-level events: users, sign-ins, tenant lifecycle.
const Platform = "00000000-0000-0000-0000-000000000000"

// Actor is who acted: a user, an API key, or neither (the system).
type Actor struct {
	// UserID is the acting user's id, or "".
	UserID string
	// KeyID is the acting API key's id, or "".
	KeyID string
	// Name is a human label kept with the row (a username or key name), so the row stays
	// readable after the user or key is deleted.
	Name string
}

// Request is the HTTP request's metadata recorded with each row.
type Request struct {
	IP        string
	UserAgent string
	RequestID string
}

type ctxKey int

const (
	keyActor ctxKey = iota
	keyRequest
)

// WithActor returns ctx carrying the actor that rows recorded under it name.
func WithActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, keyActor, a)
}

// ActorFrom returns the actor in ctx; the zero Actor (the system) when there is none.
func ActorFrom(ctx context.Context) Actor {
	a, _ := ctx.Value(keyActor).(Actor)
	return a
}

// WithRequest returns ctx carrying the request metadata recorded with rows.
func WithRequest(ctx context.Context, r Request) context.Context {
	return context.WithValue(ctx, keyRequest, r)
}

// RequestFrom returns the request metadata in ctx, or the zero value.
func RequestFrom(ctx context.Context) Request {
	r, _ := ctx.Value(keyRequest).(Request)
	return r
}

// Entry is one audited event.
type Entry struct {
	// Tenant is the tenant's id; "" records on the platform chain.
	Tenant string
	// Action names the event as resource.verb: "tenant.create", "auth.signin_failed".
	Action string
	// ResourceType and ResourceID name what was acted on ("collection", "notes").
	ResourceType string
	ResourceID   string
	// Details is extra context. Keys that look like secrets (password, token, secret, key
	// material, authorization) are redacted before writing.
	Details map[string]any
}

// Execer is what Record writes through: a transaction (to record with the change), a
// connection or a pool.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

const insertSQL = `INSERT INTO audit_log
	(chain, actor_user_id, actor_key_id, actor_name, action, resource_type, resource_id, details, ip, user_agent, request_id)
	VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`

// Record writes e through q, naming the actor and request found in ctx. Call it inside the
// transaction that makes the change, so the row commits if and only if the change does.
func Record(ctx context.Context, q Execer, e Entry) error {
	a, r := ActorFrom(ctx), RequestFrom(ctx)
	details, err := json.Marshal(Scrub(e.Details))
	if err != nil {
		return err
	}
	_, err = q.Exec(ctx, insertSQL, chainOf(e.Tenant), nullable(a.UserID), nullable(a.KeyID), a.Name,
		e.Action, e.ResourceType, e.ResourceID, details, ipOrNil(r.IP), truncate(r.UserAgent, 512), r.RequestID)
	return err
}

func chainOf(tenant string) string {
	if tenant == "" {
		return Platform
	}
	return tenant
}

func nullable(s string) any {
	if s == "" {
		return nil
	}
	return s
}

func ipOrNil(s string) any {
	addr, err := netip.ParseAddr(s)
	if err != nil {
		return nil
	}
	return addr.String()
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

var secretWords = []string{"password", "passwd", "secret", "token", "authorization", "api_key", "apikey", "credential", "private_key"}

// Scrub returns a copy of details with the values of secret-looking keys replaced by
// "[redacted]", at any depth.
func Scrub(details map[string]any) map[string]any {
	if details == nil {
		return map[string]any{}
	}
	out := make(map[string]any, len(details))
	for k, v := range details {
		if isSecretKey(k) {
			out[k] = "[redacted]"
			continue
		}
		out[k] = scrubValue(v)
	}
	return out
}

func scrubValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		return Scrub(t)
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = scrubValue(e)
		}
		return out
	default:
		return v
	}
}

func isSecretKey(k string) bool {
	k = strings.ToLower(k)
	for _, w := range secretWords {
		if strings.Contains(k, w) {
			return true
		}
	}
	return false
}
