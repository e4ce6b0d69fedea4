package doc

import (
	"context"
	"encoding/json"
	"errors"
	"regexp"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/history"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/internal/jsonx"
	"github.com/stratadb/strata/problem"
)

// DocInput creates a document.
type DocInput struct {
	// ID is the document's id; empty means a server-made, time-ordered one (a UUIDv7).
	ID string
	// Data is the document: one JSON object.
	Data json.RawMessage
	// IdempotencyKey, when set, makes a retried create return the first one's document.
	IdempotencyKey string
}

// WriteOptions are the preconditions of a write.
type WriteOptions struct {
	// IfMatch, when not zero, is the version the document must be at (412 otherwise).
	IfMatch int64
}

// PatchKind is the format of a patch.
type PatchKind int

// Patch formats.
const (
	MergePatch PatchKind = iota // RFC 7396, application/merge-patch+json
	JSONPatch                   // RFC 6902, application/json-patch+json
)

var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@~=+-]{0,255}$`)

// ValidRef reports whether a collection name and a document id are well-formed (every
// stored document's are), for modules that refer to documents.
func ValidRef(collection, id string) bool {
	return nameRE.MatchString(collection) && idRE.MatchString(id)
}

func checkID(id string) error {
	if !idRE.MatchString(id) {
		return problem.Unprocessable("invalid_id", "a document id is 1 to 256 letters, digits or _ . : @ ~ = + -, starting with a letter or digit").
			WithField("id", "invalid")
	}
	return nil
}

func docNotFound(id string) error {
	return problem.NotFound("document_not_found", "document %q not found", id)
}

// prepare checks a body for a collection: size, strict JSON, schema.
func (c *collection) prepare(body []byte) error {
	if len(body) > c.maxBytes {
		return problem.TooLarge("document_too_large", "the document is %d bytes; collection %q allows at most %d", len(body), c.name, c.maxBytes)
	}
	if err := jsonx.Validate(body); err != nil {
		return err
	}
	return c.validateSchema(body)
}

// queryer is a transaction or a pool.
type queryer interface {
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

// DocCreate creates a document (write on the collection). Without an idempotency key the
// document, its first version, its feed entry and its audit row go to the database in one
// round trip, as one transaction.
func (s *Store) DocCreate(ctx context.Context, tenant, coll string, in DocInput) (Document, error) {
	if in.IdempotencyKey != "" {
		var d Document
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			d, err = s.DocCreateTx(ctx, tx, tenant, coll, in)
			return err
		})
		if err == nil {
			s.feed.Kick()
		}
		return d, s.writeErr(err, in.ID)
	}
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return Document{}, err
	}
	d, err := s.create(ctx, s.pool, c, in)
	if err == nil {
		s.feed.Kick()
	}
	return d, s.writeErr(err, in.ID)
}

// DocCreateTx creates a document in the caller's transaction.
func (s *Store) DocCreateTx(ctx context.Context, tx pgx.Tx, tenant, coll string, in DocInput) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return Document{}, err
	}
	if in.IdempotencyKey != "" {
		var replay Document
		hit, err := idem.Claim(ctx, tx, tenant, "doc:"+coll, in.IdempotencyKey, idem.Hash([]byte(in.ID), in.Data), &replay)
		if err != nil || hit {
			return replay, err
		}
		d, err := s.create(ctx, tx, c, in)
		if err != nil {
			return d, s.writeErr(err, in.ID)
		}
		meta := d
		meta.Data = nil
		return d, idem.Store(ctx, tx, tenant, "doc:"+coll, in.IdempotencyKey, meta)
	}
	d, err := s.create(ctx, tx, c, in)
	return d, s.writeErr(err, in.ID)
}

func (s *Store) create(ctx context.Context, q queryer, c *collection, in DocInput) (Document, error) {
	if in.ID == "" {
		in.ID = uuid.Must(uuid.NewV7()).String()
	} else if err := checkID(in.ID); err != nil {
		return Document{}, err
	}
	if err := c.prepare(in.Data); err != nil {
		return Document{}, err
	}
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO documents (collection_id, id, tenant_id, version, body, created_at, updated_at)
		VALUES ($1, $2, $3, 1, $4, now(), now()) RETURNING created_at`, c.id, in.ID, c.tenant, string(in.Data))
	b.Queue(`INSERT INTO document_versions (collection_id, id, version, op, at, actor) VALUES ($1, $2, 1, 'create', now(), $3)`,
		c.id, in.ID, audit.ActorFrom(ctx).Name)
	if err := s.runWriteHooks(ctx, db.Batch{B: b}, Written{Tenant: c.tenant, CollectionID: c.id, Collection: c.name,
		IDs: []string{in.ID}, Bodies: [][]byte{in.Data}, Version: 1}); err != nil {
		return Document{}, err
	}
	_ = feed.Append(ctx, db.Batch{B: b}, feed.Entry{Tenant: c.tenant, Kind: "doc", Scope: c.name, Key: in.ID, Op: "create", Version: 1})
	_ = audit.Record(ctx, db.Batch{B: b}, audit.Entry{Tenant: c.tenant, Action: "doc.create", ResourceType: "collection", ResourceID: c.name,
		Details: map[string]any{"id": in.ID}})
	d := Document{ID: in.ID, Collection: c.name, Version: 1, Data: in.Data}
	br := q.SendBatch(ctx, b)
	err := br.QueryRow().Scan(&d.CreatedAt)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	d.UpdatedAt = d.CreatedAt
	return d, err
}

