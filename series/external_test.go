package series_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stratadb/strata/internal/mqttpub"
	"github.com/stratadb/strata/internal/testsvc"
	"github.com/stratadb/strata/internal/testworld"
	"github.com/stratadb/strata/series"
)

// Two Strata nodes consume one external broker through a shared subscription: the broker
// splits the stream between them, and every message is stored exactly once.
func TestExternalBrokerSharedSubscription(t *testing.T) {
	t.Parallel()
	mq := testsvc.Mosquitto(t)
	w := testworld.New(t, series.Schema)
	url := "mqtt://" + mq.Addr
	a := startEnv(t, w, series.Config{BrokerURL: url, BrokerClientID: "node-a", NodeID: "node-a"})
	b := startEnv(t, w, series.Config{BrokerURL: url, BrokerClientID: "node-b", NodeID: "node-b"})
	d, cred, key := a.device(climate("hall"))
	eventually(t, "both nodes subscribed", func() bool { // up: the SUBACK has come
		sa, _ := a.svc.Stats(w.As(testworld.Owner), w.Tenant)
		sb, _ := b.svc.Stats(w.As(testworld.Owner), w.Tenant)
		return sa.Node.ExternalUp && sb.Node.ExternalUp
	})

	const n = 600
	ctx := context.Background()
	pub, err := mqttpub.Dial(ctx, mq.Addr, "thermo", "", "", 100)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	base := time.Now().Add(-time.Minute)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		tok := seal(t, key, reading(d.ID, base.Add(time.Duration(i)*time.Millisecond), map[string]any{"temperature": 20, "humidity": 50}))
		if err := pub.Publish(ctx, cred.Topic, tok, func(byte) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	_ = pub.Flush()
	wg.Wait()
	eventually(t, "every message stored", func() bool {
		return count(t, a, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID) >= 2*n
	})
	time.Sleep(100 * time.Millisecond)
	if got := count(t, a, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID); got != 2*n {
		t.Fatalf("%d readings stored, want %d (each message exactly once)", got, 2*n)
	}
	if got := count(t, a, `SELECT count(DISTINCT ts) FROM strata.readings WHERE device_id = $1`, d.ID); got != n {
		t.Fatalf("%d distinct messages stored, want %d", got, n)
	}
	st, err := a.svc.Stats(w.As(testworld.Viewer), w.Tenant)
	if err != nil || st.Messages != n {
		t.Fatalf("stats %+v %v", st, err)
	}
	ma, _ := metric(t, a.svc, "strata_series_messages_total")
	mb, _ := metric(t, b.svc, "strata_series_messages_total")
	if ma == 0 || mb == 0 || ma+mb != n {
		t.Fatalf("node a stored %v messages, node b %v: the broker did not split the stream", ma, mb)
	}
}

// Messages on the external broker are checked like any other: a topic naming a device of
// another tenant, or a forged token, is rejected and not stored.
func TestExternalBrokerRejects(t *testing.T) {
	t.Parallel()
	mq := testsvc.Mosquitto(t)
	e := newEnv(t, series.Config{BrokerURL: "mqtt://" + mq.Addr, BrokerClientID: "node-" + t.Name()})
	d, cred, key := e.device(climate("hall"))
	eventually(t, "subscribed", func() bool { st, _ := e.svc.Stats(e.w.As(testworld.Owner), e.w.Tenant); return st.Node.ExternalUp })
	ctx := context.Background()
	pub, err := mqttpub.Dial(ctx, mq.Addr, "mallory", "", "", 10)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	var wg sync.WaitGroup
	send := func(topic string, payload []byte) {
		wg.Add(1)
		if err := pub.Publish(ctx, topic, payload, func(byte) { wg.Done() }); err != nil {
			t.Fatal(err)
		}
	}
	now := time.Now()
	good := seal(t, key, reading(d.ID, now, map[string]any{"temperature": 20}))
	send(fmt.Sprintf("strata/%s/%s", e.w.Other, d.ID), good) // the device under another tenant's name
	send(cred.Topic, []byte("gAAAAABforgedforgedforgedforgedforgedforgedforgedforgedforgedforged"))
	send(cred.Topic, good)
	_ = pub.Flush()
	wg.Wait()
	eventually(t, "the good message", func() bool {
		return count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID) == 1
	})
	eventually(t, "one rejection counted", func() bool {
		st, _ := e.svc.Stats(e.w.As(testworld.Owner), e.w.Tenant)
		return st.Rejected[series.ReasonMalformed]+st.Rejected[series.ReasonForged] == 1
	})
	// The broker's own drop count is exported (Mosquitto reports it every second here).
	eventually(t, "the broker's drop count", func() bool {
		_, ok := metric(t, e.svc, "strata_series_external_broker_dropped")
		return ok
	})
}

