package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tidings/auth"
	"tidings/data"
	"tidings/realtime"
	"tidings/web"
)

// shutdownGrace is how long serve gives streams to close with 1001 before cutting them.
const shutdownGrace = 10 * time.Second

// serve runs a node until ctx ends, then shuts down in order: stop accepting, close every
// stream with 1001 and wait for it, stop the hub and its listener, close the pool, stop the
// managed database.
func serve(ctx context.Context, cfg config, log *slog.Logger, stdout io.Writer) error {
	return withDatabase(ctx, cfg, log, func(pool *pgxpool.Pool) error {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
			data.NewPoolCollector(pool))
		events := data.NewEvents(pool)
		hub := realtime.NewHub(events, realtime.HubConfig{Logger: log, Metrics: realtime.NewMetrics(reg)})
		sessions := newAuth(pool, cfg, log)
		reg.MustRegister(auth.NewCollector(sessions))
		publisher := data.NewPublisher(pool, data.PublisherConfig{})
		defer publisher.Close() // after the streams and requests that publish
		handler := web.NewHandler(web.Deps{
			Pool:      pool,
			Events:    events,
			Publisher: publisher,
			Hub:       hub,
			Auth:      sessions,
			Metrics:   promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		}, web.Config{
			AllowedOrigins: cfg.allowedOrigins,
			APIKey:         cfg.apiKey,
			Dev:            cfg.dev,

			MaxStreamsPerSession: cfg.maxPerSession,
			MaxStreamsPerAddress: cfg.maxPerAddress,
			Logger:               log,
		})

		ln, err := net.Listen("tcp", cfg.addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.addr, err)
		}
		srv := &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			IdleTimeout:       2 * time.Minute,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}

		var wg sync.WaitGroup
		hubCtx, stopHub := context.WithCancel(context.Background())
		defer wg.Wait()
		defer stopHub()
		wg.Go(func() {
			if err := hub.Run(hubCtx); err != nil {
				log.Error("hub stopped", "err", err)
			}
		})
		wg.Go(func() {
			every(hubCtx, cfg.pruneInterval, func() {
				prune(hubCtx, events, cfg.retention, log)
				discard(hubCtx, sessions, log)
				discardKeys(hubCtx, publisher, log)
			})
		})
		if cfg.pprofAddr != "" {
			stopPprof, err := servePprof(cfg.pprofAddr, log)
			if err != nil {
				return err
			}
			defer stopPprof()
		}
		serveErr := make(chan error, 1)
		wg.Go(func() { serveErr <- srv.Serve(ln) })
		fmt.Fprintf(stdout, "tidings listening on http://%s\n", ln.Addr())

		select {
		case <-ctx.Done():
		case err := <-serveErr:
			return fmt.Errorf("http server: %w", err)
		}
		log.Info("shutting down")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
		defer cancel()
		var sd sync.WaitGroup
		sd.Go(func() {
			if err := srv.Shutdown(shutdownCtx); err != nil {
				srv.Close()
			}
		})
		sd.Go(func() { handler.Shutdown(shutdownCtx) })
		sd.Wait()
		if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		log.Info("stopped accepting; streams closed")
		return nil
	})
}

// every calls fn every interval until ctx ends.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			fn()
		}
	}
}

// prune deletes events older than retention (PROTOCOL.md section 5). Nodes take turns through
// an advisory lock inside PruneOlderThan.
func prune(ctx context.Context, events *data.Events, retention time.Duration, log *slog.Logger) {
	n, err := events.PruneOlderThan(ctx, time.Now().Add(-retention))
	switch {
	case err != nil && ctx.Err() == nil:
		log.Error("prune events", "err", err)
	case n > 0:
		log.Info("pruned events", "deleted", n)
	}
}

// discard deletes sessions past their discard time, and old login failures.
func discard(ctx context.Context, sessions *auth.Manager, log *slog.Logger) {
	n, err := sessions.Discard(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		log.Error("discard old sessions", "err", err)
	case n > 0:
		log.Info("discarded old sessions", "deleted", n)
	}
}

// discardKeys deletes idempotency keys older than their window.
func discardKeys(ctx context.Context, publisher *data.Publisher, log *slog.Logger) {
	n, err := publisher.DiscardKeys(ctx)
	switch {
	case err != nil && ctx.Err() == nil:
		log.Error("discard old idempotency keys", "err", err)
	case n > 0:
		log.Info("discarded old idempotency keys", "deleted", n)
	}
}

// newAuth is the session manager with the configured periods.
func newAuth(pool *pgxpool.Pool, cfg config, log *slog.Logger) *auth.Manager {
	return auth.NewManager(pool, auth.Config{
		Rotate: cfg.sessionRotate, Expire: cfg.sessionExpire, Grace: cfg.sessionGrace, Logger: log,
	})
}

// servePprof serves the runtime profiles on their own address, never on the public one.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("pprof: listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	log.Info("pprof listening", "addr", ln.Addr().String())
	return func() { srv.Close(); <-done }, nil
}
