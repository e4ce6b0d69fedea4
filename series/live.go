package series

import (
	"context"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/stratadb/strata/auth"
)

// Event is one reading on a live stream.
type Event struct {
	DeviceID string    `json:"device_id"`
	Metric   string    `json:"metric" example:"temperature"`
	Value    float64   `json:"value" example:"21.5"`
	Time     time.Time `json:"time"`
}

// Subscription is a live stream of a device's or a tenant's readings, as they commit.
// Readings committed by this node arrive one by one; those committed by other nodes
// arrive as each series' latest value, within a moment of their commit.
type Subscription struct {
	// C delivers events in batches. It is closed when the subscription ends.
	C       <-chan []Event
	c       chan []Event
	tenant  uuid.UUID
	device  uuid.UUID // zero: every device of the tenant
	dropped atomic.Int64
	h       *hub
	once    sync.Once
}

// Dropped returns how many events were dropped because the subscriber fell behind, and
// resets the count.
func (sub *Subscription) Dropped() int64 { return sub.dropped.Swap(0) }

// Close ends the subscription.
func (sub *Subscription) Close() {
	sub.once.Do(func() {
		sub.h.mu.Lock()
		delete(sub.h.subs[sub.tenant], sub)
		if len(sub.h.subs[sub.tenant]) == 0 {
			delete(sub.h.subs, sub.tenant)
		}
		sub.h.mu.Unlock()
		close(sub.c)
	})
}

type hub struct {
	onDrop func(n int) // counts events dropped for slow subscribers

	mu   sync.Mutex
	subs map[uuid.UUID]map[*Subscription]struct{}

	remoteMu  sync.Mutex
	remoteRun map[uuid.UUID]bool                    // a fetch of the tenant's remote changes is running
	again     map[uuid.UUID]bool                    // another notice came meanwhile
	since     map[uuid.UUID]time.Time               // remote changes seen up to here
	sent      map[uuid.UUID]map[seriesKey]time.Time // newest time emitted per series, per tenant
}

func newHub(onDrop func(int)) *hub {
	return &hub{onDrop: onDrop, subs: map[uuid.UUID]map[*Subscription]struct{}{}, remoteRun: map[uuid.UUID]bool{}, again: map[uuid.UUID]bool{},
		since: map[uuid.UUID]time.Time{}, sent: map[uuid.UUID]map[seriesKey]time.Time{}}
}

const subscriptionBuffer = 256

// Subscribe opens a live stream of a device's readings (read on device:<id>), or of every
// device of the tenant when device is "" (read on device:*). Close it when done.
func (s *Service) Subscribe(ctx context.Context, tenant, device string) (*Subscription, error) {
	if device == "" {
		if _, err := s.auth.Authorize(ctx, tenant, resourceDevices, auth.PermRead); err != nil {
			return nil, err
		}
	} else {
		if _, err := s.authorizeDevice(ctx, tenant, device, auth.PermRead); err != nil {
			return nil, err
		}
		st, err := s.registry.get(ctx, device)
		if err != nil {
			return nil, err
		}
		if !st.exists || st.tenStr != tenant {
			return nil, errDeviceNotFound()
		}
	}
	sub := &Subscription{c: make(chan []Event, subscriptionBuffer), tenant: uuid.MustParse(tenant), h: s.live}
	sub.C = sub.c
	if device != "" {
		sub.device = uuid.MustParse(device)
	}
	h := s.live
	h.mu.Lock()
	if h.subs[sub.tenant] == nil {
		h.subs[sub.tenant] = map[*Subscription]struct{}{}
	}
	h.subs[sub.tenant][sub] = struct{}{}
	h.mu.Unlock()
	return sub, nil
}

