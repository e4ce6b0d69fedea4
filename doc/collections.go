package doc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Collection is a named set of documents with its options.
type Collection struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	// Schema is a JSON Schema (draft 2020-12) every write must satisfy; absent for none.
	Schema json.RawMessage `json:"schema,omitempty"`
	// Indexes are the declared indexed paths (filter syntax), with their build status.
	Indexes []Index `json:"indexes"`
	// MaxDocBytes limits a document's size (bytes of JSON). Default 1 MiB.
	MaxDocBytes int `json:"max_doc_bytes"`
	// Retention limits history; absent keeps every version.
	Retention *Retention      `json:"retention,omitempty"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// Index is a declared indexed path and the state of its index.
type Index struct {
	Path    string     `json:"path" example:"address.city"`
	Status  string     `json:"status" enum:"building,ready,failed" doc:"building until the index is usable; filters and sorts work meanwhile, without it."`
	Error   string     `json:"error,omitempty"`
	Created time.Time  `json:"created_at"`
	Ready   *time.Time `json:"ready_at,omitempty"`
}

// Retention bounds a collection's history. A version is pruned when either limit says so;
// the current version is always kept.
type Retention struct {
	// KeepVersions keeps at most this many versions per document.
	KeepVersions *int `json:"keep_versions,omitempty" minimum:"1"`
	// KeepDays keeps versions at most this many days old.
	KeepDays *int `json:"keep_days,omitempty" minimum:"1"`
}

// CollectionInput creates a collection.
type CollectionInput struct {
	Name        string          `json:"name" minLength:"1" maxLength:"64" pattern:"^[A-Za-z0-9][A-Za-z0-9_.-]*$"`
	Description string          `json:"description,omitempty" maxLength:"2000"`
	Schema      json.RawMessage `json:"schema,omitempty" doc:"A JSON Schema (draft 2020-12); $ref to other locations is not followed."`
	Indexes     []string        `json:"indexes,omitempty" maxItems:"32" doc:"Paths to index, in filter syntax (address.city)."`
	MaxDocBytes int             `json:"max_doc_bytes,omitempty" minimum:"64" maximum:"16777216"`
	Retention   *Retention      `json:"retention,omitempty"`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
}

// CollectionUpdate changes what it sets. Schema "null" removes the schema; Indexes, when
// set, is the new full list (added paths are built, removed ones dropped).
type CollectionUpdate struct {
	Description *string         `json:"description,omitempty" maxLength:"2000"`
	Schema      json.RawMessage `json:"schema,omitempty"`
	Indexes     *[]string       `json:"indexes,omitempty" maxItems:"32"`
	MaxDocBytes *int            `json:"max_doc_bytes,omitempty" minimum:"64" maximum:"16777216"`
	Retention   *Retention      `json:"retention,omitempty" doc:"The new retention; an empty object keeps every version."`
	Metadata    json.RawMessage `json:"metadata,omitempty"`
}

// collection is what writes and reads need, cached per node.
type collection struct {
	id       string
	tenant   string
	name     string
	maxBytes int
	schema   *jsonschema.Schema
	indexed  map[string]bool // path (canonical filter syntax) → index ready
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

func collectionNotFound(name string) error {
	return problem.NotFound("collection_not_found", "collection %q not found", name)
}

func cacheKey(tenant, name string) string { return tenant + "|" + name }

func (s *Store) forget(key string) {
	s.mu.Lock()
	delete(s.colls, key)
	s.mu.Unlock()
}

func (s *Store) forgetAll() {
	s.mu.Lock()
	clear(s.colls)
	s.mu.Unlock()
}

// lookup returns the collection, cached while the notification listener is healthy.
func (s *Store) lookup(ctx context.Context, tenant, name string) (*collection, error) {
	key := cacheKey(tenant, name)
	if s.listener.Healthy() {
		s.mu.Lock()
		c := s.colls[key]
		s.mu.Unlock()
		if c != nil {
			return c, nil
		}
	}
	if !nameRE.MatchString(name) {
		return nil, collectionNotFound(name)
	}
	c := &collection{tenant: tenant, name: name, indexed: map[string]bool{}}
	var schema []byte
	err := s.pool.QueryRow(ctx, `SELECT id, max_doc_bytes, schema FROM collections WHERE tenant_id = $1 AND name = $2`, tenant, name).
		Scan(&c.id, &c.maxBytes, &schema)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, collectionNotFound(name)
	}
	if err != nil {
		return nil, db.Translate(err, "collection")
	}
	if schema != nil {
		if c.schema, err = compileSchema(schema); err != nil {
			return nil, err
		}
	}
	rows, err := s.pool.Query(ctx, `SELECT path, status = 'ready' FROM collection_indexes WHERE collection_id = $1`, c.id)
	if err != nil {
		return nil, db.Translate(err, "collection")
	}
	for rows.Next() {
		var p string
		var ready bool
		if err := rows.Scan(&p, &ready); err != nil {
			rows.Close()
			return nil, err
		}
		c.indexed[p] = ready
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if s.listener.Healthy() {
		s.mu.Lock()
		s.colls[key] = c
		s.mu.Unlock()
	}
	return c, nil
}

// authorized looks the collection up after checking perm on it. A missing collection
// answers 404 only to callers who could read it; others get what Authorize says.
func (s *Store) authorized(ctx context.Context, tenant, name string, perm auth.Permission) (*collection, error) {
	if _, err := s.auth.Authorize(ctx, tenant, "collection:"+name, perm); err != nil {
		return nil, err
	}
	return s.lookup(ctx, tenant, name)
}

// noRemoteRefs refuses every $ref that leaves the schema: following them would let a
// schema read files or make requests from the server.
type noRemoteRefs struct{}

func (noRemoteRefs) Load(url string) (any, error) {
	return nil, fmt.Errorf("references to other documents (%s) are not followed", url)
}

func compileSchema(raw []byte) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, problem.Unprocessable("invalid_schema", "the schema is not valid JSON: %v", err).WithField("body.schema", "invalid JSON")
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.UseLoader(noRemoteRefs{})
	if err := c.AddResource("strata:///schema.json", doc); err != nil {
		return nil, problem.Unprocessable("invalid_schema", "the schema is invalid: %v", err).WithField("body.schema", "invalid")
	}
	sch, err := c.Compile("strata:///schema.json")
	if err != nil {
		return nil, problem.Unprocessable("invalid_schema", "the schema is invalid: %v", err).WithField("body.schema", "invalid")
	}
	return sch, nil
}

// validateSchema checks body against the collection's schema, naming each failing JSON
// pointer.
func (c *collection) validateSchema(body []byte) error {
	if c.schema == nil {
		return nil
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		return problem.Invalid("invalid_json", "the document is not valid JSON: %v", err)
	}
	err = c.schema.Validate(inst)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err
	}
	p := problem.Unprocessable("schema_violation", "the document does not satisfy the collection's schema")
	seen := map[string]bool{}
	out := ve.BasicOutput()
	for _, u := range out.Errors {
		if u.Error == nil {
			continue
		}
		loc := u.InstanceLocation
		if loc == "" {
			loc = "/"
		}
		msg := u.Error.String()
		if seen[loc+msg] || len(p.Errors) >= 50 {
			continue
		}
		seen[loc+msg] = true
		p = p.WithField(loc, msg)
	}
	if len(p.Errors) == 0 {
		p = p.WithField("/", ve.Error())
	}
	return p
}

// canonicalPath parses a declared index path and writes it back canonically.
func canonicalPath(p string) (filter.Path, string, error) {
	e, err := filter.Parse(p + " = 0")
	if err != nil {
		return filter.Path{}, "", problem.Unprocessable("invalid_index_path", "%q is not a path: %v", p, err).WithField("body.indexes", p)
	}
	c, ok := e.(filter.Compare)
	if !ok || c.Path.Meta != "" || len(c.Path.Elems) == 0 {
		return filter.Path{}, "", problem.Unprocessable("invalid_index_path", "%q is not a document path", p).WithField("body.indexes", p)
	}
	return c.Path, c.Path.String(), nil
}

func indexName(collID, path string) string {
	sum := sha256.Sum256([]byte(collID + "\x00" + path))
	return "doc_idx_" + hex.EncodeToString(sum[:10])
}

func (s *Store) checkInput(in *CollectionInput) error {
	if !nameRE.MatchString(in.Name) {
		return problem.Unprocessable("invalid_name", "a collection name is 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit").WithField("body.name", "invalid")
	}
	if len(in.Schema) > 0 && string(in.Schema) != "null" {
		if _, err := compileSchema(in.Schema); err != nil {
			return err
		}
	}
	if in.MaxDocBytes == 0 {
		in.MaxDocBytes = s.cfg.DefaultMaxDocBytes
	}
	return checkRetention(in.Retention)
}

func checkRetention(r *Retention) error {
	if r == nil {
		return nil
	}
	if (r.KeepVersions != nil && *r.KeepVersions < 1) || (r.KeepDays != nil && *r.KeepDays < 1) {
		return problem.Unprocessable("invalid_retention", "keep_versions and keep_days are at least 1").WithField("body.retention", "invalid")
	}
	return nil
}

func nullableJSON(b json.RawMessage) any {
	if len(b) == 0 || string(b) == "null" {
		return nil
	}
	return string(b)
}

// CollectionCreate creates a collection (admin on collection:<name>).
func (s *Store) CollectionCreate(ctx context.Context, tenant string, in CollectionInput) (Collection, error) {
	if _, err := s.auth.Authorize(ctx, tenant, "collection:"+in.Name, auth.PermAdmin); err != nil {
		return Collection{}, err
	}
	if err := s.checkInput(&in); err != nil {
		return Collection{}, err
	}
	id := uuid.Must(uuid.NewV7()).String()
	paths, err := uniquePaths(in.Indexes)
	if err != nil {
		return Collection{}, err
	}
	var keepV, keepD *int
	if in.Retention != nil {
		keepV, keepD = in.Retention.KeepVersions, in.Retention.KeepDays
	}
	metadata := in.Metadata
	if len(metadata) == 0 || string(metadata) == "null" {
		metadata = json.RawMessage("{}")
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO collections (id, tenant_id, name, description, schema, max_doc_bytes, keep_versions, keep_days, metadata)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`, id, tenant, in.Name, in.Description, nullableJSON(in.Schema), in.MaxDocBytes,
			keepV, keepD, string(metadata)); err != nil {
			return err
		}
		for _, p := range paths {
			if _, err := tx.Exec(ctx, `INSERT INTO collection_indexes (collection_id, path, name) VALUES ($1, $2, $3)`, id, p, indexName(id, p)); err != nil {
				return err
			}
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "collection.create", ResourceType: "collection", ResourceID: in.Name,
			Details: map[string]any{"indexes": paths, "schema": len(in.Schema) > 0}})
	})
	if err != nil {
		if problem.HasCode(db.Translate(err, ""), "already_exists") {
			return Collection{}, problem.Conflict("collection_exists", "collection %q already exists", in.Name)
		}
		return Collection{}, db.Translate(err, "collection")
	}
	s.kickIndexes()
	return s.collectionGet(ctx, tenant, in.Name)
}

