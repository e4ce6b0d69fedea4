package graph

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/history"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/internal/jsonx"
	"github.com/stratadb/strata/problem"
)

// EdgeInput creates an edge.
type EdgeInput struct {
	Type  string          `json:"type" maxLength:"64" example:"depends_on"`
	From  NodeRef         `json:"from"`
	To    NodeRef         `json:"to"`
	Props json.RawMessage `json:"props,omitempty" doc:"Properties: a JSON object (default {})."`
	// IdempotencyKey, when set, makes a retried create return the first one's edge.
	IdempotencyKey string `json:"-"`
}

// WriteOptions are the preconditions of a write.
type WriteOptions struct {
	// IfMatch, when not zero, is the version the edge must be at (412 otherwise).
	IfMatch int64
}

func edgeNotFound(id int64) error {
	return problem.NotFound("edge_not_found", "edge %d not found", id)
}

// checkProps validates properties: one JSON object PostgreSQL stores exactly, within the
// size limit. Empty means {}.
func (s *Store) checkProps(props json.RawMessage, field string) (json.RawMessage, error) {
	if len(props) == 0 || string(props) == "null" {
		return json.RawMessage(`{}`), nil
	}
	if len(props) > s.cfg.MaxPropsBytes {
		return nil, problem.TooLarge("props_too_large", "the properties are %d bytes; at most %d are allowed", len(props), s.cfg.MaxPropsBytes).
			WithField(field, "too large")
	}
	if err := jsonx.Validate(props); err != nil {
		return nil, err
	}
	return props, nil
}

// EdgeCreate creates an edge (write on graph:<type>, read on both documents' collections).
// Both documents must exist; an acyclic type refuses an edge that would close a cycle (409
// cycle, naming it), a unique type a second edge between the same nodes (409
// edge_exists, naming the first).
func (s *Store) EdgeCreate(ctx context.Context, tenant string, in EdgeInput) (Edge, error) {
	var e Edge
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var err error
		e, err = s.EdgeCreateTx(ctx, tx, tenant, in)
		return err
	})
	if err != nil {
		return Edge{}, db.Translate(err, "edge")
	}
	s.feed.Kick()
	return e, nil
}

// EdgeCreateTx is EdgeCreate in the caller's transaction.
func (s *Store) EdgeCreateTx(ctx context.Context, tx pgx.Tx, tenant string, in EdgeInput) (Edge, error) {
	t, err := s.writableType(ctx, tenant, in.Type, "body.type")
	if err != nil {
		return Edge{}, err
	}
	props, err := s.checkProps(in.Props, "body.props")
	if err != nil {
		return Edge{}, err
	}
	if in.IdempotencyKey != "" {
		var replay Edge
		req, _ := json.Marshal(struct {
			Type     string
			From, To NodeRef
		}{in.Type, in.From, in.To})
		hit, err := idem.Claim(ctx, tx, tenant, "graph", in.IdempotencyKey, idem.Hash(req, props), &replay)
		if err != nil || hit {
			return replay, err
		}
		e, err := s.create(ctx, tx, tenant, t, in, props)
		if err != nil {
			return Edge{}, err
		}
		return e, idem.Store(ctx, tx, tenant, "graph", in.IdempotencyKey, e)
	}
	return s.create(ctx, tx, tenant, t, in, props)
}

