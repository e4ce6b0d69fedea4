package media

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/idem"
	"github.com/stratadb/strata/problem"
)

// UploadInput is content to upload.
type UploadInput struct {
	// Body is the content, read to its end (or until it exceeds Limits.MaxBytes).
	Body io.Reader
	// ContentType is the type the client declared for the content; empty means unknown.
	// An image type must match the content (422 content_mismatch otherwise).
	ContentType string
	// IdempotencyKey, when set, makes a retried upload of the same bytes with the same key
	// (within 24 hours) answer the first upload's result instead of adding an alias; the
	// same key with other bytes is 422 idempotency_key_reused.
	IdempotencyKey string
}

// Upload is the answer to an upload: the new alias, its delete token (shown only here)
// and the blob's details.
type Upload struct {
	Alias string `json:"alias" doc:"The upload's public name, <uuid>.<ext>."`
	// DeleteToken deletes the alias; Strata keeps only its hash, so it cannot be shown again.
	DeleteToken string `json:"delete_token" doc:"Deletes the alias; shown only once."`
	Hash        string `json:"hash" doc:"SHA-256 of the bytes, hex."`
	// Deduplicated is true when the bytes were already stored and only a new alias was made.
	Deduplicated bool    `json:"deduplicated"`
	Details      Details `json:"details"`
	// replayed marks an answer replayed for an Idempotency-Key.
	replayed bool
}

// errReplay rolls back a transaction whose Idempotency-Key was used before, carrying the
// first answer.
type errReplay struct{ up Upload }

func (e *errReplay) Error() string { return "idempotent replay" }

// ErrUploadTooLarge is the problem for a body over Limits.MaxBytes.
func tooLarge(max int64) *problem.Error {
	return problem.TooLarge("upload_too_large", "the upload is larger than %d bytes", max)
}

// Upload streams in.Body to a spool file while hashing it, checks it against the limits,
// then stores it (unless the tenant already has these bytes) and records a new alias and
// delete token (write on "media:*"). Nothing is kept when a check fails.
func (s *Service) Upload(ctx context.Context, tenant string, in UploadInput) (Upload, error) {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermWrite); err != nil {
		return Upload{}, err
	}
	return s.ingest(ctx, tenant, in)
}

// ingest is Upload after authorization.
func (s *Service) ingest(ctx context.Context, tenant string, in UploadInput) (Upload, error) {
	f, sum, n, err := s.spool(in.Body)
	if err != nil {
		return Upload{}, err
	}
	defer func() { _ = f.Close(); _ = os.Remove(f.Name()) }()
	d, err := inspect(f, n, in.ContentType, s.cfg.Limits)
	if err != nil {
		return Upload{}, err
	}
	return s.keep(ctx, tenant, sum, d, f.Name(), in.IdempotencyKey)
}

// spool streams body into a new spool file while hashing it, enforcing the byte limit.
// The caller closes and removes the file.
func (s *Service) spool(body io.Reader) (*os.File, []byte, int64, error) {
	if err := os.MkdirAll(s.cfg.SpoolDir, 0o750); err != nil {
		return nil, nil, 0, fmt.Errorf("spooling an upload: %w", err)
	}
	f, err := os.CreateTemp(s.cfg.SpoolDir, "upload-*")
	if err != nil {
		return nil, nil, 0, fmt.Errorf("spooling an upload: %w", err)
	}
	fail := func(err error) (*os.File, []byte, int64, error) {
		_ = f.Close()
		_ = os.Remove(f.Name())
		return nil, nil, 0, err
	}
	h := sha256.New()
	max := s.cfg.Limits.MaxBytes
	// Bodies arrive in small reads (4 KiB from a multipart part); buffering the file's
	// writes saves a system call per read.
	w := spoolWriters.Get().(*bufio.Writer)
	w.Reset(&writebackWriter{f: f})
	n, err := io.Copy(io.MultiWriter(w, h), io.LimitReader(body, max+1))
	if err == nil {
		err = w.Flush()
	}
	w.Reset(nil)
	spoolWriters.Put(w)
	if err != nil {
		if p, ok := problem.As(err); ok {
			return fail(p)
		}
		return fail(problem.Invalid("upload_interrupted", "the upload could not be read to its end").WithCause(err))
	}
	if n > max {
		return fail(tooLarge(max))
	}
	if n == 0 {
		return fail(rejected("empty_upload", "the upload has no bytes"))
	}
	return f, h.Sum(nil), n, nil
}