// writeErr turns a duplicate document id into its own conflict.
func (s *Store) writeErr(err error, id string) error {
	if err == nil {
		return nil
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "documents_pkey" {
		return problem.Conflict("document_exists", "a document with id %q exists (or existed: a deleted one can be restored, or replaced with PUT)", id)
	}
	if errors.As(err, &pe) && (pe.Code == "22P02" || pe.Code == "22P05" || pe.Code == "22021") {
		return problem.Unprocessable("invalid_json", "PostgreSQL cannot store this JSON: %s", pe.Message)
	}
	return db.Translate(err, "document")
}

// DocGet returns a document's current version (read on the collection).
func (s *Store) DocGet(ctx context.Context, tenant, coll, id string) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return Document{}, err
	}
	d := Document{ID: id, Collection: coll}
	var body []byte
	err = s.pool.QueryRow(ctx, `SELECT version, body, created_at, updated_at FROM documents WHERE collection_id = $1 AND id = $2`,
		c.id, id).Scan(&d.Version, &body, &d.CreatedAt, &d.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Document{}, docNotFound(id)
	}
	if err != nil {
		return Document{}, db.Translate(err, "document")
	}
	if body == nil {
		return Document{}, problem.NotFound("document_deleted", "document %q was deleted at version %d; it can be restored", id, d.Version).
			WithExtension("current_version", d.Version)
	}
	d.Data = body
	return d, nil
}

// DocReplace replaces a document's body, creating the document if it does not exist
// (write on the collection). Replacing a deleted document brings it back.
func (s *Store) DocReplace(ctx context.Context, tenant, coll, id string, data json.RawMessage, o *WriteOptions) (Document, error) {
	return s.inTx(ctx, func(tx pgx.Tx) (Document, error) { return s.DocReplaceTx(ctx, tx, tenant, coll, id, data, o) })
}

// DocReplaceTx is DocReplace in the caller's transaction.
func (s *Store) DocReplaceTx(ctx context.Context, tx pgx.Tx, tenant, coll, id string, data json.RawMessage, o *WriteOptions) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return Document{}, err
	}
	if err := checkID(id); err != nil {
		return Document{}, err
	}
	if err := c.prepare(data); err != nil {
		return Document{}, err
	}
	d, err := s.write(ctx, tx, c, id, "replace", o, func(cur *current) ([]byte, error) { return data, nil })
	if errors.Is(err, errMissing) {
		if o != nil && o.IfMatch != 0 {
			return Document{}, docNotFound(id)
		}
		d, err = s.create(ctx, tx, c, DocInput{ID: id, Data: data})
	}
	return d, s.writeErr(err, id)
}

// DocPatch applies a merge patch (RFC 7396) or a JSON Patch (RFC 6902) to a document
// (write on the collection); the result must still satisfy the collection's rules.
func (s *Store) DocPatch(ctx context.Context, tenant, coll, id string, kind PatchKind, patch json.RawMessage, o *WriteOptions) (Document, error) {
	return s.inTx(ctx, func(tx pgx.Tx) (Document, error) { return s.DocPatchTx(ctx, tx, tenant, coll, id, kind, patch, o) })
}

// DocPatchTx is DocPatch in the caller's transaction.
func (s *Store) DocPatchTx(ctx context.Context, tx pgx.Tx, tenant, coll, id string, kind PatchKind, patch json.RawMessage, o *WriteOptions) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return Document{}, err
	}
	if !json.Valid(patch) {
		return Document{}, problem.Invalid("invalid_patch", "the patch is not valid JSON")
	}
	d, err := s.write(ctx, tx, c, id, "patch", o, func(cur *current) ([]byte, error) {
		if cur.body == nil {
			return nil, problem.NotFound("document_deleted", "document %q is deleted; restore it before patching", id).WithExtension("current_version", cur.version)
		}
		var next []byte
		var err error
		if kind == JSONPatch {
			next, err = jsonx.Apply(cur.body, patch)
		} else {
			next, err = jsonx.MergePatch(cur.body, patch)
		}
		if err != nil {
			return nil, err
		}
		return next, c.prepare(next)
	})
	if errors.Is(err, errMissing) {
		return Document{}, docNotFound(id)
	}
	return d, s.writeErr(err, id)
}

// DocDelete deletes a document, keeping its history: the new version is a tombstone, and
// the document can be restored (write on the collection).
func (s *Store) DocDelete(ctx context.Context, tenant, coll, id string, o *WriteOptions) (Document, error) {
	return s.inTx(ctx, func(tx pgx.Tx) (Document, error) { return s.DocDeleteTx(ctx, tx, tenant, coll, id, o) })
}

