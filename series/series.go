// Package series is Strata's device readings module: devices with MQTT credentials and
// Fernet keys, ingest from an embedded MQTT broker, an external broker (MQTT v5 shared
// subscriptions), Redis Streams and HTTP batches into one pipeline, time-partitioned
// history with per-minute and per-hour rollups, a latest-value cache (in-process or Redis)
// in front of a durable latest table, history queries, live streams and ingest statistics.
//
// Every ingest path ends in the same pipeline: a message is decrypted and validated by the
// goroutine that received it, queued (a bounded queue: when it is full, receivers block,
// which pushes back on publishers), and committed by one committer in batches (binary COPY
// into the history, upserts of rollups and latest values, rejected messages and counters,
// all in one transaction). Only after the commit is a message acknowledged: the MQTT
// PUBACK is written, the Redis stream entry is XACKed, the HTTP request answered. A crash
// at any point therefore loses nothing that was acknowledged.
package series

import (
	"cmp"
	"context"
	"crypto/rand"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"github.com/stratadb/strata/auth"
	"github.com/stratadb/strata/internal/db"
	"github.com/stratadb/strata/internal/migrate"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Schema is the series module's database schema, applied by strata.Open.
var Schema = &migrate.Module{Name: "series", FS: migrate.Dir(migrations, "migrations"), Requires: []*migrate.Module{auth.Schema}}

// Config configures the service. Zero values mean the documented defaults.
type Config struct {
	// MQTTAddr is the listen address of the embedded MQTT broker ("127.0.0.1:1883").
	// Empty means no embedded broker.
	MQTTAddr string
	// MQTTAddrOptional makes an MQTTAddr that is already in use a warning instead of an
	// error (the broker is then not started). strata serve sets it for its default address.
	MQTTAddrOptional bool
	// TopicPrefix is the first level of device topics: devices publish to
	// <prefix>/<tenant id>/<device id> (or below it). Default "strata".
	TopicPrefix string
	// BrokerURL names an external MQTT v5 broker to consume from
	// ("mqtt://user:password@host:1883", or tls://). Empty means none.
	BrokerURL string
	// BrokerGroup is the shared-subscription group on the external broker: every Strata
	// node subscribes to $share/<group>/<prefix>/+/+/# and the broker splits the stream
	// between them. Default "strata".
	BrokerGroup string
	// BrokerClientID is this node's MQTT client id on the external broker; it must be
	// stable across restarts (the broker keeps the session's unacknowledged messages for
	// it) and distinct per node. Default "strata-<host name>".
	BrokerClientID string
	// RedisURL names a Redis server ("redis://host:6379/0"). When set, latest values are
	// cached there (instead of in-process) and RedisStream is consumed. Empty means none.
	RedisURL string
	// RedisStream is the stream consumed with the consumer group "strata" when RedisURL is
	// set. Default "strata:readings".
	RedisStream string
	// QueueSize bounds the messages decoded but not yet committed. When it is full,
	// receivers wait (MQTT connections stop being read, HTTP requests wait), so memory stays
	// bounded while PostgreSQL is slow or down. Default 20000.
	QueueSize int
	// BatchSize is the number of readings that makes the committer commit at once.
	// Default 5000.
	BatchSize int
	// Committers is how many batches commit at once, each in its own transaction (and
	// connection); acknowledgements still go out in order. Default 2.
	Committers int
	// FlushInterval is how long the committer waits for a batch to fill after its first
	// message. Default 5ms.
	FlushInterval time.Duration
	// LatestTTL is how long a latest value stays cached (in-process or in Redis) after it
	// was written or read. Default 1h (seed 002's Redis TTL).
	LatestTTL time.Duration
	// CacheDevices bounds the devices whose latest values the in-process cache holds.
	// Default 100000.
	CacheDevices int
	// RawRetention, MinuteRetention and HourRetention are the default retentions of raw
	// readings, per-minute and per-hour rollups, for tenants that set none. Defaults 30,
	// 90 and 730 days. Retentions are whole days from RetentionDays.
	RawRetention, MinuteRetention, HourRetention time.Duration
	// FernetTTL is the default maximum age of a Fernet token, for tenants that set none.
	// Default 15 minutes; a negative value disables the check.
	FernetTTL time.Duration
	// MaxFuture is how far ahead of the server's clock a reading's timestamp may be.
	// Default 5 minutes.
	MaxFuture time.Duration
	// RejectsPerTenant is how many rejected messages each tenant's dead-letter ring keeps.
	// Default 1000.
	RejectsPerTenant int
	// NodeID names this node in consumer groups and notifications. Default: host name,
	// process id and a random suffix.
	NodeID string
	// Now is the clock; nil means time.Now. Tests inject one.
	Now func() time.Time
	// Logger receives warnings and lifecycle events. Nil is quiet. Payloads never reach it.
	Logger *slog.Logger
}

// RetentionDays lists the retentions, in days, a tenant may choose for each kind of data.
// Each value in use has its own partitions, so the set is small on purpose.
var RetentionDays = []int{1, 3, 7, 14, 30, 60, 90, 180, 365, 730, 1095, 1825, 3650}

func (c Config) withDefaults() Config {
	c.TopicPrefix = cmp.Or(c.TopicPrefix, "strata")
	c.BrokerGroup = cmp.Or(c.BrokerGroup, "strata")
	c.RedisStream = cmp.Or(c.RedisStream, "strata:readings")
	c.QueueSize = cmp.Or(c.QueueSize, 20000)
	c.BatchSize = cmp.Or(c.BatchSize, 5000)
	c.FlushInterval = cmp.Or(c.FlushInterval, 5*time.Millisecond)
	c.Committers = cmp.Or(c.Committers, 2)
	c.LatestTTL = cmp.Or(c.LatestTTL, time.Hour)
	c.CacheDevices = cmp.Or(c.CacheDevices, 100000)
	c.RawRetention = cmp.Or(c.RawRetention, 30*24*time.Hour)
	c.MinuteRetention = cmp.Or(c.MinuteRetention, 90*24*time.Hour)
	c.HourRetention = cmp.Or(c.HourRetention, 730*24*time.Hour)
	c.FernetTTL = cmp.Or(c.FernetTTL, 15*time.Minute)
	c.MaxFuture = cmp.Or(c.MaxFuture, 5*time.Minute)
	c.RejectsPerTenant = cmp.Or(c.RejectsPerTenant, 1000)
	if c.NodeID == "" {
		host, _ := os.Hostname()
		c.NodeID = fmt.Sprintf("%s-%d-%s", cmp.Or(host, "node"), os.Getpid(), rand.Text()[:6])
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// Validate reports the first invalid field, by name.
func (c Config) Validate() error {
	c = c.withDefaults()
	for name, d := range map[string]time.Duration{"RawRetention": c.RawRetention, "MinuteRetention": c.MinuteRetention, "HourRetention": c.HourRetention} {
		if !validKeep(int(d / (24 * time.Hour))) {
			return fmt.Errorf("series: %s %s is not one of the allowed retentions (days: %v)", name, d, RetentionDays)
		}
	}
	if c.QueueSize < 1 || c.BatchSize < 1 || c.FlushInterval < 0 || c.Committers < 1 {
		return errors.New("series: QueueSize, BatchSize, Committers and FlushInterval must be positive")
	}
	return nil
}

func validKeep(days int) bool {
	for _, d := range RetentionDays {
		if d == days {
			return true
		}
	}
	return false
}

// Service is the device readings module.
type Service struct {
	pool     *pgxpool.Pool
	auth     *auth.Service
	listener *db.Listener
	cfg      Config
	log      *slog.Logger

	registry *registry
	pipe     *pipeline
	parts    *partitions
	latest   *latestCache
	redis    *redis.Client
	live     *hub
	metrics  *metrics
	broker   *broker
	external *external
	streams  *streamConsumer

	started atomic.Bool
	mu      sync.Mutex
	stop    context.CancelFunc
	bg      sync.WaitGroup
}

// New returns the service. listener carries cache invalidations between nodes and must be
// started by the caller. Call Start to bind the embedded broker and begin ingesting, and
// Run (or Close) to stop.
func New(pool *pgxpool.Pool, authSvc *auth.Service, listener *db.Listener, cfg Config) *Service {
	cfg = cfg.withDefaults()
	s := &Service{pool: pool, auth: authSvc, listener: listener, cfg: cfg, log: cfg.Logger}
	s.metrics = newMetrics()
	s.registry = newRegistry(s)
	s.parts = newPartitions(pool, cfg.Now, s.log)
	s.live = newHub(func(n int) { s.metrics.dropped.WithLabelValues("live").Add(float64(n)) })
	if cfg.RedisURL != "" {
		if opt, err := redis.ParseURL(cfg.RedisURL); err == nil {
			opt.MaxRetries = 1
			opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = 2*time.Second, 2*time.Second, 2*time.Second
			s.redis = redis.NewClient(opt)
		} else {
			s.log.Error("series: the Redis URL is invalid; running without Redis", "err", redactErr(err))
		}
	}
	s.latest = newLatestCache(s)
	s.pipe = newPipeline(s)
	listener.Handle(notifyRegistry, s.registry.invalidate)
	listener.OnReset(s.registry.purge)
	listener.Handle(notifyCommits, s.remoteCommit)
	listener.OnReset(s.latest.flushLocal)
	return s
}

// Start prepares the partitions, binds the embedded broker (when configured) and starts
// the pipeline, the external consumers and maintenance. It returns the broker's bind
// error; external brokers and Redis are connected in the background, with retries.
func (s *Service) Start(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("series: already started")
	}
	if err := s.parts.load(ctx); err != nil {
		return fmt.Errorf("series: reading partitions: %w", err)
	}
	if err := s.maintain(ctx); err != nil {
		s.log.Warn("series: partition maintenance failed; retrying in the background", "err", err)
	}
	bg, stop := context.WithCancel(context.Background())
	s.mu.Lock()
	s.stop = stop
	s.mu.Unlock()
	if s.cfg.MQTTAddr != "" {
		b, err := startBroker(s, s.cfg.MQTTAddr)
		switch {
		case err != nil && s.cfg.MQTTAddrOptional:
			s.log.Warn("series: the embedded MQTT broker was not started", "addr", s.cfg.MQTTAddr, "err", err)
		case err != nil:
			stop()
			return fmt.Errorf("series: embedded MQTT broker on %s: %w", s.cfg.MQTTAddr, err)
		default:
			s.broker = b
			s.log.Info("embedded MQTT broker listening", "addr", b.Addr())
		}
	}
	if s.redis != nil {
		s.streams = newStreamConsumer(s) // registers its hook before the pipeline runs
	}
	s.bg.Go(func() { s.pipe.run(bg) })
	s.bg.Go(func() { s.maintenanceLoop(bg) })
	if s.cfg.BrokerURL != "" {
		ext, err := startExternal(bg, s)
		if err != nil {
			s.log.Error("series: the external MQTT broker is not usable", "err", err)
		} else {
			s.external = ext
		}
	}
	if s.streams != nil {
		s.bg.Go(func() { s.streams.run(bg) })
		s.bg.Go(func() { s.streams.acker(bg) })
		s.bg.Go(func() { s.latest.redisWriter(bg) })
		s.bg.Go(func() { s.latest.watchRedis(bg) })
	}
	return nil
}

// Run blocks until ctx ends, then stops the service like Close.
func (s *Service) Run(ctx context.Context) {
	<-ctx.Done()
	s.Close()
}

// Close stops ingesting: the broker stops accepting, consumers stop reading, queued
// messages are committed (for up to 10 seconds) and acknowledged, and background work
// ends. Messages not committed by then are not acknowledged, so their senders resend them.
func (s *Service) Close() {
	if s.broker != nil {
		s.broker.stopAccepting()
	}
	if s.external != nil {
		s.external.close()
	}
	s.mu.Lock()
	stop := s.stop
	s.stop = nil
	s.mu.Unlock()
	if stop != nil {
		stop()
	}
	s.bg.Wait()
	if s.broker != nil {
		s.broker.close()
	}
	if s.redis != nil {
		_ = s.redis.Close()
	}
}

// MQTTAddr returns the embedded broker's listen address, or "" when it is not running.
func (s *Service) MQTTAddr() string {
	if s.broker == nil {
		return ""
	}
	return s.broker.Addr()
}

// Topic returns the MQTT topic a device publishes its readings to.
func (s *Service) Topic(tenant, device string) string {
	return s.cfg.TopicPrefix + "/" + tenant + "/" + device
}

func (s *Service) now() time.Time { return s.cfg.Now() }
