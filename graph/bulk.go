package graph

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/doc"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/ndjson"
	"github.com/stratadb/strata/problem"
)

// ImportOptions control an edge import.
type ImportOptions struct {
	// Progress, when set, is called after each batch with the lines read and imported.
	Progress func(lines, imported int64)
}

const importBatch = 5000

// EdgeImport creates edges from NDJSON lines, each {"type": …, "from": …, "to": …,
// "props": {…}} with the ends as {"collection": …, "id": …} or "collection/id", through
// COPY in batches of 5000, in one transaction: one bad line (a missing document, an
// unknown type, a duplicate of a unique type, a cycle in an acyclic type) imports
// nothing, and the report lists every bad line. Each edge gets version 1 (op "import");
// the feed gets one entry per batch and type, the audit log one row.
func (s *Store) EdgeImport(ctx context.Context, tenant string, r io.Reader, o ImportOptions) (doc.ImportReport, error) {
	if _, err := s.auth.Access(ctx, tenant); err != nil {
		return doc.ImportReport{}, err
	}
	started := time.Now()
	imp := &edgeImporter{s: s, tenant: tenant, o: o, r: ndjson.NewReader(r, s.cfg.MaxPropsBytes+4<<10),
		types: map[string]*EdgeType{}, colls: map[string]string{}, typeErrs: map[string]error{}, collErrs: map[string]error{},
		acyclic: map[int32]map[[2]int64]int64{}}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return imp.run(ctx, tx) })
	if errors.Is(err, errBadLines) {
		imp.rep.Imported, err = 0, nil
	}
	imp.rep.Elapsed = time.Since(started)
	if err != nil {
		return imp.rep, db.Translate(err, "import")
	}
	if imp.rep.Imported > 0 {
		s.feed.Kick()
	}
	return imp.rep, nil
}

var errBadLines = errors.New("bad lines")

type edgeImporter struct {
	s      *Store
	tenant string
	o      ImportOptions
	r      *ndjson.Reader
	rep    doc.ImportReport
	now    time.Time

	tx       pgx.Tx
	types    map[string]*EdgeType // as locked in tx (see lockTypeRow)
	typeErrs map[string]error
	colls    map[string]string // collection name → id
	collErrs map[string]error
	// acyclic holds, per acyclic type imported into, the line of each new edge (from, to).
	acyclic map[int32]map[[2]int64]int64
}

type importLine struct {
	line     int64
	typ      *EdgeType
	from, to docKey
	props    json.RawMessage
}

