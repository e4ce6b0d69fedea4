package series

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stratadb/strata/internal/db"
)

// Source names an ingest path.
type Source string

// Ingest paths.
const (
	SourceMQTT   Source = "mqtt"   // the embedded broker
	SourceBroker Source = "broker" // an external MQTT broker
	SourceRedis  Source = "redis"  // a Redis stream
	SourceHTTP   Source = "http"   // HTTP batch ingest
)

// outcome is what became of a message: stored (reason ""), rejected (reason set), or not
// committed at all (err set: the service stopped first), in which case it must not be
// acknowledged.
type outcome struct {
	reason string
	err    error
}

// message is one inbound message after decoding, on its way to a commit.
type message struct {
	st       *deviceState // nil when no device could be named
	tenant   uuid.UUID    // zero when unknown
	device   uuid.UUID    // zero when unknown
	points   []point
	reason   string // rejection reason; "" when accepted
	detail   string
	source   Source
	topic    string
	payload  []byte // kept for rejected messages only (the dead-letter ring)
	dup      bool   // possibly a redelivery: skip readings already stored
	received time.Time
	ack      func(outcome) // called once, after the commit, in queue order; may be nil
	audit    *auditNote    // an audit row to write with this message (HTTP ingest: one per request)
}

func (m *message) reject(reason, detail string) {
	m.reason, m.detail, m.points = reason, detail, nil
}

var errStopped = errors.New("series: the ingest pipeline has stopped")

// pipeline is the bounded queue between receivers and the committer, and the committer.
type pipeline struct {
	s       *Service
	ch      chan *message
	post    chan *batch
	stopped chan struct{} // closed when the committer will take no more messages
	done    chan struct{} // closed when the committer and the acknowledgements have finished
	hooks   []func()      // run after each batch's acknowledgements (flush coalesced acks)

	seqMu    sync.Mutex
	seqCond  *sync.Cond
	ackedSeq uint64 // every batch up to this one is acknowledged
}

func newPipeline(s *Service) *pipeline {
	p := &pipeline{s: s, ch: make(chan *message, s.cfg.QueueSize), post: make(chan *batch, 4),
		stopped: make(chan struct{}), done: make(chan struct{})}
	p.seqCond = sync.NewCond(&p.seqMu)
	return p
}

// submit queues m, waiting while the queue is full (backpressure) until ctx ends.
func (p *pipeline) submit(ctx context.Context, m *message) error {
	select {
	case <-p.stopped: // stopping: what is queued is drained; newer messages go to their sender again
		return errStopped
	default:
	}
	select {
	case p.ch <- m:
		p.s.metrics.queued.Inc()
		return nil
	default:
	}
	p.s.metrics.queueFull.Inc()
	select {
	case p.ch <- m:
		p.s.metrics.queued.Inc()
		return nil
	case <-p.stopped:
		return errStopped
	case <-ctx.Done():
		return ctx.Err()
	}
}

// afterAcks registers fn to run after each batch's acknowledgements, on the acknowledging
// goroutine.
func (p *pipeline) afterAcks(fn func()) { p.hooks = append(p.hooks, fn) }

// batch is a group of messages committed in one transaction, numbered in the order it
// was formed.
type batch struct {
	seq    uint64
	msgs   []*message
	hasDup bool
	err    error // not committed (the service stopped first)
}

// drainTimeout bounds how long a stopping service keeps committing what it queued.
const drainTimeout = 10 * time.Second

// run forms batches and hands them to Committers committing goroutines until ctx ends,
// then drains the queue (for up to drainTimeout). Batches may commit out of order; they
// are acknowledged in order.
func (p *pipeline) run(ctx context.Context) {
	commitCtx, cancelCommits := context.WithCancel(context.Background())
	defer cancelCommits()
	go func() { // once stopping, give commits drainTimeout more
		select {
		case <-ctx.Done():
		case <-commitCtx.Done():
			return
		}
		t := time.NewTimer(drainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelCommits()
		case <-commitCtx.Done():
		}
	}()
	acked := make(chan struct{})
	go func() { p.ackLoop(); close(acked) }()
	work := make(chan *batch)
	var workers sync.WaitGroup
	for range p.s.cfg.Committers {
		workers.Go(func() {
			for b := range work {
				if b.hasDup {
					p.waitCommitted(commitCtx, b.seq-1) // see every earlier batch's rows before skipping duplicates
				}
				b.err = p.commitRetrying(commitCtx, b.msgs)
				p.post <- b
			}
		})
	}
	defer func() {
		close(work)
		workers.Wait()
		close(p.post)
		<-acked
		close(p.done)
	}()
	var seq uint64
	dispatch := func(msgs []*message) {
		seq++
		work <- &batch{seq: seq, msgs: msgs, hasDup: slices.ContainsFunc(msgs, func(m *message) bool { return m.dup })}
	}
	for {
		var first *message
		select {
		case first = <-p.ch:
		case <-ctx.Done():
			close(p.stopped)
			for commitCtx.Err() == nil { // drain
				var msgs []*message
			take:
				for len(msgs) < p.s.cfg.BatchSize {
					select {
					case m := <-p.ch:
						msgs = append(msgs, m)
					default:
						break take
					}
				}
				if len(msgs) == 0 {
					return
				}
				dispatch(msgs)
			}
			return
		}
		dispatch(p.collect(ctx, first))
	}
}

