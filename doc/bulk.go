package doc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/feed"
	"github.com/stratadb/strata/filter"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/ndjson"
	"github.com/stratadb/strata/problem"
)

// ImportOptions control an import.
type ImportOptions struct {
	// Envelopes reads lines as exported ({"id": …, "data": {…}}); otherwise each line is a
	// document and gets a server-made id.
	Envelopes bool
	// Partial imports the good lines and reports the bad ones; otherwise (the default) one
	// bad line imports nothing.
	Partial bool
	// Progress, when set, is called after each batch with the lines read and imported.
	Progress func(lines, imported int64)
}

// ImportReport says what an import did.
type ImportReport = ndjson.Report

// LineError is a line that could not be imported.
type LineError = ndjson.LineError

const importBatch = 2000

type pendingDoc struct {
	line int64
	id   string
	body []byte
}

// DocImport reads NDJSON documents from r into a collection (write on the collection),
// through COPY, in batches of 2000 lines. Each document gets version 1 (op "import"), a
// feed entry; the import gets one audit entry. All-or-nothing by default: the report then
// lists the bad lines and nothing is written.
func (s *Store) DocImport(ctx context.Context, tenant, coll string, r io.Reader, o ImportOptions) (ImportReport, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermWrite)
	if err != nil {
		return ImportReport{}, err
	}
	start := time.Now()
	imp := &importer{s: s, c: c, o: o, r: ndjson.NewReader(r, c.maxBytes+64<<10)}
	if o.Partial {
		err = imp.partial(ctx)
	} else {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return imp.atomic(ctx, tx) })
		if errors.Is(err, errBadLines) {
			imp.rep.Imported = 0
			err = nil
		}
	}
	imp.rep.Elapsed = time.Since(start)
	if err == nil {
		s.feed.Kick()
	}
	return imp.rep, err
}

var errBadLines = errors.New("bad lines")

type importer struct {
	s   *Store
	c   *collection
	o   ImportOptions
	r   *ndjson.Reader // lines of at most the size limit, plus room for an envelope
	rep ImportReport
	now time.Time
}

// next reads up to importBatch documents, reporting bad lines.
func (imp *importer) next() ([]pendingDoc, error) {
	b := ndjson.Batcher[pendingDoc]{R: imp.r, Report: &imp.rep, Code: "invalid_document", Parse: imp.parse,
		TooLong: func() error {
			return problem.TooLarge("document_too_large", "the line is larger than collection %q allows (%d bytes)", imp.c.name, imp.c.maxBytes)
		}}
	return b.Next(importBatch)
}

var envelopeRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.:@~=+-]{0,255}$`)

func (imp *importer) parse(raw []byte) (pendingDoc, error) {
	d := pendingDoc{line: imp.r.Line, body: raw}
	if imp.o.Envelopes {
		var env struct {
			ID   string          `json:"id"`
			Data json.RawMessage `json:"data"`
		}
		if err := json.Unmarshal(raw, &env); err != nil || len(env.Data) == 0 {
			return d, problem.Invalid("invalid_envelope", "an export line is {\"id\": …, \"data\": {…}}")
		}
		d.id, d.body = env.ID, env.Data
		if d.id != "" && !envelopeRE.MatchString(d.id) {
			return d, checkID(d.id)
		}
	}
	if d.id == "" {
		d.id = uuid.Must(uuid.NewV7()).String()
	}
	return d, imp.c.prepare(d.body)
}

func (imp *importer) copyIn(ctx context.Context, tx pgx.Tx, batch []pendingDoc) error {
	if imp.now.IsZero() {
		if err := tx.QueryRow(ctx, `SELECT now()`).Scan(&imp.now); err != nil {
			return err
		}
	}
	actor := audit.ActorFrom(ctx).Name
	// Parsed once: pgx encodes a uuid given as a string by failing, building an error and
	// trying again through a parse, which cost more than the rest of the row.
	collID, tenantID := copyUUID(imp.c.id), copyUUID(imp.c.tenant)
	docs := make([][]any, len(batch))
	versions := make([][]any, len(batch))
	ids := make([]string, len(batch))
	for i, d := range batch {
		docs[i] = []any{collID, d.id, tenantID, int64(1), d.body, imp.now, imp.now}
		versions[i] = []any{collID, d.id, int64(1), "import", imp.now, actor}
		ids[i] = d.id
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"strata", "documents"},
		[]string{"collection_id", "id", "tenant_id", "version", "body", "created_at", "updated_at"}, pgx.CopyFromRows(docs)); err != nil {
		return importErr(err)
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"strata", "document_versions"},
		[]string{"collection_id", "id", "version", "op", "at", "actor"}, pgx.CopyFromRows(versions)); err != nil {
		return importErr(err)
	}
	bodies := make([][]byte, len(batch))
	for i, d := range batch {
		bodies[i] = d.body
	}
	if err := imp.s.runWriteHooks(ctx, tx, Written{Tenant: imp.c.tenant, CollectionID: imp.c.id, Collection: imp.c.name,
		IDs: ids, Bodies: bodies, Version: 1}); err != nil {
		return err
	}
	// One feed entry for the batch: readers see one change per document.
	return feed.AppendMany(ctx, tx, imp.c.tenant, "doc", imp.c.name, "import", ids, 1)
}

// copyUUID is id as COPY takes it (ids of collections and tenants are well-formed).
func copyUUID(id string) pgtype.UUID {
	return pgtype.UUID{Bytes: uuid.MustParse(id), Valid: true}
}

var dupKeyRE = regexp.MustCompile(`Key \(collection_id, id\)=\([^,]+, (.*)\) already exists`)

func importErr(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" {
		id := ""
		if m := dupKeyRE.FindStringSubmatch(pe.Detail); m != nil {
			id = m[1]
		}
		return problem.Conflict("document_exists", "a document with id %q already exists (or appears twice in the import)", id)
	}
	return err
}

// atomic imports everything in tx, or nothing when a line is bad.
func (imp *importer) atomic(ctx context.Context, tx pgx.Tx) error {
	for !imp.r.EOF {
		batch, err := imp.next()
		if err != nil {
			return err
		}
		if imp.rep.Failed == 0 && len(batch) > 0 {
			if err := imp.copyIn(ctx, tx, batch); err != nil {
				return err
			}
			imp.rep.Imported += int64(len(batch))
		}
		if imp.o.Progress != nil {
			imp.o.Progress(imp.rep.Lines, imp.rep.Imported)
		}
	}
	if imp.rep.Failed > 0 {
		return errBadLines
	}
	return audit.Record(ctx, tx, audit.Entry{Tenant: imp.c.tenant, Action: "doc.import", ResourceType: "collection", ResourceID: imp.c.name,
		Details: map[string]any{"imported": imp.rep.Imported, "mode": "atomic"}})
}

// partial commits each batch's good lines; ids that already exist fail their lines.
func (imp *importer) partial(ctx context.Context) error {
	for !imp.r.EOF {
		batch, err := imp.next()
		if err != nil {
			return err
		}
		if len(batch) > 0 {
			err := pgx.BeginFunc(ctx, imp.s.pool, func(tx pgx.Tx) error {
				ids := make([]string, len(batch))
				for i, d := range batch {
					ids[i] = d.id
				}
				rows, err := tx.Query(ctx, `SELECT id FROM documents WHERE collection_id = $1 AND id = ANY($2)`, imp.c.id, ids)
				if err != nil {
					return err
				}
				existing, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return err
				}
				taken := map[string]bool{}
				for _, id := range existing {
					taken[id] = true
				}
				var good []pendingDoc
				for _, d := range batch {
					if taken[d.id] {
						imp.rep.Fail(d.line, "invalid_document", problem.Conflict("document_exists", "a document with id %q already exists (or appears twice in the import)", d.id))
						continue
					}
					taken[d.id] = true
					good = append(good, d)
				}
				if len(good) == 0 {
					return nil
				}
				imp.now = time.Time{}
				if err := imp.copyIn(ctx, tx, good); err != nil {
					return err
				}
				imp.rep.Imported += int64(len(good))
				return audit.Record(ctx, tx, audit.Entry{Tenant: imp.c.tenant, Action: "doc.import", ResourceType: "collection", ResourceID: imp.c.name,
					Details: map[string]any{"imported": len(good), "mode": "partial"}})
			})
			if err != nil {
				return db.Translate(err, "import")
			}
		}
		if imp.o.Progress != nil {
			imp.o.Progress(imp.rep.Lines, imp.rep.Imported)
		}
	}
	return nil
}

// ExportOptions choose what to export.
type ExportOptions struct {
	// Filter selects documents; "" exports all.
	Filter string
	// AsOf, when set, exports the collection as it was at that time.
	AsOf time.Time
}

// DocExport writes a collection's documents to w as NDJSON envelopes — {"id", "version",
// "created_at", "updated_at", "data"}, one per line, by id — streaming, never holding the
// collection in memory (read on the collection). It returns the number written.
func (s *Store) DocExport(ctx context.Context, tenant, coll string, w io.Writer, o ExportOptions) (int64, error) {
	c, err := s.authorized(ctx, tenant, coll, auth.PermRead)
	if err != nil {
		return 0, err
	}
	expr, err := ParseFilter(o.Filter)
	if err != nil {
		return 0, err
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	var n int64
	write := func(d Document) error {
		n++
		return enc.Encode(exportLine{ID: d.ID, Version: d.Version, CreatedAt: d.CreatedAt, UpdatedAt: d.UpdatedAt, Data: d.Data})
	}
	if !o.AsOf.IsZero() {
		q := Query{Filter: o.Filter, AsOf: o.AsOf, Limit: 1000}
		for {
			page, err := s.listAsOf(ctx, c, expr, q)
			if err != nil {
				return n, err
			}
			for _, d := range page.Items {
				if err := write(d); err != nil {
					return n, err
				}
			}
			if page.NextCursor == "" {
				return n, bw.Flush()
			}
			q.Cursor = page.NextCursor
		}
	}
	where, args, err := filter.SQL(expr, FilterTarget, 1)
	if err != nil {
		return 0, err
	}
	rows, err := s.pool.Query(ctx, `SELECT d.id, d.version, d.created_at, d.updated_at, d.body FROM documents d
		WHERE d.collection_id = `+sqlLiteral(c.id)+`::uuid AND d.body IS NOT NULL AND `+where+` ORDER BY d.id`, args...)
	if err != nil {
		return 0, db.Translate(err, "documents")
	}
	defer rows.Close()
	for rows.Next() {
		var d Document
		if err := rows.Scan(&d.ID, &d.Version, &d.CreatedAt, &d.UpdatedAt, &d.Data); err != nil {
			return n, err
		}
		if err := write(d); err != nil {
			return n, err
		}
	}
	if err := rows.Err(); err != nil {
		return n, db.Translate(err, "documents")
	}
	return n, bw.Flush()
}

type exportLine struct {
	ID        string          `json:"id"`
	Version   int64           `json:"version"`
	CreatedAt time.Time       `json:"created_at"`
	UpdatedAt time.Time       `json:"updated_at"`
	Data      json.RawMessage `json:"data"`
}
