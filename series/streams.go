package series

import (
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// streamGroup is the consumer group every node reads the stream in.
const streamGroup = "strata"

// streamConsumer reads device messages from a Redis stream in the consumer group
// "strata": each entry is delivered to one node, and acknowledged (XACK) only after its
// commit. Entries a node read but never acknowledged (it crashed) are taken over by
// another node once idle for a minute (XAUTOCLAIM), and treated as possible duplicates.
//
// An entry has the fields "device" (the device id) and "payload" (a Fernet token, or JSON
// for devices that allow plaintext); seed 002's publisher XADDs exactly that.
type streamConsumer struct {
	s     *Service
	acks  []string      // ids to acknowledge after the current batch; acknowledging goroutine only
	ackCh chan []string // to the XACK writer
}

func newStreamConsumer(s *Service) *streamConsumer {
	c := &streamConsumer{s: s, ackCh: make(chan []string, 64)}
	s.pipe.afterAcks(c.flush)
	return c
}

// claimIdle is how long an entry stays unacknowledged before another consumer takes it.
const claimIdle = time.Minute

func (c *streamConsumer) run(ctx context.Context) {
	s := c.s
	consumer := s.cfg.NodeID
	backoff := 100 * time.Millisecond
	pendingPhase := true // first re-read what this consumer read but never acknowledged
	lastClaim := time.Time{}
	for ctx.Err() == nil {
		err := s.redis.XGroupCreateMkStream(ctx, s.cfg.RedisStream, streamGroup, "0").Err()
		if err != nil && !strings.Contains(err.Error(), "BUSYGROUP") {
			c.wait(ctx, &backoff, err)
			continue
		}
		if time.Since(lastClaim) > claimIdle/2 {
			lastClaim = time.Now()
			msgs, _, err := s.redis.XAutoClaim(ctx, &redis.XAutoClaimArgs{Stream: s.cfg.RedisStream, Group: streamGroup,
				Consumer: consumer, MinIdle: claimIdle, Start: "0-0", Count: 1000}).Result()
			if err == nil {
				c.ingest(ctx, msgs, true)
			}
		}
		start := ">"
		if pendingPhase {
			start = "0"
		}
		res, err := s.redis.XReadGroup(ctx, &redis.XReadGroupArgs{Group: streamGroup, Consumer: consumer,
			Streams: []string{s.cfg.RedisStream, start}, Count: 1000, Block: time.Second}).Result()
		if err == redis.Nil { //nolint:errorlint // go-redis returns the sentinel itself
			continue
		}
		if err != nil {
			c.wait(ctx, &backoff, err)
			continue
		}
		backoff = 100 * time.Millisecond
		for _, st := range res {
			if pendingPhase && len(st.Messages) == 0 {
				pendingPhase = false
			}
			c.ingest(ctx, st.Messages, pendingPhase)
		}
	}
}

func (c *streamConsumer) wait(ctx context.Context, backoff *time.Duration, err error) {
	if ctx.Err() != nil {
		return
	}
	if *backoff >= time.Second {
		c.s.log.Warn("series: reading the Redis stream failed; retrying", "stream", c.s.cfg.RedisStream, "err", redactErr(err))
	}
	select {
	case <-ctx.Done():
	case <-time.After(*backoff):
	}
	*backoff = min(*backoff*2, 5*time.Second)
}

func (c *streamConsumer) ingest(ctx context.Context, msgs []redis.XMessage, dup bool) {
	s := c.s
	for _, x := range msgs {
		received := s.now()
		if ms, _, ok := strings.Cut(x.ID, "-"); ok { // the time Redis received it, for the token's age
			if n, err := strconv.ParseInt(ms, 10, 64); err == nil && n > 0 {
				received = time.UnixMilli(n)
			}
		}
		device, _ := x.Values["device"].(string)
		if device == "" {
			device, _ = x.Values["device_id"].(string)
		}
		payload, _ := x.Values["payload"].(string)
		if payload == "" {
			payload, _ = x.Values["data"].(string)
		}
		m := &message{source: SourceRedis, topic: s.cfg.RedisStream, received: received, dup: dup}
		st, err := s.registry.get(ctx, device)
		if err != nil {
			return // PostgreSQL is away: leave the rest pending; they are read again
		}
		if st.exists {
			m.st, m.tenant, m.device = st, st.tenant, st.id
		}
		pts, reason, detail := s.decodeMessage(st, []byte(payload), received, false)
		if reason != "" {
			m.reject(reason, detail)
			m.payload = []byte(payload)
		} else {
			m.points = pts
		}
		id := x.ID
		m.ack = func(o outcome) {
			if o.err == nil {
				c.acks = append(c.acks, id)
			}
		}
		if err := s.pipe.submit(ctx, m); err != nil {
			return
		}
	}
}

// flush hands the batch's entry ids to the XACK writer; when it is behind, they stay
// pending and are re-read (and recognized as duplicates) later.
func (c *streamConsumer) flush() {
	if len(c.acks) == 0 {
		return
	}
	select {
	case c.ackCh <- c.acks:
	default:
	}
	c.acks = nil
}

func (c *streamConsumer) acker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			for { // acknowledge what the final batches committed
				select {
				case ids := <-c.ackCh:
					actx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
					_ = c.s.redis.XAck(actx, c.s.cfg.RedisStream, streamGroup, ids...).Err()
					cancel()
				default:
					return
				}
			}
		case ids := <-c.ackCh:
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			if err := c.s.redis.XAck(actx, c.s.cfg.RedisStream, streamGroup, ids...).Err(); err != nil {
				c.s.metrics.cacheErrors.Inc()
			}
			cancel()
		}
	}
}

// redactErr keeps URLs with passwords out of logged errors.
func redactErr(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "://"); i >= 0 {
		if at := strings.Index(msg[i:], "@"); at >= 0 {
			return msg[:i+3] + "xxxxx" + msg[i+at:]
		}
	}
	return msg
}
