package series

import (
	"context"
	"encoding/json"
	"errors"
	"sync"

	"github.com/google/uuid"
	"github.com/stratadb/strata/audit"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/problem"
)

// IngestItem is one message of an HTTP batch: a device and either its payload as the
// device would publish it (a Fernet token, or JSON text), or the payload's fields inline.
type IngestItem struct {
	DeviceID string `json:"device_id" doc:"The device; a device of another tenant is rejected as unknown_device."`
	// Payload is a Fernet token or JSON text, exactly as the device would publish it.
	Payload *string `json:"payload,omitempty" doc:"A Fernet token or JSON text, as the device publishes it. Or give the fields inline."`
	rawPayload
}

// IngestRequest is an HTTP batch: up to MaxIngestItems messages.
type IngestRequest struct {
	Items []IngestItem `json:"items"`
}

// MaxIngestItems bounds the messages of one HTTP batch.
const MaxIngestItems = 50000

// IngestReject says why one item of a batch was rejected.
type IngestReject struct {
	Index  int    `json:"index" doc:"Position of the item in the request."`
	Reason string `json:"reason" example:"out_of_range"`
	Detail string `json:"detail,omitempty"`
}

// IngestResult is what became of a batch, once committed.
type IngestResult struct {
	// Accepted counts the messages stored, Readings the values they held.
	Accepted int `json:"accepted"`
	Readings int `json:"readings"`
	// Rejected lists the items not stored, and why.
	Rejected []IngestReject `json:"rejected"`
}

// IngestOptions tunes Ingest. Nil means defaults.
type IngestOptions struct {
	// Retry marks the batch as a possible repeat of an earlier one (the HTTP layer sets it
	// when an Idempotency-Key is given): readings already stored for the same device,
	// metric and time are skipped instead of stored twice.
	Retry bool
}

var errIngestUnavailable = problem.Unavailable("ingest_unavailable", "ingest is not running on this node; retry")

// Ingest stores a batch of messages through the ingest pipeline, like the MQTT and Redis
// paths, and returns once every message is committed (write on each device named). Items
// with invalid, forged, expired or out-of-range payloads are rejected individually; the
// caller may send plaintext even to devices that must encrypt over MQTT. One audit row
// records the request.
func (s *Service) Ingest(ctx context.Context, tenant string, items []IngestItem, o *IngestOptions) (IngestResult, error) {
	if o == nil {
		o = &IngestOptions{}
	}
	if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); err != nil {
		return IngestResult{}, err
	}
	if len(items) > MaxIngestItems {
		return IngestResult{}, problem.TooLarge("too_many_items", "a batch holds at most %d items", MaxIngestItems)
	}
	if !s.started.Load() {
		return IngestResult{}, errIngestUnavailable
	}
	tu := uuid.MustParse(tenant)
	states := map[string]*deviceState{}
	for _, it := range items {
		if _, done := states[it.DeviceID]; done {
			continue
		}
		if _, err := s.authorizeDevice(ctx, tenant, it.DeviceID, auth.PermWrite); err != nil {
			if problem.HasCode(err, "device_not_found") {
				states[it.DeviceID] = nil
				continue
			}
			return IngestResult{}, err
		}
		st, err := s.registry.get(ctx, it.DeviceID)
		if err != nil {
			return IngestResult{}, err
		}
		if !st.exists || st.tenant != tu {
			st = nil
		}
		states[it.DeviceID] = st
	}
	received := s.now()
	w := &ingestWait{outcomes: make([]outcome, len(items)), left: len(items), done: make(chan struct{})}
	if len(items) == 0 {
		close(w.done)
	}
	msgs := make([]*message, len(items))
	for i := range items {
		it := &items[i]
		st := states[it.DeviceID]
		m := &message{source: SourceHTTP, received: received, dup: o.Retry, tenant: tu}
		if st != nil {
			m.st, m.device = st, st.id
		}
		var pts []point
		var reason, detail string
		switch {
		case st == nil:
			reason = ReasonUnknownDevice
		case it.Payload != nil:
			pts, reason, detail = s.decodeMessage(st, []byte(*it.Payload), received, true)
		case st.disabled:
			reason = ReasonDisabled
		default:
			f := it.fields()
			pts, reason, detail = s.validate(st, &f, received)
		}
		if reason != "" {
			m.reject(reason, detail)
			if it.Payload != nil {
				m.payload = []byte(*it.Payload)
			} else if b, err := json.Marshal(it.rawPayload); err == nil {
				m.payload = b
			}
		} else {
			m.points = pts
		}
		m.ack = w.ackFor(i)
		msgs[i] = m
	}
	if len(msgs) > 0 {
		msgs[0].audit = &auditNote{ctx: auditContext(ctx), entry: audit.Entry{Tenant: tenant, Action: "readings.ingest", ResourceType: "device",
			ResourceID: "*", Details: map[string]any{"items": len(items), "devices": len(states), "retry": o.Retry}}}
	}
	for i, m := range msgs {
		if err := s.pipe.submit(ctx, m); err != nil {
			if i == 0 {
				return IngestResult{}, ingestErr(err)
			}
			return IngestResult{}, problem.Unavailable("ingest_interrupted", "the batch was cut short (%d of %d items queued); "+
				"retry it with the same Idempotency-Key, so what was stored is not stored twice", i, len(items))
		}
	}
	select {
	case <-w.done:
	case <-s.pipe.done:
		return IngestResult{}, errIngestUnavailable
	case <-ctx.Done():
		return IngestResult{}, ctx.Err()
	}
	res := IngestResult{Rejected: []IngestReject{}}
	for i, oc := range w.outcomes {
		switch {
		case oc.err != nil:
			return IngestResult{}, ingestErr(oc.err)
		case oc.reason != "":
			res.Rejected = append(res.Rejected, IngestReject{Index: i, Reason: oc.reason, Detail: msgs[i].detail})
		default:
			res.Accepted++
			res.Readings += len(msgs[i].points)
		}
	}
	return res, nil
}

func ingestErr(err error) error {
	if errors.Is(err, errStopped) {
		return errIngestUnavailable
	}
	return err
}

type ingestWait struct {
	mu       sync.Mutex
	outcomes []outcome
	left     int
	done     chan struct{}
}

func (w *ingestWait) ackFor(i int) func(outcome) {
	return func(o outcome) {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.outcomes[i] = o
		if w.left--; w.left == 0 {
			close(w.done)
		}
	}
}

// auditNote is an audit row to write in the commit that stores a request's first message.
type auditNote struct {
	ctx   context.Context
	entry audit.Entry
}

// auditContext keeps what audit.Record reads from ctx (actor, request), without ctx's
// cancellation: the commit may happen after the request's context ends.
func auditContext(ctx context.Context) context.Context {
	return audit.WithRequest(audit.WithActor(context.Background(), audit.ActorFrom(ctx)), audit.RequestFrom(ctx))
}