// Redis Streams: entries are stored and acknowledged (XACK) only after their commit;
// invalid ones are rejected and acknowledged too (they are dealt with).
func TestRedisStreamIngest(t *testing.T) {
	t.Parallel()
	rd := testsvc.Redis(t)
	e := newEnv(t, series.Config{RedisURL: "redis://" + rd.Addr, RedisStream: "readings"})
	d, _, key := e.device(climate("kitchen"))
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	ctx := context.Background()
	now := time.Now()
	for i := range 50 {
		tok := seal(t, key, reading(d.ID, now.Add(-time.Duration(i)*time.Second), map[string]any{"temperature": float64(i)}))
		if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: "readings", Values: map[string]any{"device": d.ID, "payload": string(tok)}}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rc.XAdd(ctx, &redis.XAddArgs{Stream: "readings", Values: map[string]any{"device": d.ID, "payload": "nonsense"}}).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "50 readings stored", func() bool {
		return count(t, e, `SELECT count(*) FROM strata.readings WHERE device_id = $1`, d.ID) == 50
	})
	eventually(t, "every entry acknowledged", func() bool {
		p, err := rc.XPending(ctx, "readings", "strata").Result()
		return err == nil && p.Count == 0
	})
	st, _ := e.svc.Stats(e.w.As(testworld.Owner), e.w.Tenant)
	if st.Rejected[series.ReasonMalformed] != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// With Redis as the latest-value cache, stopping Redis loses no latest value: reads fall
// back to PostgreSQL, ingest goes on, and when Redis returns nothing stale is served.
func TestRedisStoppedLatestStillServed(t *testing.T) {
	t.Parallel()
	rd := testsvc.Redis(t)
	e := newEnv(t, series.Config{RedisURL: "redis://" + rd.Addr})
	d, _, _ := e.device(climate("bedroom"))
	ctx := e.w.As(testworld.Owner)
	ingest := func(v float64) {
		t.Helper()
		body := fmt.Sprintf(`{"device_id":%q,"timestamp":%q,"values":{"temperature":%g}}`, d.ID, time.Now().UTC().Format(time.RFC3339Nano), v)
		res, err := e.svc.Ingest(ctx, e.w.Tenant, items(t, body), nil)
		if err != nil || res.Accepted != 1 {
			t.Fatalf("ingest: %+v %v", res, err)
		}
	}
	latest := func() float64 {
		t.Helper()
		l, err := e.svc.LatestDevice(ctx, e.w.Tenant, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if len(l.Values) != 1 {
			t.Fatalf("latest %+v", l)
		}
		return l.Values[0].Value
	}
	ingest(1)
	if latest() != 1 {
		t.Fatal("latest")
	}
	hits, _ := e.svc.CacheStats()
	latest()
	if h, _ := e.svc.CacheStats(); h <= hits {
		t.Fatal("the second read was not served by Redis")
	}
	rd.Stop()
	if v := latest(); v != 1 {
		t.Fatalf("with Redis down: %v", v)
	}
	ingest(2) // committed; Redis cannot be told
	if v := latest(); v != 2 {
		t.Fatalf("with Redis down, after a new reading: %v", v)
	}
	rd.Start() // an empty Redis again (no persistence)
	ingest(3)
	eventually(t, "the newest value, Redis back", func() bool { return latest() == 3 })
	for range 5 {
		if v := latest(); v != 3 {
			t.Fatalf("stale value after Redis came back: %v", v)
		}
	}
}