func (s *Store) create(ctx context.Context, tx pgx.Tx, tenant string, t *EdgeType, in EdgeInput, props json.RawMessage) (Edge, error) {
	t, err := lockTypeRow(ctx, tx, t)
	if err != nil {
		return Edge{}, err
	}
	ends, err := s.resolve(ctx, tenant, []NodeRef{in.From, in.To}, []string{"body.from", "body.to"})
	if err != nil {
		return Edge{}, err
	}
	nodes, err := attach(ctx, tx, tenant, ends)
	var missing missingDoc
	if errors.As(err, &missing) {
		ref, field := in.From, "body.from"
		if missing.k != ends[0] {
			ref, field = in.To, "body.to"
		}
		return Edge{}, problem.NotFound("document_not_found", "document %s does not exist (or is deleted)", ref).WithField(field, ref.String())
	}
	if err != nil {
		return Edge{}, err
	}
	from, to := nodes[ends[0]], nodes[ends[1]]
	if t.Acyclic {
		if err := lockType(ctx, tx, t.id); err != nil {
			return Edge{}, err
		}
		cycle, err := s.closesCycle(ctx, tx, tenant, t.id, from, to)
		if err != nil {
			return Edge{}, err
		}
		if cycle != nil {
			return Edge{}, cycleError(t.Name, cycle, "edge type %q is acyclic and this edge would close a cycle")
		}
	}
	e := Edge{Type: t.Name, From: in.From, To: in.To, Props: props, Version: 1}
	err = tx.QueryRow(ctx, `INSERT INTO graph_edges (tenant_id, type_id, from_node, to_node, uniq, props) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (from_node, type_id, to_node) WHERE uniq AND deleted_at IS NULL DO NOTHING
		RETURNING id, created_at`, tenant, t.id, from, to, t.Unique, string(props)).Scan(&e.ID, &e.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		var existing int64
		if err := tx.QueryRow(ctx, `SELECT id FROM graph_edges WHERE from_node = $1 AND type_id = $2 AND to_node = $3 AND uniq AND deleted_at IS NULL`,
			from, t.id, to).Scan(&existing); err != nil {
			return Edge{}, err
		}
		return Edge{}, problem.Conflict("edge_exists", "edge type %q is unique and edge %d already goes from %s to %s", t.Name, existing, in.From, in.To).
			WithExtension("existing_edge", existing)
	}
	if err != nil {
		return Edge{}, err
	}
	e.UpdatedAt = e.CreatedAt
	b := &pgx.Batch{}
	b.Queue(`INSERT INTO graph_edge_versions (edge_id, version, op, at, actor) VALUES ($1, 1, 'create', $2, $3)`, e.ID, e.CreatedAt, audit.ActorFrom(ctx).Name)
	s.record(ctx, b, tenant, e, "create")
	return e, tx.SendBatch(ctx, b).Close()
}

// record queues an edge write's feed entry and audit row.
func (s *Store) record(ctx context.Context, b *pgx.Batch, tenant string, e Edge, op string) {
	_ = feed.Append(ctx, db.Batch{B: b}, feed.Entry{Tenant: tenant, Kind: "edge", Scope: e.Type, Key: strconv.FormatInt(e.ID, 10), Op: op, Version: e.Version})
	_ = audit.Record(ctx, db.Batch{B: b}, audit.Entry{Tenant: tenant, Action: "graph.edge." + op, ResourceType: "graph", ResourceID: e.Type,
		Details: map[string]any{"id": e.ID, "from": e.From.String(), "to": e.To.String(), "version": e.Version}})
}

// docKey is a document by collection id and document id.
type docKey struct{ coll, id string }

// resolve authorizes reading the collections of refs and returns their keys.
func (s *Store) resolve(ctx context.Context, tenant string, refs []NodeRef, fields []string) ([]docKey, error) {
	keys := make([]docKey, len(refs))
	for i, r := range refs {
		if !doc.ValidRef(r.Collection, r.ID) {
			return nil, problem.Invalid("invalid_node", "a node is {\"collection\": …, \"id\": …}").WithField(fields[i], "invalid")
		}
		coll, err := s.docs.CollectionID(ctx, tenant, r.Collection, auth.PermRead)
		if err != nil {
			return nil, err
		}
		keys[i] = docKey{coll, r.ID}
	}
	return keys, nil
}

// attach returns the graph node of each document, creating nodes as needed. It locks the
// documents (FOR SHARE) until the transaction ends, so a concurrent deletion waits, then
// sees the new edges and removes them with the document; a document that is missing or
// deleted is a missingDoc error.
func attach(ctx context.Context, tx pgx.Tx, tenant string, keys []docKey) (map[docKey]int64, error) {
	live, err := lockLive(ctx, tx, keys)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if !live[k] {
			return nil, missingDoc{k}
		}
	}
	return nodesOf(ctx, tx, tenant, keys)
}

// lockLive locks the documents of keys that exist and are not deleted, FOR SHARE, and
// returns them.
func lockLive(ctx context.Context, tx pgx.Tx, keys []docKey) (map[docKey]bool, error) {
	live := map[docKey]bool{}
	for coll, ids := range byCollection(keys) {
		rows, err := tx.Query(ctx, `SELECT id FROM documents WHERE collection_id = $1 AND id = ANY($2::text[]) AND body IS NOT NULL FOR SHARE`,
			coll, ids)
		if err != nil {
			return nil, err
		}
		var id string
		if _, err := pgx.ForEachRow(rows, []any{&id}, func() error {
			live[docKey{coll, id}] = true
			return nil
		}); err != nil {
			return nil, err
		}
	}
	return live, nil
}

