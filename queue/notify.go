package queue

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// notifier tells every node that queues have new runnable jobs, after the pushes that
// made them committed. A NOTIFY serializes the commits of all notifying transactions
// (PostgreSQL holds a global lock from before the commit's WAL flush until after it), so
// pushes made outside a caller's transaction do not notify in their own: the notifier
// sends one notification per queue for all the pushes that committed while its previous
// one was in flight (at most one send every 2 ms), in a transaction of its own that does
// not wait for its WAL flush.
// This process's waiters are woken at once.
type notifier struct {
	c       *Client
	mu      sync.Mutex
	pending map[string]struct{} // payloads
	kick    chan struct{}
	running atomic.Bool
}

func newNotifier(c *Client) *notifier {
	return &notifier{c: c, pending: map[string]struct{}{}, kick: make(chan struct{}, 1)}
}

// notify wakes this process's waiters on ref and has every node's woken soon.
func (c *Client) notify(ref queueRef) {
	if ref.ID == 0 {
		return
	}
	c.hub.wake(ref.ID, ref.Name)
	n := c.notifier
	p := notifyPayload(ref.ID, ref.Name)
	if !n.running.Load() { // Run is not running: send it now
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		n.send(ctx, []string{p})
		return
	}
	n.mu.Lock()
	n.pending[p] = struct{}{}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// notifyEvery spaces the notifier's sends: under a stream of single pushes, one
// notification covers the pushes of a couple of milliseconds instead of one transaction
// each (this process's own waiters are woken at once regardless).
const notifyEvery = 2 * time.Millisecond

// run sends pending notifications until ctx ends.
func (n *notifier) run(ctx context.Context) {
	n.running.Store(true)
	defer n.running.Store(false)
	for {
		select {
		case <-ctx.Done():
			n.flush(context.WithoutCancel(ctx))
			return
		case <-n.kick:
		}
		start := time.Now()
		n.flush(ctx)
		time.Sleep(time.Until(start.Add(notifyEvery)))
	}
}

func (n *notifier) flush(ctx context.Context) {
	n.mu.Lock()
	if len(n.pending) == 0 {
		n.mu.Unlock()
		return
	}
	ps := make([]string, 0, len(n.pending))
	for p := range n.pending {
		ps = append(ps, p)
	}
	clear(n.pending)
	n.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	n.send(sctx, ps)
}

// send notifies payloads in one transaction that does not wait for its WAL flush (a
// lost wake-up is covered by the pollers).
func (n *notifier) send(ctx context.Context, payloads []string) {
	_, err := n.c.pool.Exec(ctx, `SELECT set_config('synchronous_commit', 'off', true), count(pg_notify($1, p))
		FROM unnest($2::text[]) AS p`, channelJobs, payloads)
	if err != nil && ctx.Err() == nil {
		n.c.log.Debug("notifying other nodes failed; their pollers will find the jobs", "err", err)
	}
}
