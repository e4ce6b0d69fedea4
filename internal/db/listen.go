package db

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Listener holds one LISTEN connection per process and fans notifications out to
// subscribers, reconnecting with backoff when the connection drops. Notifications sent
// while it was disconnected are lost, so subscribers also register a reset callback that
// runs after every reconnect (a cache flushes itself, a waiter re-polls); and while it is
// down, Healthy reports false so caches stop trusting themselves.
type Listener struct {
	pool *pgxpool.Pool
	log  *slog.Logger

	mu       sync.Mutex
	handlers map[string][]func(payload string)
	resets   []func()
	pending  bool // a channel has a handler but no LISTEN yet
	wake     context.CancelFunc

	healthy atomic.Bool
	done    chan struct{}
	stop    context.CancelFunc
}

// NewListener returns a listener using connections configured like pool's. Start it
// with Start; Close stops it.
func NewListener(pool *pgxpool.Pool, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Listener{pool: pool, log: log, handlers: map[string][]func(string){}, done: make(chan struct{})}
}

// Handle registers fn for notifications on channel. fn runs on the listener's goroutine:
// it must be quick and must not block (signal a channel, delete a cache entry).
func (l *Listener) Handle(channel string, fn func(payload string)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, known := l.handlers[channel]; !known {
		l.pending = true
		if l.wake != nil {
			l.wake()
		}
	}
	l.handlers[channel] = append(l.handlers[channel], fn)
}

// OnReset registers fn to run after each (re)connection, when notifications may have been
// missed. It also runs on the first connection.
func (l *Listener) OnReset(fn func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.resets = append(l.resets, fn)
}

// Healthy reports whether the listener is connected and listening on every channel. A
// channel handled after the connection counts only once its LISTEN is done: a cache
// trusted before then could miss an invalidation.
func (l *Listener) Healthy() bool {
	if !l.healthy.Load() {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return !l.pending
}

// Start runs the listener until Close.
func (l *Listener) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	l.stop = cancel
	go l.run(ctx)
}

// Close stops the listener and waits for it.
func (l *Listener) Close() {
	if l.stop == nil {
		return
	}
	l.stop()
	<-l.done
}

func (l *Listener) run(ctx context.Context) {
	defer close(l.done)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := l.session(ctx)
		l.healthy.Store(false)
		if ctx.Err() != nil {
			return
		}
		l.log.Warn("notification listener disconnected; reconnecting", "err", err, "retry_in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// session connects, listens and dispatches until the connection fails or ctx ends.
func (l *Listener) session(ctx context.Context) error {
	cfg := l.pool.Config().ConnConfig.Copy()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := pgx.ConnectConfig(cctx, cfg)
	cancel()
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	listening := map[string]bool{}
	first := true
	for {
		l.mu.Lock()
		var toListen []string
		for ch := range l.handlers {
			if !listening[ch] {
				toListen = append(toListen, ch)
			}
		}
		wctx, wake := context.WithCancel(ctx)
		l.wake = wake
		l.mu.Unlock()

		for _, ch := range toListen {
			if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{ch}.Sanitize()); err != nil {
				wake()
				return err
			}
			listening[ch] = true
		}
		l.mu.Lock()
		l.pending = false
		for ch := range l.handlers {
			if !listening[ch] {
				l.pending = true // handled meanwhile: the wake makes the next round LISTEN
			}
		}
		l.mu.Unlock()
		if first {
			first = false
			l.healthy.Store(true)
			l.runResets()
		}
		n, err := conn.WaitForNotification(wctx)
		wake()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if wctx.Err() != nil && !conn.IsClosed() { // woken to LISTEN on a new channel
				continue
			}
			return err
		}
		l.dispatch(n.Channel, n.Payload)
	}
}

func (l *Listener) runResets() {
	l.mu.Lock()
	resets := append([]func(){}, l.resets...)
	l.mu.Unlock()
	for _, fn := range resets {
		fn()
	}
}

func (l *Listener) dispatch(channel, payload string) {
	l.mu.Lock()
	hs := l.handlers[channel]
	l.mu.Unlock()
	for _, fn := range hs {
		fn(payload)
	}
}
