package media

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
	"github.com/stratadb/strata/queue"
)

const (
	ingestQueue   = "media-ingest"
	ingestKind    = "media.ingest"
	uploadChannel = "strata_media_upload"
)

// uploadResult is what a backgrounded upload's job leaves for the claim: the upload, or
// the problem that refused it.
type uploadResult struct {
	Upload  *Upload        `json:"upload,omitempty"`
	Problem *problem.Error `json:"problem,omitempty"`
}

func uploadNotFound(id string) error {
	return problem.NotFound("upload_not_found", "upload %q not found (claimed already, or expired)", id)
}

// UploadBackground receives an upload (streamed, hashed and bounded by the byte limit,
// like Upload) and leaves checking and keeping it to a queue job, answering an upload id
// to claim the result with (write on "media:*"). Needs Config.Queue.
func (s *Service) UploadBackground(ctx context.Context, tenant string, in UploadInput) (string, error) {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermWrite); err != nil {
		return "", err
	}
	if s.cfg.Queue == nil {
		return "", problem.Unavailable("background_unavailable", "backgrounded uploads are not configured on this node")
	}
	f, sum, _, err := s.spool(in.Body)
	if err != nil {
		return "", err
	}
	defer func() { _ = f.Close(); _ = os.Remove(f.Name()) }()
	id := uuid.NewString()
	ident := newIdentifier(tenant, sum, "incoming")
	if err := s.store.Put(ctx, ident, f.Name()); err != nil {
		return "", fmt.Errorf("storing an upload in the %s store: %w", s.store.Name(), err)
	}
	payload, _ := json.Marshal(map[string]string{"id": id})
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO media_uploads (tenant_id, id, incoming_identifier, content_type, expires_at)
			VALUES ($1, $2, $3, $4, $5)`, tenant, id, ident, in.ContentType, s.cfg.Now().Add(s.cfg.UploadExpiry)); err != nil {
			return err
		}
		_, err := s.cfg.Queue.JobPushTx(auth.System(ctx), tx, tenant, ingestQueue, queue.JobInput{Kind: ingestKind, Payload: payload, MaxAttempts: 5})
		return err
	})
	if err != nil {
		// Not recorded: the prune deletes the incoming blob later.
		return "", db.Translate(err, "upload")
	}
	return id, nil
}

// ingestJob checks and keeps a backgrounded upload, then records the outcome for the claim
// and notifies waiters.
func (s *Service) ingestJob(ctx context.Context, j *queue.Job) error {
	var p struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return queue.Discard(err)
	}
	tenant := j.Tenant
	var ident, ct, status string
	err := s.pool.QueryRow(ctx, `SELECT incoming_identifier, content_type, status FROM media_uploads WHERE tenant_id = $1 AND id = $2`,
		tenant, p.ID).Scan(&ident, &ct, &status)
	if errors.Is(err, pgx.ErrNoRows) || status != "pending" {
		return nil // claimed, expired or done already
	}
	if err != nil {
		return err
	}
	blob, err := s.store.Open(ctx, ident)
	if errors.Is(err, ErrBlobNotFound) {
		return queue.Discard(errors.New("the incoming upload is gone"))
	}
	if err != nil {
		return err
	}
	up, err := s.ingest(ctx, tenant, UploadInput{Body: blob, ContentType: ct})
	_ = blob.Close()
	var res uploadResult
	if pe, ok := problem.As(err); ok {
		res.Problem = pe
	} else if err != nil {
		return err // retried
	} else {
		// The delete token is not kept: the claim makes a new one (and replaces the
		// alias's token hash), so no secret waits in clear in the uploads table.
		up.DeleteToken = ""
		res.Upload = &up
	}
	body, err := json.Marshal(res)
	if err != nil {
		return err
	}
	newStatus := "done"
	if res.Problem != nil {
		newStatus = "failed"
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `UPDATE media_uploads SET status = $3, result = $4 WHERE tenant_id = $1 AND id = $2`,
			tenant, p.ID, newStatus, body); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO media_gone (identifier, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, ident, tenant); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, uploadChannel, p.ID)
		return err
	})
	if err != nil {
		return err
	}
	s.deleteBlobs(ctx, []string{ident})
	return nil
}

// uploadTake removes a finished upload's result and, for a kept upload, gives its alias
// a new delete token (the only copy, in the answer), in one transaction.
// pgx.ErrNoRows when there is no finished result.
func (s *Service) uploadTake(ctx context.Context, tenant, id string) (uploadResult, error) {
	var res uploadResult
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var body []byte
		err := tx.QueryRow(ctx, `DELETE FROM media_uploads WHERE tenant_id = $1 AND id = $2 AND status <> 'pending'
			AND expires_at > $3 RETURNING result`, tenant, id, s.cfg.Now()).Scan(&body)
		if err != nil {
			return err
		}
		if err := json.Unmarshal(body, &res); err != nil {
			return err
		}
		if res.Upload == nil {
			return nil
		}
		tok, tokenHash := newToken()
		tag, err := tx.Exec(ctx, `UPDATE media_aliases SET token_hash = $3 WHERE tenant_id = $1 AND alias = $2`, tenant, res.Upload.Alias, tokenHash)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 { // purged meanwhile
			res = uploadResult{Problem: problem.NotFound("alias_not_found", "media %q was deleted before the upload was claimed", res.Upload.Alias)}
			return nil
		}
		res.Upload.DeleteToken = tok
		return audit.Record(ctx, tx, audit.Entry{Tenant: tenant, Action: "media.upload_claim", ResourceType: "media",
			ResourceID: res.Upload.Alias, Details: map[string]any{"upload_id": id}})
	})
	return res, err
}

// UploadClaim answers a backgrounded upload's result once (write on "media:*"): the
// upload, or the problem that refused it. It waits up to wait for the result (woken by
// NOTIFY), then answers 503 upload_pending with Retry-After. A claimed or expired upload
// answers 404 upload_not_found.
func (s *Service) UploadClaim(ctx context.Context, tenant, id string, wait time.Duration) (Upload, error) {
	if err := s.authorize(ctx, tenant, allMedia, auth.PermWrite); err != nil {
		return Upload{}, err
	}
	if _, err := uuid.Parse(id); err != nil {
		return Upload{}, uploadNotFound(id)
	}
	ready := s.waitFor(id)
	defer s.variantReady(id)
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		res, err := s.uploadTake(ctx, tenant, id)
		if err == nil {
			if res.Problem != nil {
				return Upload{}, res.Problem
			}
			return *res.Upload, nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return Upload{}, db.Translate(err, "upload")
		}
		var pending bool
		if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM media_uploads WHERE tenant_id = $1 AND id = $2 AND expires_at > $3)`,
			tenant, id, s.cfg.Now()).Scan(&pending); err != nil {
			return Upload{}, db.Translate(err, "upload")
		}
		if !pending {
			return Upload{}, uploadNotFound(id)
		}
		select {
		case <-ready:
			ready = s.waitFor(id)
		case <-deadline.C:
			return Upload{}, problem.Unavailable("upload_pending", "the upload is still being processed; claim it again shortly").
				WithHeader("Retry-After", "1")
		case <-ctx.Done():
			return Upload{}, ctx.Err()
		}
	}
}

