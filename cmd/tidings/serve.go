package main

import (
	"context"
	"errors"
	"fmt"
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
	"tidings/migrations"
	"tidings/realtime"
	"tidings/web"
)

// shutdownGrace is how long serve gives streams to close with 1001 before cutting them.
const shutdownGrace = 10 * time.Second

// serve runs a node until ctx ends. It listens first, answering /healthz (and /readyz 503)
// while it waits for the database (TIDINGS_DB_WAIT), then migrates it and serves. At the end it
// shuts down in order: stop accepting, close every stream with 1001 and wait for it, stop the
// hub and its listener, close the pool, stop the managed database.
func serve(ctx context.Context, cfg config, log *slog.Logger) (err error) {
	b := readBuild()
	log.Info("starting", b.attrs()...)
	if err := cfg.checkDev(); err != nil {
		return err
	}
	if cfg.dev && !loopbackAddr(cfg.addr) {
		log.Warn("DEVELOPMENT MODE ON A PUBLIC ADDRESS: the session cookie is sent without Secure, in the clear; "+
			"never do this in production", "TIDINGS_ADDR", cfg.addr, "TIDINGS_DEV", true, "TIDINGS_DEV_PUBLIC", true)
	}
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.addr, err)
	}
	maxPerAddress := cfg.maxPerAddress
	if maxPerAddress == 0 {
		maxPerAddress = -1 // no limit
	}
	webCfg := web.Config{
		AllowedOrigins: cfg.allowedOrigins,
		APIKey:         cfg.apiKey,
		Dev:            cfg.dev,

		MaxStreamsPerSession: cfg.maxPerSession,
		MaxStreamsPerAddress: maxPerAddress,
		TrustedProxies:       cfg.trustedProxies,
		AllowedHosts:         cfg.allowedHosts,
		LoopbackListener:     isLoopback(ln.Addr()),
		Build:                web.Build{Version: b.version, Commit: b.commit},
		Logger:               log,
	}
	gate := web.NewGate(webCfg)
	var front http.Handler = gate
	if cfg.accessLog {
		front = web.AccessLog(gate, log, cfg.trustedProxies)
	}
	srv := &http.Server{
		Handler:           front,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	// serveCtx ends with ctx, or when the HTTP server fails (its cause says how).
	serveCtx, failed := context.WithCancelCause(ctx)
	defer failed(nil)
	serveDone := make(chan struct{})
	go func() {
		defer close(serveDone)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			failed(fmt.Errorf("http server: %w", err))
		}
	}()
	url := "http://" + ln.Addr().String()
	log.Info("listening", "addr", ln.Addr().String(), "url", url)
	// The node's handler, once the gate is open: a shutdown closes its streams too.
	var node *web.Handler
	var shutdownOnce sync.Once
	shutdown := func() {
		shutdownOnce.Do(func() {
			shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
			defer cancel()
			var sd sync.WaitGroup
			sd.Go(func() {
				if err := srv.Shutdown(shutdownCtx); err != nil {
					srv.Close()
				}
			})
			if node != nil {
				sd.Go(func() { node.Shutdown(shutdownCtx) })
			}
			sd.Wait()
			<-serveDone
		})
	}
	defer func() {
		shutdown() // on the way out before the node served; at once otherwise
		if cause := context.Cause(serveCtx); ctx.Err() == nil && cause != nil && !errors.Is(cause, context.Canceled) {
			err = errors.Join(err, cause)
		}
	}()

	db, err := openDatabase(serveCtx, cfg, log, false)
	if err != nil {
		if serveCtx.Err() != nil {
			return nil // stopped while waiting: a clean stop, or the server's failure, which the deferred shutdown reports
		}
		return err
	}
	// Deferred before everything below, so it runs after it: the pool and the managed cluster go last.
	defer func() { err = errors.Join(err, db.close()) }()
	if err := data.Migrate(serveCtx, db.pool, migrations.FS, log); err != nil {
		if serveCtx.Err() != nil {
			return nil
		}
		return err
	}
	pool := db.pool

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		data.NewPoolCollector(pool))
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	events := data.NewEvents(pool)
	rtMetrics := realtime.NewMetrics(reg)
	hub := realtime.NewHub(events, realtime.HubConfig{Logger: log, Metrics: rtMetrics})
	presenceStore, err := data.NewPresence(serveCtx, pool)
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
		stop, err := serveAside(cfg.metricsAddr, metrics, cfg.pprofAddr != "", log)
		if err != nil {
			return err
		}
		defer stop()
	} else if cfg.pprofAddr != "" {
		stop, err := serveAside(cfg.pprofAddr, nil, true, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	node = web.NewHandler(deps, webCfg)
	gate.Open(node)
	log.Info("ready", "url", url)

	<-serveCtx.Done()
	log.Info("shutting down")
	shutdown() // first: the deferred calls below stop the hub, the pool and the managed database
	log.Info("stopped accepting; streams closed")
	return nil
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

// prune deletes events older than retention (docs/protocol.md section 5). Nodes take turns through
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
func serveAside(addr string, metrics http.Handler, pprofOn bool, log *slog.Logger) (stop func(), err error) {
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
		log.Info("metrics listening", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String()+"/metrics")
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
