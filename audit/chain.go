package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/internal/db"
)

// genesis is the prev_hash of a chain's first entry.
var genesis = make([]byte, sha256.Size)

// link is an entry as it enters the hash: every recorded field, in a fixed order.
type link struct {
	id                                        int64
	chain                                     string
	seq                                       int64
	at                                        time.Time
	actorUser, actorKey, actorName            string
	action, resourceType, resourceID, details string
	ip, userAgent, requestID                  string
	prevHash, hash                            []byte
}

// linkColumns are selected in this order by scanLink.
const linkColumns = `id, chain::text, COALESCE(seq, 0), at, COALESCE(actor_user_id::text, ''), COALESCE(actor_key_id::text, ''),
	actor_name, action, resource_type, resource_id, details::text, COALESCE(host(ip), ''), user_agent, request_id,
	COALESCE(prev_hash, ''::bytea), COALESCE(hash, ''::bytea)`

func scanLink(rows pgx.CollectableRow) (link, error) {
	var l link
	err := rows.Scan(&l.id, &l.chain, &l.seq, &l.at, &l.actorUser, &l.actorKey, &l.actorName, &l.action,
		&l.resourceType, &l.resourceID, &l.details, &l.ip, &l.userAgent, &l.requestID, &l.prevHash, &l.hash)
	return l, err
}

// digest is SHA-256 over a JSON array of the entry's fields and the previous hash: JSON
// keeps field boundaries unambiguous, and details are hashed as PostgreSQL's canonical
// jsonb text.
func (l link) digest(prev []byte) []byte {
	b, _ := json.Marshal([]any{"strata-audit-v1", l.chain, l.seq, l.at.UTC().Format("2006-01-02T15:04:05.000000Z"),
		l.actorUser, l.actorKey, l.actorName, l.action, l.resourceType, l.resourceID, l.details,
		l.ip, l.userAgent, l.requestID, hex.EncodeToString(prev)})
	sum := sha256.Sum256(b)
	return sum[:]
}

// sealLock elects one sealer at a time across all nodes.
const sealLock int64 = 0x5374726174614175 // "StrataAu"

// Seal links up to batch unsealed entries into their chains and returns how many it
// sealed. Another node sealing at the same moment makes it return 0.
func (l *Log) Seal(ctx context.Context, batch int) (int, error) {
	sealed := 0
	err := pgx.BeginFunc(ctx, l.pool, func(tx pgx.Tx) error {
		var got bool
		if err := tx.QueryRow(ctx, "SELECT pg_try_advisory_xact_lock($1)", sealLock).Scan(&got); err != nil || !got {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT `+linkColumns+` FROM audit_log WHERE hash IS NULL ORDER BY id LIMIT $1`, batch)
		if err != nil {
			return err
		}
		links, err := pgx.CollectRows(rows, scanLink)
		if err != nil || len(links) == 0 {
			return err
		}
		heads := map[string]link{}
		var chains []string
		for _, lk := range links {
			if _, ok := heads[lk.chain]; !ok {
				heads[lk.chain] = link{hash: genesis}
				chains = append(chains, lk.chain)
			}
		}
		hrows, err := tx.Query(ctx, `SELECT chain::text, seq, hash FROM audit_heads WHERE chain = ANY($1::uuid[]) FOR UPDATE`, chains)
		if err != nil {
			return err
		}
		for hrows.Next() {
			var h link
			if err := hrows.Scan(&h.chain, &h.seq, &h.hash); err != nil {
				hrows.Close()
				return err
			}
			heads[h.chain] = h
		}
		if err := hrows.Err(); err != nil {
			return err
		}
		ids, seqs := make([]int64, len(links)), make([]int64, len(links))
		prevs, hashes := make([][]byte, len(links)), make([][]byte, len(links))
		for i, lk := range links {
			h := heads[lk.chain]
			lk.seq = h.seq + 1
			ids[i], seqs[i], prevs[i], hashes[i] = lk.id, lk.seq, h.hash, lk.digest(h.hash)
			heads[lk.chain] = link{chain: lk.chain, seq: lk.seq, hash: hashes[i]}
		}
		if _, err := tx.Exec(ctx, `UPDATE audit_log a SET seq = u.seq, prev_hash = u.prev, hash = u.hash
			FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[]) AS u(id, seq, prev, hash) WHERE a.id = u.id`,
			ids, seqs, prevs, hashes); err != nil {
			return err
		}
		hc, hs, hh := make([]string, 0, len(heads)), make([]int64, 0, len(heads)), make([][]byte, 0, len(heads))
		for _, c := range chains {
			hc, hs, hh = append(hc, c), append(hs, heads[c].seq), append(hh, heads[c].hash)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO audit_heads (chain, seq, hash) SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[])
			ON CONFLICT (chain) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash`, hc, hs, hh); err != nil {
			return err
		}
		sealed = len(links)
		return nil
	})
	return sealed, err
}