// byCollection groups the distinct document ids of keys by collection.
func byCollection(keys []docKey) map[string][]string {
	seen := make(map[docKey]bool, len(keys))
	out := map[string][]string{}
	for _, k := range keys {
		if !seen[k] {
			seen[k] = true
			out[k.coll] = append(out[k.coll], k.id)
		}
	}
	return out
}

// nodesOf returns the nodes of documents, inserting the missing ones: it reads the nodes
// that exist, inserts the others, and reads again what another transaction inserted
// meanwhile (invisible to the insert's snapshot, visible to the next statement's).
func nodesOf(ctx context.Context, tx pgx.Tx, tenant string, keys []docKey) (map[docKey]int64, error) {
	nodes := map[docKey]int64{}
	for coll, ids := range byCollection(keys) {
		for round := 0; len(ids) > 0; round++ {
			if round == 6 {
				return nil, problem.Conflict("transaction_conflict", "the documents' graph nodes changed concurrently; retry")
			}
			sql := `SELECT node, doc_id FROM graph_nodes WHERE collection_id = $2 AND doc_id = ANY($3::text[]) AND $1::uuid IS NOT NULL`
			if round%2 == 1 {
				sql = `INSERT INTO graph_nodes (tenant_id, collection_id, doc_id) SELECT $1, $2, unnest($3::text[])
					ON CONFLICT (collection_id, doc_id) DO NOTHING RETURNING node, doc_id`
			}
			rows, err := tx.Query(ctx, sql, tenant, coll, ids)
			if err != nil {
				return nil, err
			}
			var n int64
			var id string
			if _, err := pgx.ForEachRow(rows, []any{&n, &id}, func() error {
				nodes[docKey{coll, id}] = n
				return nil
			}); err != nil {
				return nil, err
			}
			var missing []string
			for _, id := range ids {
				if _, ok := nodes[docKey{coll, id}]; !ok {
					missing = append(missing, id)
				}
			}
			ids = missing
		}
	}
	return nodes, nil
}

// missingDoc is a document that attach found missing or deleted; callers name it.
type missingDoc struct{ k docKey }

func (m missingDoc) Error() string { return "document " + m.k.id + " is missing or deleted" }

// edgeRow is an edge as stored.
type edgeRow struct {
	Edge
	typeID    int32
	from, to  int64
	deletedAt *time.Time
}

const edgeColumns = `e.id, e.type_id, e.from_node, e.to_node, e.props, e.version, e.created_at, e.updated_at, e.deleted_at`

func scanEdge(r pgx.Row, e *edgeRow) error {
	var props []byte
	err := r.Scan(&e.ID, &e.typeID, &e.from, &e.to, &props, &e.Version, &e.CreatedAt, &e.UpdatedAt, &e.deletedAt)
	e.Props = props
	e.Deleted = e.deletedAt != nil
	return err
}