// publish feeds a committed batch to the subscriptions of its tenants.
func (h *hub) publish(batch []*message) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.subs) == 0 {
		return
	}
	per := map[uuid.UUID][]*message{}
	for _, m := range batch {
		if len(m.points) > 0 && h.subs[m.tenant] != nil {
			per[m.tenant] = append(per[m.tenant], m)
		}
	}
	for tenant, ms := range per {
		for sub := range h.subs[tenant] {
			var evs []Event
			for _, m := range ms {
				if sub.device != uuid.Nil && sub.device != m.device {
					continue
				}
				for _, p := range m.points {
					evs = append(evs, Event{DeviceID: m.device.String(), Metric: p.metric, Value: p.value, Time: p.ts})
				}
			}
			sub.send(evs)
		}
	}
}

func (sub *Subscription) send(evs []Event) {
	if len(evs) == 0 {
		return
	}
	select {
	case sub.c <- evs:
	default:
		sub.dropped.Add(int64(len(evs)))
		if sub.h.onDrop != nil {
			sub.h.onDrop(len(evs))
		}
	}
}

func (h *hub) watched(tenant uuid.UUID) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.subs[tenant]) > 0
}

// remote fetches the latest values other nodes committed for watched tenants (devices
// names the changed devices; tenants whole tenants; both nil: every watched tenant).
func (h *hub) remote(s *Service, devices []devicePair, tenants []uuid.UUID) {
	set := map[uuid.UUID]bool{}
	for _, d := range devices {
		set[d.tenant] = true
	}
	for _, t := range tenants {
		set[t] = true
	}
	if devices == nil && tenants == nil {
		h.mu.Lock()
		for t := range h.subs {
			set[t] = true
		}
		h.mu.Unlock()
	}
	for t := range set {
		if !h.watched(t) {
			continue
		}
		h.remoteMu.Lock()
		if h.remoteRun[t] {
			h.again[t] = true
			h.remoteMu.Unlock()
			continue
		}
		h.remoteRun[t] = true
		h.remoteMu.Unlock()
		go h.fetchRemote(s, t)
	}
}

// remoteOverlap re-reads a little of the past, since a transaction's updated_at is its
// start time and it may commit after a later one.
const remoteOverlap = 5 * time.Second

func (h *hub) fetchRemote(s *Service, tenant uuid.UUID) {
	for {
		h.remoteMu.Lock()
		since, ok := h.since[tenant]
		if !ok {
			since = time.Now().Add(-remoteOverlap)
		}
		sent := h.sent[tenant]
		if sent == nil {
			sent = map[seriesKey]time.Time{}
			h.sent[tenant] = sent
		}
		h.remoteMu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		rows, err := s.pool.Query(ctx, `SELECT device_id, metric, ts, value, updated_at FROM readings_latest
			WHERE tenant_id = $1 AND updated_at >= $2 ORDER BY updated_at`, tenant, since.Add(-remoteOverlap))
		var evs []Event
		var devs []uuid.UUID
		newest := since
		if err == nil {
			for rows.Next() {
				var d uuid.UUID
				var e Event
				var at time.Time
				if rows.Scan(&d, &e.Metric, &e.Time, &e.Value, &at) != nil {
					break
				}
				k := seriesKey{tenant, d, e.Metric}
				if prev, ok := sent[k]; ok && !e.Time.After(prev) {
					continue
				}
				sent[k] = e.Time
				e.DeviceID, e.Time = d.String(), e.Time.UTC()
				evs, devs = append(evs, e), append(devs, d)
				if at.After(newest) {
					newest = at
				}
			}
			rows.Close()
		}
		cancel()
		h.mu.Lock()
		for sub := range h.subs[tenant] {
			var mine []Event
			for i, e := range evs {
				if sub.device == uuid.Nil || sub.device == devs[i] {
					mine = append(mine, e)
				}
			}
			sub.send(mine)
		}
		h.mu.Unlock()
		h.remoteMu.Lock()
		h.since[tenant] = newest
		if !h.again[tenant] {
			h.remoteRun[tenant] = false
			if len(sent) > 100000 {
				delete(h.sent, tenant)
			}
			h.remoteMu.Unlock()
			return
		}
		h.again[tenant] = false
		h.remoteMu.Unlock()
	}
}

func base64RawURL(s string) ([]byte, error) { return base64.RawURLEncoding.DecodeString(s) }