func uniquePaths(in []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, p := range in {
		_, c, err := canonicalPath(p)
		if err != nil {
			return nil, err
		}
		if !seen[c] {
			seen[c] = true
			out = append(out, c)
		}
	}
	return out, nil
}

// CollectionGet returns a collection with its indexes' status (read).
func (s *Store) CollectionGet(ctx context.Context, tenant, name string) (Collection, error) {
	if _, err := s.auth.Authorize(ctx, tenant, "collection:"+name, auth.PermRead); err != nil {
		return Collection{}, err
	}
	return s.collectionGet(ctx, tenant, name)
}

const collectionColumns = `c.id, c.name, c.description, c.schema, c.max_doc_bytes, c.keep_versions, c.keep_days, c.metadata,
	c.created_at, c.updated_at,
	COALESCE((SELECT json_agg(json_build_object('path', i.path, 'status', i.status, 'error', i.error, 'created_at', i.created_at,
		'ready_at', i.ready_at) ORDER BY i.path) FROM collection_indexes i WHERE i.collection_id = c.id), '[]')`

func scanCollection(row pgx.Row) (Collection, string, error) {
	var c Collection
	var id string
	var keepV, keepD *int
	var schema, meta []byte
	err := row.Scan(&id, &c.Name, &c.Description, &schema, &c.MaxDocBytes, &keepV, &keepD, &meta, &c.CreatedAt, &c.UpdatedAt, &c.Indexes)
	if schema != nil {
		c.Schema = schema
	}
	if len(meta) > 0 && string(meta) != "{}" {
		c.Metadata = meta
	}
	if keepV != nil || keepD != nil {
		c.Retention = &Retention{KeepVersions: keepV, KeepDays: keepD}
	}
	return c, id, err
}