// RunSealer seals new entries every interval (sooner while there is a backlog) until ctx
// ends. Every node runs one; an advisory lock lets one work at a time.
func (l *Log) RunSealer(ctx context.Context, interval time.Duration) {
	const batch = 2000
	for {
		n, err := l.Seal(ctx, batch)
		if err != nil && ctx.Err() == nil {
			l.log.Warn("sealing audit entries failed; retrying", "err", err)
		}
		if n == batch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// Report is the result of verifying one chain.
type Report struct {
	// OK is true when every sealed entry is intact and in place.
	OK bool `json:"ok"`
	// Checked counts the sealed entries verified.
	Checked int64 `json:"checked"`
	// FirstSeq and LastSeq bound the verified part of the chain.
	FirstSeq int64 `json:"first_seq"`
	LastSeq  int64 `json:"last_seq"`
	// Unsealed counts entries not yet linked (normally only those of the last instant).
	Unsealed int64 `json:"unsealed"`
	// Broken describes the first broken link, when OK is false.
	Broken *Break `json:"broken,omitempty"`
}

// Break is where a chain stops verifying.
type Break struct {
	Seq    int64  `json:"seq"`
	ID     string `json:"id,omitempty" doc:"Id of the entry at that position, when there is one."`
	Reason string `json:"reason"`
}

// Verify walks the tenant's chain ("" for the platform's) in order, recomputing each hash,
// and reports the first entry that was modified, removed or reordered.
func (l *Log) Verify(ctx context.Context, tenant string) (Report, error) {
	chain := chainOf(tenant)
	var rep Report
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return rep, db.Translate(err, "audit log")
	}
	defer conn.Release()
	// One snapshot for the anchor, the rows and the head.
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return rep, db.Translate(err, "audit log")
	}
	defer tx.Rollback(ctx) //nolint:errcheck // read-only
	if err := tx.QueryRow(ctx, `SELECT count(*) FROM audit_log WHERE chain = $1 AND hash IS NULL`, chain).Scan(&rep.Unsealed); err != nil {
		return rep, db.Translate(err, "audit log")
	}
	var anchor link
	err = tx.QueryRow(ctx, `SELECT seq, hash FROM audit_anchors WHERE chain = $1`, chain).Scan(&anchor.seq, &anchor.hash)
	if errors.Is(err, pgx.ErrNoRows) {
		anchor = link{hash: genesis}
	} else if err != nil {
		return rep, db.Translate(err, "audit log")
	}
	var head link
	err = tx.QueryRow(ctx, `SELECT seq, hash FROM audit_heads WHERE chain = $1`, chain).Scan(&head.seq, &head.hash)
	if errors.Is(err, pgx.ErrNoRows) {
		head = anchor
	} else if err != nil {
		return rep, db.Translate(err, "audit log")
	}
	rows, err := tx.Query(ctx, `SELECT `+linkColumns+` FROM audit_log WHERE chain = $1 AND seq IS NOT NULL ORDER BY seq`, chain)
	if err != nil {
		return rep, db.Translate(err, "audit log")
	}
	defer rows.Close()
	prev := anchor
	fail := func(seq, id int64, reason string) (Report, error) {
		rep.Broken = &Break{Seq: seq, Reason: reason}
		if id > 0 {
			rep.Broken.ID = fmt.Sprint(id)
		}
		return rep, nil
	}
	for rows.Next() {
		lk, err := scanLink(rows)
		if err != nil {
			return rep, db.Translate(err, "audit log")
		}
		want := prev.seq + 1
		switch {
		case lk.seq != want:
			return fail(want, 0, fmt.Sprintf("entry %d is missing (the next present entry is %d)", want, lk.seq))
		case !bytes.Equal(lk.prevHash, prev.hash):
			return fail(lk.seq, lk.id, "the link to the previous entry does not match (an entry before it was altered or replaced)")
		case !bytes.Equal(lk.digest(prev.hash), lk.hash):
			return fail(lk.seq, lk.id, "the entry was modified after it was sealed")
		}
		if rep.Checked == 0 {
			rep.FirstSeq = lk.seq
		}
		rep.Checked++
		rep.LastSeq = lk.seq
		prev = lk
	}
	if err := rows.Err(); err != nil {
		return rep, db.Translate(err, "audit log")
	}
	if head.seq != prev.seq || !bytes.Equal(head.hash, prev.hash) {
		return fail(prev.seq+1, 0, fmt.Sprintf("entries %d to %d are missing from the end of the chain", prev.seq+1, head.seq))
	}
	rep.OK = true
	return rep, nil
}