func (imp *edgeImporter) run(ctx context.Context, tx pgx.Tx) error {
	imp.tx = tx
	if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&imp.now); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TEMP TABLE graph_import (line bigint, type_id integer, from_node bigint, to_node bigint,
		uniq boolean, props jsonb) ON COMMIT DROP`); err != nil {
		return err
	}
	for !imp.r.EOF {
		batch, err := imp.next(ctx)
		if err != nil {
			return err
		}
		if len(batch) > 0 {
			if err := imp.write(ctx, tx, batch); err != nil {
				return err
			}
		}
		if imp.o.Progress != nil {
			imp.o.Progress(imp.rep.Lines, imp.rep.Imported)
		}
	}
	if err := imp.checkCycles(ctx, tx); err != nil {
		return err
	}
	if imp.rep.Failed > 0 {
		return errBadLines
	}
	return audit.Record(ctx, tx, audit.Entry{Tenant: imp.tenant, Action: "graph.edge.import", ResourceType: "graph",
		Details: map[string]any{"imported": imp.rep.Imported}})
}

// next reads and checks up to importBatch lines.
func (imp *edgeImporter) next(ctx context.Context) ([]importLine, error) {
	b := ndjson.Batcher[importLine]{R: imp.r, Report: &imp.rep, Code: "invalid_edge", Fatal: fatal,
		Parse:   func(raw []byte) (importLine, error) { return imp.parse(ctx, raw) },
		TooLong: func() error { return problem.TooLarge("props_too_large", "the line is longer than edges allow") }}
	return b.Next(importBatch)
}

func (imp *edgeImporter) parse(ctx context.Context, raw []byte) (importLine, error) {
	var in struct {
		Type  string          `json:"type"`
		From  json.RawMessage `json:"from"`
		To    json.RawMessage `json:"to"`
		Props json.RawMessage `json:"props"`
	}
	l := importLine{line: imp.r.Line}
	if err := json.Unmarshal(raw, &in); err != nil {
		return l, problem.Invalid("invalid_edge", "a line is {\"type\": …, \"from\": …, \"to\": …, \"props\": {…}}: %v", err)
	}
	t, err := imp.typ(ctx, in.Type)
	if err != nil {
		return l, err
	}
	l.typ = t
	for i, raw := range []json.RawMessage{in.From, in.To} {
		ref, err := parseEnd(raw, []string{"from", "to"}[i])
		if err != nil {
			return l, err
		}
		coll, err := imp.coll(ctx, ref.Collection)
		if err != nil {
			return l, err
		}
		if i == 0 {
			l.from = docKey{coll, ref.ID}
		} else {
			l.to = docKey{coll, ref.ID}
		}
	}
	l.props, err = imp.s.checkProps(in.Props, "props")
	return l, err
}

// fatal tells an error that ends the import (a denial, a failing database) from one that
// fails a line.
func fatal(err error) bool {
	p, ok := problem.As(err)
	return !ok || p.Status == 401 || p.Status == 403 || p.Status >= 500 || p.Code == "tenant_not_found"
}

// parseEnd reads an end of an edge: {"collection": …, "id": …} or "collection/id".
func parseEnd(raw json.RawMessage, field string) (NodeRef, error) {
	var ref NodeRef
	var str string
	switch {
	case len(raw) == 0:
		return ref, problem.Invalid("invalid_node", "%s is missing", field).WithField(field, "missing")
	case json.Unmarshal(raw, &str) == nil:
		return ParseNodeRef(str, field)
	case json.Unmarshal(raw, &ref) == nil && doc.ValidRef(ref.Collection, ref.ID):
		return ref, nil
	}
	return ref, problem.Invalid("invalid_node", "%s is {\"collection\": …, \"id\": …} or \"collection/id\"", field).WithField(field, "invalid")
}

// typ resolves (and authorizes, once per import) an edge type.
func (imp *edgeImporter) typ(ctx context.Context, name string) (*EdgeType, error) {
	if t := imp.types[name]; t != nil {
		return t, nil
	}
	if err := imp.typeErrs[name]; err != nil {
		return nil, err
	}
	t, err := imp.s.writableType(ctx, imp.tenant, name, "type")
	if err != nil {
		if fatal(err) {
			return nil, err
		}
		imp.typeErrs[name] = err
		return nil, err
	}
	if t, err = lockTypeRow(ctx, imp.tx, t); err != nil {
		return nil, err
	}
	imp.types[name] = t
	return t, nil
}

// coll resolves (and authorizes, once per import) a collection.
func (imp *edgeImporter) coll(ctx context.Context, name string) (string, error) {
	if id, ok := imp.colls[name]; ok {
		return id, nil
	}
	if err := imp.collErrs[name]; err != nil {
		return "", err
	}
	id, err := imp.s.docs.CollectionID(ctx, imp.tenant, name, auth.PermRead)
	if err != nil {
		if fatal(err) {
			return "", err
		}
		imp.collErrs[name] = err
		return "", err
	}
	imp.colls[name] = id
	return id, nil
}

// write checks the batch's documents and, while no line has failed, copies its edges in.
func (imp *edgeImporter) write(ctx context.Context, tx pgx.Tx, batch []importLine) error {
	keys := make([]docKey, 0, 2*len(batch))
	for _, l := range batch {
		keys = append(keys, l.from, l.to)
	}
	live, err := lockLive(ctx, tx, keys)
	if err != nil {
		return err
	}
	good := batch[:0]
	for _, l := range batch {
		switch {
		case !live[l.from]:
			imp.rep.Fail(l.line, "", problem.NotFound("document_not_found", "document %s (from) does not exist (or is deleted)", l.from.id))
		case !live[l.to]:
			imp.rep.Fail(l.line, "", problem.NotFound("document_not_found", "document %s (to) does not exist (or is deleted)", l.to.id))
		default:
			good = append(good, l)
		}
	}
	// After a bad line nothing will commit, but the good lines are still written (and
	// rolled back at the end) so that duplicates and cycles further on are reported too.
	nodes, err := nodesOf(ctx, tx, imp.tenant, keys)
	if err != nil {
		return err
	}
	var plain, unique []importLine
	for _, l := range good {
		if l.typ.Acyclic {
			if imp.acyclic[l.typ.id] == nil {
				if err := lockType(ctx, tx, l.typ.id); err != nil {
					return err
				}
				imp.acyclic[l.typ.id] = map[[2]int64]int64{}
			}
			imp.acyclic[l.typ.id][[2]int64{nodes[l.from], nodes[l.to]}] = l.line
		}
		if l.typ.Unique {
			unique = append(unique, l)
		} else {
			plain = append(plain, l)
		}
	}
	keysByType := map[int32][]string{}
	if err := imp.copyPlain(ctx, tx, plain, nodes, keysByType); err != nil {
		return err
	}
	if err := imp.insertUnique(ctx, tx, unique, nodes, keysByType); err != nil {
		return err
	}
	for typ, ids := range keysByType {
		if err := feed.AppendMany(ctx, tx, imp.tenant, "edge", nameOf(imp.types, typ), "import", ids, 1); err != nil {
			return err
		}
	}
	imp.rep.Imported += int64(len(good))
	return nil
}

// copyPlain writes edges of types that are not unique straight into the tables with COPY,
// under ids reserved from the edges' sequence.
func (imp *edgeImporter) copyPlain(ctx context.Context, tx pgx.Tx, lines []importLine, nodes map[docKey]int64, keysByType map[int32][]string) error {
	if len(lines) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, `SELECT nextval(seq) FROM (SELECT pg_get_serial_sequence('graph_edges', 'id')::regclass AS seq) s,
		generate_series(1, $1)`, len(lines))
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	actor := audit.ActorFrom(ctx).Name
	edges := make([][]any, len(lines))
	versions := make([][]any, len(lines))
	for i, l := range lines {
		edges[i] = []any{ids[i], imp.tenant, l.typ.id, nodes[l.from], nodes[l.to], false, string(l.props), imp.now, imp.now}
		versions[i] = []any{ids[i], int64(1), "import", imp.now, actor}
		keysByType[l.typ.id] = append(keysByType[l.typ.id], strconv.FormatInt(ids[i], 10))
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"strata", "graph_edges"},
		[]string{"id", "tenant_id", "type_id", "from_node", "to_node", "uniq", "props", "created_at", "updated_at"}, pgx.CopyFromRows(edges)); err != nil {
		return err
	}
	_, err = tx.CopyFrom(ctx, pgx.Identifier{"strata", "graph_edge_versions"}, []string{"edge_id", "version", "op", "at", "actor"},
		pgx.CopyFromRows(versions))
	return err
}

// insertUnique writes edges of unique types through a staging table and INSERT … ON
// CONFLICT DO NOTHING, and fails the lines whose edge already exists (or came earlier in
// the import).
func (imp *edgeImporter) insertUnique(ctx context.Context, tx pgx.Tx, lines []importLine, nodes map[docKey]int64, keysByType map[int32][]string) error {
	if len(lines) == 0 {
		return nil
	}
	rows := make([][]any, len(lines))
	for i, l := range lines {
		rows[i] = []any{l.line, l.typ.id, nodes[l.from], nodes[l.to], true, string(l.props)}
	}
	if _, err := tx.Exec(ctx, `TRUNCATE graph_import`); err != nil {
		return err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"graph_import"}, []string{"line", "type_id", "from_node", "to_node", "uniq", "props"},
		pgx.CopyFromRows(rows)); err != nil {
		return err
	}
	res, err := tx.Query(ctx, `WITH ins AS (INSERT INTO graph_edges (tenant_id, type_id, from_node, to_node, uniq, props, created_at, updated_at)
			SELECT $1, type_id, from_node, to_node, uniq, props, $2, $2 FROM graph_import ORDER BY line
			ON CONFLICT (from_node, type_id, to_node) WHERE uniq AND deleted_at IS NULL DO NOTHING
			RETURNING id, type_id, from_node, to_node),
		v AS (INSERT INTO graph_edge_versions (edge_id, version, op, at, actor) SELECT id, 1, 'import', $2, $3 FROM ins)
		SELECT id, type_id, from_node, to_node FROM ins`, imp.tenant, imp.now, audit.ActorFrom(ctx).Name)
	if err != nil {
		return err
	}
	inserted := map[[3]int64]bool{}
	var id, from, to int64
	var typ int32
	if _, err := pgx.ForEachRow(res, []any{&id, &typ, &from, &to}, func() error {
		keysByType[typ] = append(keysByType[typ], strconv.FormatInt(id, 10))
		inserted[[3]int64{int64(typ), from, to}] = true
		return nil
	}); err != nil {
		return err
	}
	first := map[[3]int64]bool{}
	for _, l := range lines {
		k := [3]int64{int64(l.typ.id), nodes[l.from], nodes[l.to]}
		if inserted[k] && !first[k] {
			first[k] = true
			continue
		}
		imp.rep.Fail(l.line, "", problem.Conflict("edge_exists", "edge type %q is unique and an edge of it already goes from %s to %s",
			l.typ.Name, l.from.id, l.to.id))
	}
	return nil
}

func nameOf(types map[string]*EdgeType, id int32) string {
	for name, t := range types {
		if t.id == id {
			return name
		}
	}
	return ""
}

// checkCycles looks for a cycle in each acyclic type the import added edges to (the types
// are locked, so the check sees every edge) and fails a line whose edge is on it.
func (imp *edgeImporter) checkCycles(ctx context.Context, tx pgx.Tx) error {
	for typ, lines := range imp.acyclic {
		cycle, named, err := imp.s.anyCycle(ctx, tx, imp.tenant, typ)
		if err != nil {
			return err
		}
		if cycle == nil {
			continue
		}
		line := int64(0)
		for i := 0; i+1 < len(cycle) && line == 0; i++ {
			line = lines[[2]int64{cycle[i], cycle[i+1]}]
		}
		imp.rep.Fail(line, "", cycleError(nameOf(imp.types, typ), named, "edge type %q is acyclic and the import closes a cycle"))
	}
	return nil
}