// waitCommitted waits until every batch up to seq is committed and acknowledged.
func (p *pipeline) waitCommitted(ctx context.Context, seq uint64) {
	p.seqMu.Lock()
	defer p.seqMu.Unlock()
	for p.ackedSeq < seq && ctx.Err() == nil {
		p.seqCond.Wait()
	}
}

// collect gathers messages after first until the batch holds BatchSize readings or
// FlushInterval has passed.
func (p *pipeline) collect(ctx context.Context, first *message) []*message {
	batch := []*message{first}
	rows := max(len(first.points), 1)
	limit := p.s.cfg.BatchSize
	for rows < limit { // take what is already queued without waiting
		select {
		case m := <-p.ch:
			batch = append(batch, m)
			rows += max(len(m.points), 1)
			continue
		default:
		}
		break
	}
	if rows >= limit || p.s.cfg.FlushInterval == 0 {
		return batch
	}
	timer := time.NewTimer(p.s.cfg.FlushInterval)
	defer timer.Stop()
	for rows < limit {
		select {
		case m := <-p.ch:
			batch = append(batch, m)
			rows += max(len(m.points), 1)
		case <-timer.C:
			return batch
		case <-ctx.Done():
			return batch
		}
	}
	return batch
}

// fail reports messages that were not committed: they are not acknowledged.
func (p *pipeline) fail(batch []*message, err error) {
	p.s.metrics.dropped.WithLabelValues("unacknowledged").Add(float64(len(batch)))
	for _, m := range batch {
		if m.ack != nil {
			m.ack(outcome{err: err})
		}
	}
}

// commitRetrying commits the batch, retrying while PostgreSQL is unavailable (with backoff
// up to 5s) until it succeeds or ctx ends. A batch that keeps failing for another reason is
// committed message by message, and the messages PostgreSQL refuses are rejected as
// storage errors, so one bad message cannot stall ingest.
func (p *pipeline) commitRetrying(ctx context.Context, batch []*message) error {
	backoff := 50 * time.Millisecond
	for attempt := 1; ; attempt++ {
		start := time.Now()
		err := p.s.commit(ctx, batch)
		if err == nil {
			p.s.metrics.commitSeconds.Observe(time.Since(start).Seconds())
			return nil
		}
		p.s.metrics.commitErrors.Inc()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !transient(err) && attempt >= 3 {
			p.s.log.Error("series: a batch keeps failing; committing its messages one by one", "messages", len(batch), "err", err)
			return p.isolate(ctx, batch)
		}
		if attempt == 1 || attempt%20 == 0 {
			p.s.log.Warn("series: committing readings failed; holding them and retrying", "attempt", attempt, "messages", len(batch), "err", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

func (p *pipeline) isolate(ctx context.Context, batch []*message) error {
	for _, m := range batch {
		one := []*message{m}
		if err := p.s.commit(ctx, one); err != nil {
			if transient(err) || ctx.Err() != nil {
				return p.commitRetrying(ctx, batch)
			}
			m.reject(ReasonStorage, "PostgreSQL refused the reading")
			if err := p.s.commit(ctx, one); err != nil {
				return err
			}
		}
	}
	return nil
}

// transient reports whether err may go away by itself: the database is unreachable,
// restarting, overloaded, or the transaction conflicted.
func transient(err error) bool {
	if db.IsUnavailable(err) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "40001", "40P01", "55P03", "57014", "53100", "53200", "53300", "08006":
			return true
		}
	}
	return false
}

// ackLoop runs after each commit, in batch order: it updates the latest-value cache,
// feeds live streams, then acknowledges every message of the batch (or, for a batch that
// was not committed, reports it failed).
func (p *pipeline) ackLoop() {
	pending := map[uint64]*batch{}
	next := uint64(1)
	for b := range p.post {
		pending[b.seq] = b
		for {
			b := pending[next]
			if b == nil {
				break
			}
			delete(pending, next)
			p.acknowledge(b)
			p.seqMu.Lock()
			p.ackedSeq = next
			p.seqCond.Broadcast()
			p.seqMu.Unlock()
			next++
		}
	}
}

func (p *pipeline) acknowledge(b *batch) {
	if b.err != nil {
		p.fail(b.msgs, b.err)
		return
	}
	p.s.afterCommit(b.msgs)
	now := time.Now()
	for _, m := range b.msgs {
		if m.ack != nil {
			m.ack(outcome{reason: m.reason})
		}
		p.s.metrics.lag.Observe(now.Sub(m.received).Seconds())
	}
	for _, h := range p.hooks {
		h()
	}
}