// load reads an edge of the tenant (locking it in tx for a write) and names it; it
// authorizes perm on its type and read on its ends' collections.
func (s *Store) load(ctx context.Context, q querier, tenant string, id int64, perm auth.Permission, lock bool) (*edgeRow, error) {
	sql := `SELECT ` + edgeColumns + ` FROM graph_edges e WHERE e.id = $1 AND e.tenant_id = $2`
	if lock {
		sql += ` FOR UPDATE`
	}
	e := &edgeRow{}
	err := scanEdge(q.QueryRow(ctx, sql, id, tenant), e)
	if errors.Is(err, pgx.ErrNoRows) {
		if _, err := s.auth.Access(ctx, tenant); err != nil {
			return nil, err
		}
		return nil, edgeNotFound(id)
	}
	if err != nil {
		return nil, err
	}
	ts, err := s.typeSetOf(ctx, tenant)
	if err != nil {
		return nil, err
	}
	e.Type = ts.name(e.typeID)
	if _, err := s.auth.Authorize(ctx, tenant, "graph:"+e.Type, perm); err != nil {
		return nil, err
	}
	refs, err := s.refs(ctx, q, tenant, []int64{e.from, e.to})
	if err != nil {
		return nil, err
	}
	e.From, e.To = refs[e.from], refs[e.to]
	for _, r := range []NodeRef{e.From, e.To} {
		if _, err := s.auth.Authorize(ctx, tenant, "collection:"+r.Collection, auth.PermRead); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// EdgeGet returns an edge's current version (read on graph:<type> and on its ends'
// collections). A deleted edge answers 404 edge_deleted; its history stays readable.
func (s *Store) EdgeGet(ctx context.Context, tenant string, id int64) (Edge, error) {
	e, err := s.load(ctx, s.pool, tenant, id, auth.PermRead, false)
	if err != nil {
		return Edge{}, db.Translate(err, "edge")
	}
	if e.Deleted {
		return Edge{}, problem.NotFound("edge_deleted", "edge %d was deleted at version %d", id, e.Version).
			WithExtension("current_version", e.Version)
	}
	return e.Edge, nil
}

// EdgeUpdate replaces an edge's properties, or merges a patch into them (RFC 7396) with
// merge set (write on graph:<type>). Ends and type never change: delete and create instead.
func (s *Store) EdgeUpdate(ctx context.Context, tenant string, id int64, props json.RawMessage, merge bool, o *WriteOptions) (Edge, error) {
	if len(bytes.TrimSpace(props)) == 0 {
		// A lost body must not wipe the properties: clearing them is an explicit {}.
		return Edge{}, problem.Invalid("empty_body", "send the properties as a JSON object ({} clears them)").WithField("body", "empty")
	}
	return s.write(ctx, tenant, id, "update", o, func(cur []byte) ([]byte, error) {
		next := props
		if merge {
			if !json.Valid(props) {
				return nil, problem.Invalid("invalid_patch", "the patch is not valid JSON")
			}
			var err error
			if next, err = jsonx.MergePatch(cur, props); err != nil {
				return nil, err
			}
		}
		return s.checkProps(next, "body")
	})
}

// EdgeDelete deletes an edge, keeping its history (write on graph:<type>). Deleting a
// deleted edge changes nothing.
func (s *Store) EdgeDelete(ctx context.Context, tenant string, id int64, o *WriteOptions) (Edge, error) {
	return s.write(ctx, tenant, id, "delete", o, nil)
}

// write changes an edge: locks it, checks If-Match, computes the new properties (next nil:
// a deletion), keeps the superseded version as a delta or snapshot, and writes the new
// version with its feed entry and audit row.
func (s *Store) write(ctx context.Context, tenant string, id int64, op string, o *WriteOptions, next func([]byte) ([]byte, error)) (Edge, error) {
	var out Edge
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		e, err := s.load(ctx, tx, tenant, id, auth.PermWrite, true)
		if err != nil {
			return err
		}
		if o != nil && o.IfMatch != 0 && o.IfMatch != e.Version {
			return problem.PreconditionFailed("version_mismatch", "edge %d is at version %d, not %d", id, e.Version, o.IfMatch).
				WithExtension("current_version", e.Version).WithHeader("ETag", etag(e.Version))
		}
		if e.Deleted {
			if next == nil {
				out = e.Edge
				return nil
			}
			return problem.NotFound("edge_deleted", "edge %d is deleted", id).WithExtension("current_version", e.Version)
		}
		var props []byte
		if next != nil {
			if props, err = next(e.Props); err != nil {
				return err
			}
		}
		snapshot, delta, err := history.Keep(e.Version, e.Props, props, s.cfg.SnapshotEvery)
		if err != nil {
			return err
		}
		version := e.Version + 1
		b := &pgx.Batch{}
		if next == nil {
			b.Queue(`UPDATE graph_edges SET version = $2, deleted_at = now(), updated_at = now() WHERE id = $1 RETURNING updated_at`, id, version)
		} else {
			b.Queue(`UPDATE graph_edges SET version = $2, props = $3, updated_at = now() WHERE id = $1 RETURNING updated_at`, id, version, string(props))
			e.Props = props
		}
		b.Queue(`UPDATE graph_edge_versions SET snapshot = $3, delta = $4 WHERE edge_id = $1 AND version = $2`, id, e.Version, snapshot, delta)
		b.Queue(`INSERT INTO graph_edge_versions (edge_id, version, op, at, actor) VALUES ($1, $2, $3, now(), $4)`, id, version, op, audit.ActorFrom(ctx).Name)
		e.Version, e.Deleted = version, next == nil
		s.record(ctx, b, tenant, e.Edge, op)
		br := tx.SendBatch(ctx, b)
		err = br.QueryRow().Scan(&e.UpdatedAt)
		if cerr := br.Close(); err == nil {
			err = cerr
		}
		out = e.Edge
		return err
	})
	if err != nil {
		return Edge{}, db.Translate(err, "edge")
	}
	s.feed.Kick()
	return out, nil
}