// UploadsExpire removes backgrounded uploads past their expiry across all tenants: the
// alias of an unclaimed result (and the bytes, when it was their last alias), and the
// incoming bytes of one never processed. Background maintenance; answers how many.
func (s *Service) UploadsExpire(ctx context.Context) (int, error) {
	n := 0
	for {
		var gone []string
		var found bool
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var tenant, ident, status string
			var body []byte
			err := tx.QueryRow(ctx, `DELETE FROM media_uploads WHERE (tenant_id, id) IN (
				SELECT tenant_id, id FROM media_uploads WHERE expires_at <= $1 ORDER BY expires_at, tenant_id, id LIMIT 1 FOR UPDATE SKIP LOCKED)
				RETURNING tenant_id::text, incoming_identifier, status, result`, s.cfg.Now()).Scan(&tenant, &ident, &status, &body)
			if errors.Is(err, pgx.ErrNoRows) {
				return nil
			}
			if err != nil {
				return err
			}
			found = true
			if _, err := tx.Exec(ctx, `INSERT INTO media_gone (identifier, tenant_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, ident, tenant); err != nil {
				return err
			}
			gone = append(gone, ident)
			var res uploadResult
			if status == "done" && json.Unmarshal(body, &res) == nil && res.Upload != nil {
				more, err := aliasRemoveTx(ctx, tx, tenant, res.Upload.Alias)
				if err != nil {
					return err
				}
				gone = append(gone, more...)
			}
			return nil
		})
		if err != nil {
			return n, db.Translate(err, "uploads")
		}
		if !found {
			return n, nil
		}
		n++
		s.deleteBlobs(ctx, gone)
	}
}