// spoolWriters keeps the spool's write buffers between uploads.
var spoolWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 256<<10) }}

// writebackWriter writes to a spool file and starts the kernel's writeback of every
// chunk written, so the disk works while the rest of the upload arrives.
type writebackWriter struct {
	f   *os.File
	off int64
}

func (w *writebackWriter) Write(p []byte) (int, error) {
	n, err := w.f.Write(p)
	if n > 0 {
		startWriteback(w.f, w.off, int64(n))
		w.off += int64(n)
	}
	return n, err
}

func newToken() (string, []byte) {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	tok := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(tok))
	return tok, sum[:]
}

func extension(format string) string {
	if f, ok := formats[format]; ok {
		return f.ext
	}
	return "bin"
}

// newIdentifier names a blob: by tenant and hash, plus a random suffix so that every
// write has its own identifier.
func newIdentifier(tenant string, sum []byte, ext string) string {
	x := hex.EncodeToString(sum)
	r := make([]byte, 6)
	_, _ = rand.Read(r)
	return fmt.Sprintf("%s/%s/%s/%s-%s.%s", tenant, x[:2], x[2:4], x, hex.EncodeToString(r), ext)
}

// keep stores the spooled blob and records hash, details and a new alias. The blob is
// stored while the rows are written, before knowing whether the tenant has these bytes
// already when the store is local: asking first would cost every upload a round trip, and
// duplicates are the rarer case (theirs is then deleted at once, so duplicate bytes are
// still kept once). A remote store is asked about first. A concurrent deletion of the
// last alias of the same hash makes it try again.
func (s *Service) keep(ctx context.Context, tenant string, sum []byte, d Details, spool, idemKey string) (Upload, error) {
	if err := s.refuseIfMoved(); err != nil {
		return Upload{}, err
	}
	exists := false
	if _, local := s.store.(*FileStore); !local {
		// A remote store's write costs far more than a question: ask first.
		err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM media_hashes WHERE tenant_id = $1 AND hash = $2)`, tenant, sum).Scan(&exists)
		if err != nil {
			return Upload{}, db.Translate(err, "media")
		}
	}
	ident := ""
	for attempt := range 4 {
		var stored chan error
		if !exists && ident == "" {
			// The blob is stored while the rows are written; they commit only after the
			// store has it durably, so no row ever names a missing blob.
			ident = newIdentifier(tenant, sum, extension(d.Format))
			stored = make(chan error, 1)
			go func(ident string) {
				if err := s.store.Put(ctx, ident, spool); err != nil {
					stored <- fmt.Errorf("storing an upload in the %s store: %w", s.store.Name(), err)
					return
				}
				stored <- nil
			}(ident)
		}
		var up Upload
		var done bool
		var err error
		if attempt == 0 && stored != nil && idemKey == "" {
			up, done, err = s.recordNew(ctx, tenant, sum, d, ident, stored)
		} else {
			up, done, err = s.record(ctx, tenant, sum, d, ident, idemKey, stored)
		}
		var rolledBack *errRolledBack
		rolled := errors.As(err, &rolledBack)
		if err != nil || done {
			if ident != "" && (rolled || err == nil && (up.Deduplicated || up.replayed)) {
				// Ours was not needed, or not recorded: remove it now. (After a failed
				// commit it is left to the prune, which deletes it only if no row names it.)
				if derr := s.store.Delete(context.WithoutCancel(ctx), ident); derr != nil {
					s.log.Warn("deleting an unrecorded blob", "identifier", ident, "err", derr)
				}
			}
			if rolled {
				return Upload{}, rolledBack.error
			}
			return up, err
		}
		exists = false // deleted meanwhile: store the bytes after all
	}
	if ident != "" { // stored, never recorded
		if err := s.store.Delete(context.WithoutCancel(ctx), ident); err != nil {
			s.log.Warn("deleting an unrecorded blob", "identifier", ident, "err", err)
		}
	}
	return Upload{}, problem.Conflict("transaction_conflict", "the media changed concurrently; retry")
}

// record records the upload in one transaction. done is false when the hash was
// deleted concurrently (the blob must be stored, if it is not yet, and inserted).
// stored, when not nil, answers once the blob is durably stored (or could not be):
// record always waits for it, and commits only after it answered nil.
func (s *Service) record(ctx context.Context, tenant string, sum []byte, d Details, ident, idemKey string, stored <-chan error) (up Upload, done bool, err error) {
	waitStored := func() error {
		if stored == nil {
			return nil
		}
		err := <-stored
		stored = nil
		return err
	}
	defer func() { _ = waitStored() }() // never return while the store is still writing
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		if serr := waitStored(); serr != nil {
			return Upload{}, false, &errRolledBack{serr}
		}
		return Upload{}, false, &errRolledBack{db.Translate(err, "media")}
	}
	up, done, err = s.recordTx(ctx, tx, tenant, sum, d, ident, idemKey)
	if err == nil {
		if serr := waitStored(); serr != nil {
			_ = tx.Rollback(ctx)
			return Upload{}, false, &errRolledBack{serr}
		}
	}
	if err != nil {
		_ = tx.Rollback(ctx)
		var replay *errReplay
		if errors.As(err, &replay) {
			replay.up.replayed = true
			return replay.up, true, nil
		}
		return Upload{}, false, &errRolledBack{translateIdentifier(err)}
	}
	if err := tx.Commit(ctx); err != nil {
		return Upload{}, false, translateIdentifier(err) // may have committed: the blob stays for the prune to judge
	}
	return up, done, nil
}

// recordNew is record for new bytes without an Idempotency-Key, the common case, in two
// round trips instead of seven: the rows are written in one pipelined batch that opens
// the transaction (a plain BEGIN, since pgx's Begin would cost a round trip of its own),
// and COMMIT follows once stored answered nil. done is false, with nothing written, when
// the hash turned out to be recorded already; record then adds the alias to it.
func (s *Service) recordNew(ctx context.Context, tenant string, sum []byte, d Details, ident string, stored <-chan error) (up Upload, done bool, err error) {
	waited := false
	defer func() {
		if !waited {
			// Never return while the store is still writing; the caller deletes the blob.
			if serr := <-stored; serr != nil {
				s.log.Debug("storing the blob of an upload that failed anyway", "err", serr)
			}
		}
	}()
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return Upload{}, false, &errRolledBack{db.Translate(err, "media")}
	}
	// A connection released inside a transaction (after an error) is closed by the pool.
	defer conn.Release()
	rollback := func(err error) (Upload, bool, error) {
		_, _ = conn.Exec(context.WithoutCancel(ctx), "ROLLBACK")
		return Upload{}, false, &errRolledBack{err}
	}
	d.CreatedAt = s.cfg.Now().UTC().Truncate(time.Microsecond)
	up = Upload{Hash: hex.EncodeToString(sum), Details: d, Alias: uuid.NewString() + "." + extension(d.Format)}
	var tokenHash []byte
	up.DeleteToken, tokenHash = newToken()
	b := &pgx.Batch{}
	b.Queue("BEGIN")
	var inserted bool
	b.Queue(`WITH h AS (
			INSERT INTO media_hashes (tenant_id, hash, size, format, identifier, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, hash) DO NOTHING
			RETURNING tenant_id, hash),
		dd AS (INSERT INTO media_details (tenant_id, hash, details) SELECT tenant_id, hash, $7 FROM h
			ON CONFLICT (tenant_id, hash) DO UPDATE SET details = EXCLUDED.details),
		a AS (INSERT INTO media_aliases (tenant_id, alias, hash, token_hash) SELECT tenant_id, $8, hash, $9 FROM h)
		SELECT EXISTS (SELECT FROM h)`,
		tenant, sum, d.Size, d.Format, ident, d.CreatedAt, d, up.Alias, tokenHash).QueryRow(func(r pgx.Row) error { return r.Scan(&inserted) })
	// Written even when nothing was inserted: the transaction is then rolled back.
	_ = audit.Record(ctx, db.Batch{B: b}, audit.Entry{Tenant: tenant, Action: "media.upload", ResourceType: "media", ResourceID: up.Alias,
		Details: map[string]any{"hash": up.Hash, "size": d.Size, "format": d.Format, "deduplicated": false}})
	if err := conn.SendBatch(ctx, b).Close(); err != nil {
		return rollback(translateIdentifier(err))
	}
	waited = true
	serr := <-stored
	switch {
	case serr != nil:
		return rollback(serr)
	case !inserted:
		_, _, _ = rollback(nil)
		return Upload{}, false, nil
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err != nil {
		return Upload{}, false, translateIdentifier(err) // may have committed: the blob stays for the prune to judge
	}
	return up, true, nil
}

// errRolledBack wraps an error after which nothing was committed, so a blob stored for
// the attempt can be deleted at once.
type errRolledBack struct{ error }

func (e *errRolledBack) Unwrap() error { return e.error }

func (s *Service) recordTx(ctx context.Context, tx pgx.Tx, tenant string, sum []byte, d Details, ident, idemKey string) (Upload, bool, error) {
	inserted := false
	if ident != "" {
		d.CreatedAt = s.cfg.Now().UTC().Truncate(time.Microsecond)
		tag, err := tx.Exec(ctx, `INSERT INTO media_hashes (tenant_id, hash, size, format, identifier, created_at)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (tenant_id, hash) DO NOTHING`, tenant, sum, d.Size, d.Format, ident, d.CreatedAt)
		if err != nil {
			return Upload{}, false, err
		}
		inserted = tag.RowsAffected() == 1
		if inserted {
			if err := detailsRelate(ctx, tx, tenant, sum, d); err != nil {
				return Upload{}, false, err
			}
		}
	}
	if !inserted {
		// Lock the existing hash against a concurrent deletion of its last alias.
		err := tx.QueryRow(ctx, `SELECT d.details FROM media_hashes h JOIN media_details d USING (tenant_id, hash)
			WHERE h.tenant_id = $1 AND h.hash = $2 FOR SHARE OF h`, tenant, sum).Scan(&d)
		if errors.Is(err, pgx.ErrNoRows) {
			return Upload{}, false, nil // deleted meanwhile: store (if not yet) and insert again
		}
		if err != nil {
			return Upload{}, false, err
		}
	}
	if idemKey != "" {
		var prev Upload
		replay, err := idem.Claim(ctx, tx, tenant, "media.upload", idemKey, sum, &prev)
		if err != nil {
			return Upload{}, false, err
		}
		if replay {
			return Upload{}, false, &errReplay{prev}
		}
	}
	up := Upload{Hash: hex.EncodeToString(sum), Deduplicated: !inserted, Details: d}
	up.Alias = uuid.NewString() + "." + extension(d.Format)
	var tokenHash []byte
	up.DeleteToken, tokenHash = newToken()
	if _, err := tx.Exec(ctx, `INSERT INTO media_aliases (tenant_id, alias, hash, token_hash) VALUES ($1, $2, $3, $4)`,
		tenant, up.Alias, sum, tokenHash); err != nil {
		return Upload{}, false, err
	}
	if idemKey != "" {
		if err := idem.Store(ctx, tx, tenant, "media.upload", idemKey, up); err != nil {
			return Upload{}, false, err
		}
	}
	err := audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.upload", ResourceType: "media", ResourceID: up.Alias,
		Details: map[string]any{"hash": up.Hash, "size": d.Size, "format": d.Format, "deduplicated": up.Deduplicated}})
	return up, true, err
}

// detailsRelate sets a hash's details, replacing any (last write wins), in one statement.
func detailsRelate(ctx context.Context, tx pgx.Tx, tenant string, sum []byte, d Details) error {
	_, err := tx.Exec(ctx, `INSERT INTO media_details (tenant_id, hash, details) VALUES ($1, $2, $3)
		ON CONFLICT (tenant_id, hash) DO UPDATE SET details = EXCLUDED.details`, tenant, sum, d)
	return err
}

// translateIdentifier reports an identifier used by another blob as its own conflict
// (not as "hash exists"), and other errors as usual.
func translateIdentifier(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23505" && (pe.ConstraintName == "media_hashes_identifier_key" || pe.ConstraintName == "media_variants_identifier_key") {
		return problem.Conflict("identifier_taken", "the store identifier is already used by another blob").WithCause(err)
	}
	return db.Translate(err, "media")
}
