package series

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/problem"
)

// Stats are a tenant's ingest counters (since the tenant's first reading, across every
// node) and this node's pipeline state.
type Stats struct {
	Devices int `json:"devices"`
	// Messages and Readings count what was stored; Rejected counts rejections by reason.
	Messages      int64            `json:"messages"`
	Readings      int64            `json:"readings"`
	Rejected      map[string]int64 `json:"rejected"`
	LastReadingAt *time.Time       `json:"last_reading_at,omitempty"`
	// DeadLetters is how many rejected messages the tenant's ring holds now.
	DeadLetters int       `json:"dead_letters"`
	Node        NodeStats `json:"node"`
}

// NodeStats describe the ingest pipeline of the node that answered.
type NodeStats struct {
	QueueWaiting  int    `json:"queue_waiting" doc:"Messages decoded and waiting for commit."`
	QueueCapacity int    `json:"queue_capacity"`
	MQTTAddr      string `json:"mqtt_addr,omitempty" doc:"The embedded broker's address, when it runs."`
	MQTTClients   int64  `json:"mqtt_clients"`
	ExternalUp    bool   `json:"external_broker_up" doc:"Connected to the external broker and subscribed (SUBACK received)."`
	Redis         bool   `json:"redis" doc:"Latest values are cached in Redis (else in-process)."`
}

// Stats returns the tenant's ingest statistics (read on device:*).
func (s *Service) Stats(ctx context.Context, tenant string) (Stats, error) {
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); err != nil {
		return Stats{}, err
	}
	st := Stats{Rejected: map[string]int64{}}
	if err := s.pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM devices WHERE tenant_id = $1),
		(SELECT count(*) FROM reading_rejects WHERE tenant_id = $1)`, tenant).Scan(&st.Devices, &st.DeadLetters); err != nil {
		return Stats{}, db.Translate(err, "stats")
	}
	rows, err := s.pool.Query(ctx, `SELECT name, value, updated_at FROM series_counters WHERE tenant_id = $1`, tenant)
	if err != nil {
		return Stats{}, db.Translate(err, "stats")
	}
	defer rows.Close()
	for rows.Next() {
		var name string
		var v int64
		var at time.Time
		if err := rows.Scan(&name, &v, &at); err != nil {
			return Stats{}, db.Translate(err, "stats")
		}
		switch {
		case name == "messages":
			st.Messages = v
		case name == "readings":
			st.Readings = v
			at = at.UTC()
			st.LastReadingAt = &at
		case strings.HasPrefix(name, "rejected:"):
			st.Rejected[strings.TrimPrefix(name, "rejected:")] = v
		}
	}
	if err := rows.Err(); err != nil {
		return Stats{}, db.Translate(err, "stats")
	}
	st.Node = NodeStats{QueueWaiting: len(s.pipe.ch), QueueCapacity: cap(s.pipe.ch), MQTTAddr: s.MQTTAddr(), Redis: s.redis != nil}
	if s.broker != nil {
		st.Node.MQTTClients = s.broker.clients()
	}
	if s.external != nil {
		st.Node.ExternalUp = s.external.up.Load()
	}
	return st, nil
}

// Reject is a rejected message kept for inspection.
type Reject struct {
	Seq        int64     `json:"seq,string"`
	DeviceID   string    `json:"device_id,omitempty"`
	Source     string    `json:"source" enum:"mqtt,broker,redis,http"`
	Reason     string    `json:"reason" example:"out_of_range"`
	Detail     string    `json:"detail,omitempty"`
	Topic      string    `json:"topic,omitempty"`
	Payload    []byte    `json:"payload,omitempty" doc:"The payload as received (base64): ciphertext stays ciphertext."`
	ReceivedAt time.Time `json:"received_at"`
}

// RejectList is a page of rejected messages, newest first.
type RejectList struct {
	Items      []Reject `json:"items"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// RejectListOptions filters and pages Rejects. Nil means the newest 50.
type RejectListOptions struct {
	Reason   string
	DeviceID string
	// Limit is the page size: default 50, at most 1000.
	Limit  int
	Cursor string
}

// Rejects lists the tenant's rejected messages, newest first (read on device:*). The ring
// keeps the last RejectsPerTenant of them.
func (s *Service) Rejects(ctx context.Context, tenant string, o *RejectListOptions) (RejectList, error) {
	if o == nil {
		o = &RejectListOptions{}
	}
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); err != nil {
		return RejectList{}, err
	}
	limit := o.Limit
	if limit <= 0 || limit > 1000 {
		limit = defaultPageLimit
	}
	before := int64(1) << 62
	if o.Cursor != "" {
		n, err := strconv.ParseInt(o.Cursor, 10, 64)
		if err != nil || n <= 0 {
			return RejectList{}, problem.Invalid("invalid_cursor", "the cursor does not belong to this listing").WithField("query.cursor", "invalid")
		}
		before = n
	}
	rows, err := s.pool.Query(ctx, `SELECT seq, COALESCE(device_id::text, ''), source, reason, detail, topic, payload, received_at
		FROM reading_rejects WHERE tenant_id = $1 AND seq < $2 AND ($3 = '' OR reason = $3) AND ($4 = '' OR device_id::text = $4)
		ORDER BY seq DESC LIMIT $5`, tenant, before, o.Reason, o.DeviceID, limit+1)
	if err != nil {
		return RejectList{}, db.Translate(err, "rejects")
	}
	items, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Reject, error) {
		var x Reject
		err := r.Scan(&x.Seq, &x.DeviceID, &x.Source, &x.Reason, &x.Detail, &x.Topic, &x.Payload, &x.ReceivedAt)
		x.ReceivedAt = x.ReceivedAt.UTC()
		return x, err
	})
	if err != nil {
		return RejectList{}, db.Translate(err, "rejects")
	}
	out := RejectList{Items: items}
	if len(items) > limit {
		out.Items = items[:limit]
		out.NextCursor = strconv.FormatInt(items[limit-1].Seq, 10)
	}
	if out.Items == nil {
		out.Items = []Reject{}
	}
	return out, nil
}