func (s *Store) collectionGet(ctx context.Context, tenant, name string) (Collection, error) {
	c, _, err := scanCollection(s.pool.QueryRow(ctx, `SELECT `+collectionColumns+` FROM collections c WHERE c.tenant_id = $1 AND c.name = $2`, tenant, name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Collection{}, collectionNotFound(name)
	}
	return c, db.Translate(err, "collection")
}

// CollectionList lists the tenant's collections the caller may read, by name.
func (s *Store) CollectionList(ctx context.Context, tenant string) ([]Collection, error) {
	a, err := s.auth.Access(ctx, tenant)
	if err != nil {
		return nil, err
	}
	rows, err := s.pool.Query(ctx, `SELECT `+collectionColumns+` FROM collections c WHERE c.tenant_id = $1 ORDER BY c.name`, tenant)
	if err != nil {
		return nil, db.Translate(err, "collections")
	}
	defer rows.Close()
	out := []Collection{}
	for rows.Next() {
		c, _, err := scanCollection(rows)
		if err != nil {
			return nil, db.Translate(err, "collections")
		}
		if a.Can("collection:"+c.Name, auth.PermRead) {
			out = append(out, c)
		}
	}
	return out, db.Translate(rows.Err(), "collections")
}

// CollectionUpdate changes a collection's options (admin). A new schema applies to later
// writes; existing documents are not revalidated.
func (s *Store) CollectionUpdate(ctx context.Context, tenant, name string, in CollectionUpdate) (Collection, error) {
	c, err := s.authorized(ctx, tenant, name, auth.PermAdmin)
	if err != nil {
		return Collection{}, err
	}
	if len(in.Schema) > 0 && string(in.Schema) != "null" {
		if _, err := compileSchema(in.Schema); err != nil {
			return Collection{}, err
		}
	}
	if err := checkRetention(in.Retention); err != nil {
		return Collection{}, err
	}
	var paths []string
	if in.Indexes != nil {
		if paths, err = uniquePaths(*in.Indexes); err != nil {
			return Collection{}, err
		}
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT 1 FROM collections WHERE id = $1 FOR UPDATE`, c.id); err != nil {
			return err
		}
		if in.Description != nil {
			if _, err := tx.Exec(ctx, `UPDATE collections SET description = $2 WHERE id = $1`, c.id, *in.Description); err != nil {
				return err
			}
		}
		if len(in.Schema) > 0 {
			if _, err := tx.Exec(ctx, `UPDATE collections SET schema = $2 WHERE id = $1`, c.id, nullableJSON(in.Schema)); err != nil {
				return err
			}
		}
		if in.MaxDocBytes != nil {
			if _, err := tx.Exec(ctx, `UPDATE collections SET max_doc_bytes = $2 WHERE id = $1`, c.id, *in.MaxDocBytes); err != nil {
				return err
			}
		}
		if in.Retention != nil {
			if _, err := tx.Exec(ctx, `UPDATE collections SET keep_versions = $2, keep_days = $3 WHERE id = $1`, c.id,
				in.Retention.KeepVersions, in.Retention.KeepDays); err != nil {
				return err
			}
		}
		if len(in.Metadata) > 0 {
			meta := in.Metadata
			if string(meta) == "null" {
				meta = json.RawMessage("{}")
			}
			if _, err := tx.Exec(ctx, `UPDATE collections SET metadata = $2 WHERE id = $1`, c.id, string(meta)); err != nil {
				return err
			}
		}
		if in.Indexes != nil {
			if err := setIndexes(ctx, tx, c.id, paths); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, `UPDATE collections SET updated_at = now() WHERE id = $1`, c.id); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, cacheKey(tenant, name)); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "collection.update", ResourceType: "collection", ResourceID: name,
			Details: map[string]any{"schema": len(in.Schema) > 0, "indexes": paths, "retention": in.Retention != nil}})
	})
	if err != nil {
		return Collection{}, db.Translate(err, "collection")
	}
	s.forget(cacheKey(tenant, name))
	s.kickIndexes()
	return s.collectionGet(ctx, tenant, name)
}

// setIndexes makes the declared paths exactly paths: new ones are queued for building,
// removed ones for a concurrent drop.
func setIndexes(ctx context.Context, tx pgx.Tx, collID string, paths []string) error {
	if _, err := tx.Exec(ctx, `INSERT INTO collection_index_drops (name)
		SELECT name FROM collection_indexes WHERE collection_id = $1 AND NOT path = ANY($2) ON CONFLICT DO NOTHING`, collID, paths); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `DELETE FROM collection_indexes WHERE collection_id = $1 AND NOT path = ANY($2)`, collID, paths); err != nil {
		return err
	}
	for _, p := range paths {
		if _, err := tx.Exec(ctx, `INSERT INTO collection_indexes (collection_id, path, name) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			collID, p, indexName(collID, p)); err != nil {
			return err
		}
	}
	return nil
}