// DocDeleteTx is DocDelete in the caller's transaction.
func (s *Store) DocDeleteTx(ctx context.Context, tx pgx.Tx, tenant, coll, id string, o *WriteOptions) (Document, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return Document{}, err
	}
	d, err := s.write(ctx, tx, c, id, "delete", o, func(cur *current) ([]byte, error) {
		if cur.body == nil {
			return nil, errAlreadyDeleted
		}
		return nil, nil
	})
	switch {
	case errors.Is(err, errMissing):
		return Document{}, docNotFound(id)
	case errors.Is(err, errAlreadyDeleted):
		d.Deleted = true
		return d, nil
	}
	return d, s.writeErr(err, id)
}

var (
	errMissing        = errors.New("document missing")
	errAlreadyDeleted = errors.New("already deleted")
)

func (s *Store) inTx(ctx context.Context, fn func(pgx.Tx) (Document, error)) (Document, error) {
	var d Document
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		d, err = fn(tx)
		return err
	})
	if err == nil {
		s.feed.Kick()
	}
	return d, err
}

// current is a document's state when a write begins.
type current struct {
	version int64
	body    []byte // nil for a tombstone
	created time.Time
}

// write is every change to an existing document: it locks the row, checks If-Match, asks
// next for the new body (nil deletes), turns the previous version's history row into a
// reverse delta or a snapshot, and writes the new version, its feed entry and its audit
// row in one batch.
func (s *Store) write(ctx context.Context, tx pgx.Tx, c *collection, id, op string, o *WriteOptions,
	next func(*current) ([]byte, error)) (Document, error) {
	cur := &current{}
	err := tx.QueryRow(ctx, `SELECT version, body, created_at FROM documents WHERE collection_id = $1 AND id = $2 FOR UPDATE`,
		c.id, id).Scan(&cur.version, &cur.body, &cur.created)
	if errors.Is(err, pgx.ErrNoRows) {
		return Document{}, errMissing
	}
	if err != nil {
		return Document{}, err
	}
	if o != nil && o.IfMatch != 0 && o.IfMatch != cur.version {
		return Document{ID: id, Collection: c.name, Version: cur.version}, problem.PreconditionFailed("version_mismatch",
			"document %q is at version %d, not %d", id, cur.version, o.IfMatch).
			WithExtension("current_version", cur.version).WithHeader("ETag", etag(cur.version))
	}
	body, err := next(cur)
	if err != nil {
		return Document{ID: id, Collection: c.name, Version: cur.version}, err
	}
	if op == "replace" && cur.body == nil {
		op = "restore"
	}
	if op == "delete" {
		body = nil
	}
	snapshot, delta, err := history.Keep(cur.version, cur.body, body, s.cfg.SnapshotEvery)
	if err != nil {
		return Document{}, err
	}
	version := cur.version + 1
	b := &pgx.Batch{}
	var bodyArg any
	if body != nil {
		bodyArg = string(body)
	}
	b.Queue(`UPDATE documents SET version = $3, body = $4, updated_at = now() WHERE collection_id = $1 AND id = $2 RETURNING updated_at`,
		c.id, id, version, bodyArg)
	b.Queue(`UPDATE document_versions SET snapshot = $4, delta = $5 WHERE collection_id = $1 AND id = $2 AND version = $3`,
		c.id, id, cur.version, snapshot, delta)
	b.Queue(`INSERT INTO document_versions (collection_id, id, version, op, at, actor) VALUES ($1, $2, $3, $4, now(), $5)`,
		c.id, id, version, op, audit.ActorFrom(ctx).Name)
	if body == nil {
		err = s.runDeleteHooks(ctx, db.Batch{B: b}, Deletion{Tenant: c.tenant, CollectionID: c.id, Collection: c.name, IDs: []string{id}})
	} else {
		err = s.runWriteHooks(ctx, db.Batch{B: b}, Written{Tenant: c.tenant, CollectionID: c.id, Collection: c.name,
			IDs: []string{id}, Bodies: [][]byte{body}, Version: version})
	}
	if err != nil {
		return Document{}, err
	}
	_ = feed.Append(ctx, db.Batch{B: b}, feed.Entry{Tenant: c.tenant, Kind: "doc", Scope: c.name, Key: id, Op: op, Version: version})
	_ = audit.Record(ctx, db.Batch{B: b}, audit.Entry{Tenant: c.tenant, Action: "doc." + op, ResourceType: "collection", ResourceID: c.name,
		Details: map[string]any{"id": id, "version": version}})
	d := Document{ID: id, Collection: c.name, Version: version, CreatedAt: cur.created, Deleted: body == nil, Data: body}
	br := tx.SendBatch(ctx, b)
	err = br.QueryRow().Scan(&d.UpdatedAt)
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return d, err
}

// etag is the ETag of a version: the version number, quoted.
func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }
