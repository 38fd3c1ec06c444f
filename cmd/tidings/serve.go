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
	if err := cfg.checkDev(); err != nil {
		return err
	}
	if cfg.dev && !loopbackAddr(cfg.addr) {
		log.Warn("DEVELOPMENT MODE ON A PUBLIC ADDRESS: the session cookie is sent without Secure, in the clear; "+
			"never do this in production", "TIDINGS_ADDR", cfg.addr, "TIDINGS_DEV", true, "TIDINGS_DEV_PUBLIC", true)
	}
	return withDatabase(ctx, cfg, log, func(pool *pgxpool.Pool) error {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
			data.NewPoolCollector(pool))
		metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
		events := data.NewEvents(pool)
		rtMetrics := realtime.NewMetrics(reg)
		hub := realtime.NewHub(events, realtime.HubConfig{Logger: log, Metrics: rtMetrics})
		presenceStore, err := data.NewPresence(ctx, pool)
		if err != nil {
			return err
		}
		presence := realtime.NewPresence(hub, presenceStore, realtime.PresenceConfig{
			Grace: cfg.presenceGrace, Timeout: cfg.presenceWait, Logger: log, Metrics: rtMetrics,
		})
		sessions := newAuth(pool, cfg, log)
		reg.MustRegister(auth.NewCollector(sessions))
		publisher := data.NewPublisher(pool, data.PublisherConfig{})
		defer publisher.Close() // after the streams and requests that publish

		ln, err := net.Listen("tcp", cfg.addr)
		if err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.addr, err)
		}
		deps := web.Deps{
			Pool:      pool,
			Events:    events,
			Publisher: publisher,
			Hub:       hub,
			Auth:      sessions,
			Presence:  presence,
		}
		if cfg.metricsAddr == "" {
			deps.Metrics = metrics
		}
		maxPerAddress := cfg.maxPerAddress
		if maxPerAddress == 0 {
			maxPerAddress = -1 // no limit
		}
		handler := web.NewHandler(deps, web.Config{
			AllowedOrigins: cfg.allowedOrigins,
			APIKey:         cfg.apiKey,
			Dev:            cfg.dev,

			MaxStreamsPerSession: cfg.maxPerSession,
			MaxStreamsPerAddress: maxPerAddress,
			TrustedProxies:       cfg.trustedProxies,
			AllowedHosts:         cfg.allowedHosts,
			LoopbackListener:     isLoopback(ln.Addr()),
			Logger:               log,
		})
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
			if err := presence.Run(hubCtx); err != nil {
				log.Error("presence stopped", "err", err)
			}
		})
		wg.Go(func() {
			every(hubCtx, cfg.pruneInterval, func() {
				prune(hubCtx, events, cfg.retention, log)
				discard(hubCtx, sessions, log)
				discardKeys(hubCtx, publisher, log)
			})
		})
		if cfg.metricsAddr != "" {
			stop, err := serveAside(cfg.metricsAddr, metrics, cfg.pprofAddr != "", log, stdout)
			if err != nil {
				ln.Close()
				return err
			}
			defer stop()
		} else if cfg.pprofAddr != "" {
			stop, err := serveAside(cfg.pprofAddr, nil, true, log, stdout)
			if err != nil {
				ln.Close()
				return err
			}
			defer stop()
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

// serveAside serves what is not for the public on an address of its own: /metrics when
// metrics is not nil, and the runtime profiles when pprofOn. On a loopback address it answers
// only loopback Host names, so that a page of another site cannot read it by DNS rebinding.
func serveAside(addr string, metrics http.Handler, pprofOn bool, log *slog.Logger, stdout io.Writer) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s for metrics and profiles: %w", addr, err)
	}
	mux := http.NewServeMux()
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	if pprofOn {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{
		Handler:           web.RestrictHosts(mux, nil, isLoopback(ln.Addr())),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	if metrics != nil {
		fmt.Fprintf(stdout, "tidings metrics on http://%s/metrics\n", ln.Addr())
	}
	if pprofOn {
		log.Info("pprof listening", "addr", ln.Addr().String())
	}
	return func() { srv.Close(); <-done }, nil
}

// isLoopback reports whether a listener's address is a loopback one.
func isLoopback(a net.Addr) bool {
	tcp, ok := a.(*net.TCPAddr)
	return ok && tcp.IP.IsLoopback()
}
