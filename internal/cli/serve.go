package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/stratadb/strata"
	"github.com/stratadb/strata/internal/server"
)

func cmdServe(stdio *IO) *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "Run the platform: the HTTP API, on an embedded or external PostgreSQL",
		Long: "serve binds the HTTP listener first (so /healthz answers at once), starts or connects to " +
			"PostgreSQL, applies pending migrations, then serves the API. SIGINT or SIGTERM drains " +
			"in-flight requests and stops the embedded PostgreSQL cleanly.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := setup(cmd, stdio)
			if err != nil {
				return err
			}
			return serve(cmd.Context(), e)
		},
	}
}

func (e *env) serverConfig() (server.Config, error) {
	var c server.Config
	var err error
	if c.Addr, err = e.vals.hostPort("http-addr", false); err != nil {
		return c, err
	}
	for name, dst := range map[string]*time.Duration{
		"http-read-timeout":  &c.ReadTimeout,
		"http-write-timeout": &c.WriteTimeout,
		"http-idle-timeout":  &c.IdleTimeout,
		"shutdown-timeout":   &c.ShutdownTimeout,
	} {
		if *dst, err = e.vals.duration(name); err != nil {
			return c, err
		}
	}
	return c.WithDefaults(), nil
}

func serve(ctx context.Context, e *env) error {
	start := time.Now()
	scfg, err := e.serverConfig()
	if err != nil {
		return usageError{err}
	}
	cfg, err := e.strataConfig()
	if err != nil {
		return usageError{err}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", scfg.Addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("cannot listen on %s: the address is already in use (is another strata running? choose another with --http-addr)", scfg.Addr)
		}
		return fmt.Errorf("cannot listen on %s: %w", scfg.Addr, err)
	}
	gate := &server.Gate{}
	srv := server.NewHTTPServer(scfg, gate, e.log)
	// Requests' contexts end when a drain times out, so stuck handlers release their
	// database connections and the pool can close.
	base, cancelRequests := context.WithCancel(context.Background())
	defer cancelRequests()
	srv.BaseContext = func(net.Listener) context.Context { return base }
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	e.log.Info("listening; starting the platform", "addr", ln.Addr().String(), "version", strata.Version())

	s, err := strata.Open(ctx, cfg)
	if err != nil {
		_ = srv.Close()
		if ctx.Err() != nil {
			return nil // interrupted while starting: not a failure
		}
		return err
	}
	api := server.New(server.Deps{Pool: s.Pool(), Ready: s.Ready, Logger: e.log, Version: strata.Version(),
		Auth: s.Auth(), Audit: s.Audit(), Feed: s.Feed(), Docs: s.Docs(), Graph: s.Graph(), Search: s.Search(), Series: s.Series(),
		Queue: s.Queue(), KV: s.KV(),
		Media: s.Media()})
	gate.Set(api)
	attrs := []any{"url", "http://" + ln.Addr().String(), "docs", "http://" + ln.Addr().String() + "/docs",
		"elapsed", time.Since(start).Round(time.Millisecond)}
	if pid, dir, ok := s.Postgres(); ok {
		attrs = append(attrs, "postgres", "embedded", "postgres_pid", pid, "postgres_dir", dir)
	} else {
		attrs = append(attrs, "postgres", "external")
	}
	e.log.Info("strata is ready", attrs...)

	select {
	case <-ctx.Done():
	case err = <-served:
		e.log.Error("HTTP server stopped", "err", err)
	}
	e.log.Info("shutting down: draining requests", "timeout", scfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), scfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		e.log.Warn("requests still running at the shutdown timeout were cut off", "err", err)
		cancelRequests()
		_ = srv.Close()
	}
	cancelRequests()
	closeErr := s.Close()
	e.log.Info("stopped", "elapsed", time.Since(start).Round(time.Millisecond))
	if err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return closeErr
}