// EdgeVersion describes one write of an edge.
type EdgeVersion struct {
	Version int64     `json:"version"`
	Op      string    `json:"op" enum:"create,update,delete,import"`
	At      time.Time `json:"at"`
	Actor   string    `json:"actor,omitempty"`
}

// EdgeVersions lists an edge's versions, newest first (read).
func (s *Store) EdgeVersions(ctx context.Context, tenant string, id int64) ([]EdgeVersion, error) {
	if _, err := s.load(ctx, s.pool, tenant, id, auth.PermRead, false); err != nil {
		return nil, db.Translate(err, "edge")
	}
	rows, err := s.pool.Query(ctx, `SELECT version, op, at, actor FROM graph_edge_versions WHERE edge_id = $1 ORDER BY version DESC LIMIT 1000`, id)
	if err != nil {
		return nil, db.Translate(err, "edge versions")
	}
	vs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[EdgeVersion])
	return vs, db.Translate(err, "edge versions")
}

// EdgeGetAt returns an edge as it was at a version, or at a time (read). A version that is
// the deletion has Deleted set.
func (s *Store) EdgeGetAt(ctx context.Context, tenant string, id int64, version int64, asOf time.Time) (Edge, error) {
	e, err := s.load(ctx, s.pool, tenant, id, auth.PermRead, false)
	if err != nil {
		return Edge{}, db.Translate(err, "edge")
	}
	out, err := s.at(ctx, e.Edge, version, asOf)
	return out, db.Translate(err, "edge")
}

// at rebuilds edge e (as it is now) as it was at a version, or at a time when version is 0.
func (s *Store) at(ctx context.Context, e Edge, version int64, asOf time.Time) (Edge, error) {
	if version == 0 {
		err := s.pool.QueryRow(ctx, `SELECT version FROM graph_edge_versions WHERE edge_id = $1 AND at <= $2 ORDER BY version DESC LIMIT 1`,
			e.ID, asOf).Scan(&version)
		if errors.Is(err, pgx.ErrNoRows) {
			return Edge{}, problem.NotFound("edge_not_found", "edge %d did not exist at %s", e.ID, asOf.UTC().Format(time.RFC3339Nano))
		}
		if err != nil {
			return Edge{}, err
		}
	}
	if version == e.Version {
		return e, nil
	}
	rows, err := s.pool.Query(ctx, `SELECT version, op, at, snapshot, delta FROM graph_edge_versions WHERE edge_id = $1 AND version >= $2
		ORDER BY version LIMIT $3`, e.ID, version, 4*s.cfg.SnapshotEvery+2)
	if err != nil {
		return Edge{}, err
	}
	var steps []history.Step
	var first EdgeVersion
	var v EdgeVersion
	var st history.Step
	if _, err := pgx.ForEachRow(rows, []any{&v.Version, &v.Op, &v.At, &st.Snapshot, &st.Delta}, func() error {
		if len(steps) == 0 {
			first = v
		}
		steps = append(steps, st)
		return nil
	}); err != nil {
		return Edge{}, err
	}
	if len(steps) == 0 || first.Version != version {
		return Edge{}, problem.NotFound("version_not_found", "edge %d has no version %d", e.ID, version)
	}
	props, err := history.Rebuild(steps, func() ([]byte, error) { return e.Props, nil })
	if err != nil {
		return Edge{}, err
	}
	e.Version, e.UpdatedAt, e.Props, e.Deleted = version, first.At, props, first.Op == "delete"
	return e, nil
}

// etag is the ETag of a version: the version number, quoted.
func etag(v int64) string { return `"` + strconv.FormatInt(v, 10) + `"` }