// CollectionDelete deletes a collection with all its documents and their history (admin).
func (s *Store) CollectionDelete(ctx context.Context, tenant, name string) error {
	c, err := s.authorized(ctx, tenant, name, auth.PermAdmin)
	if err != nil {
		return err
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO collection_index_drops (name) SELECT name FROM collection_indexes WHERE collection_id = $1
			ON CONFLICT DO NOTHING`, c.id); err != nil {
			return err
		}
		// The documents go first: their row locks make a concurrent write that refers to one
		// (an edge being created) wait, then fail, instead of slipping past the hooks.
		for _, q := range []string{`DELETE FROM documents WHERE collection_id = $1`, `DELETE FROM document_versions WHERE collection_id = $1`} {
			if _, err := tx.Exec(ctx, q, c.id); err != nil {
				return err
			}
		}
		if err := s.runDeleteHooks(ctx, tx, Deletion{Tenant: tenant, CollectionID: c.id, Collection: name}); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, `DELETE FROM collections WHERE id = $1`, c.id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return collectionNotFound(name)
		}
		if _, err := tx.Exec(ctx, "SELECT pg_notify($1, $2)", notifyChannel, cacheKey(tenant, name)); err != nil {
			return err
		}
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "collection.delete", ResourceType: "collection", ResourceID: name})
	})
	if err != nil {
		return db.Translate(err, "collection")
	}
	s.forget(cacheKey(tenant, name))
	s.kickIndexes()
	return nil
}

// sqlLiteral quotes a string as a SQL literal (for the uuids of collections, which
// partial indexes and their queries must spell identically).
// CollectionLiteral is a collection's id as a SQL literal ('…'::uuid). Queries that filter
// documents name their collection this way rather than as a parameter: a declared index is
// partial on its collection, and PostgreSQL uses a partial index only when the planner
// sees the value (a prepared statement's generic plan does not).
func CollectionLiteral(id string) string { return sqlLiteral(id) + "::uuid" }

func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// CollectionID returns the id of a tenant's collection after authorizing perm on it, for
// modules that refer to documents (the graph).
func (s *Store) CollectionID(ctx context.Context, tenant, name string, perm auth.Permission) (string, error) {
	c, err := s.authorized(ctx, tenant, name, perm)
	if err != nil {
		return "", err
	}
	return c.id, nil
}

// CollectionNames maps the ids of a tenant's collections to their names. It does not
// authorize: callers decide what the principal may see.
func (s *Store) CollectionNames(ctx context.Context, tenant string) (map[string]string, error) {
	rows, err := s.pool.Query(ctx, `SELECT id, name FROM collections WHERE tenant_id = $1`, tenant)
	if err != nil {
		return nil, db.Translate(err, "collections")
	}
	names := map[string]string{}
	var id, name string
	_, err = pgx.ForEachRow(rows, []any{&id, &name}, func() error {
		names[id] = name
		return nil
	})
	return names, db.Translate(err, "collections")
}
