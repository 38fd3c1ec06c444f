// Package webtest starts in-process tidings nodes for tests: a hub, the web handler and an
// HTTP test server, over a real PostgreSQL database.
package webtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"tidings/auth"
	"tidings/data"
	"tidings/realtime"
	"tidings/web"
)

// CheapPasswords keeps argon2id fast in tests.
var CheapPasswords = auth.PasswordParams{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// Options configure a Node. Zero fields mean: a hub that relies on notifications (it polls the
// table once an hour), CheapPasswords, any free port.
type Options struct {
	Hub  realtime.HubConfig
	Web  web.Config
	Auth auth.Config
	// Addr is where to listen, to start a node again on the address of one that stopped.
	Addr string
	// Metrics, if set, receives the hub's metrics, and /metrics serves it.
	Metrics *prometheus.Registry
	// NoListenerWait returns once the hub is ready, without waiting for its LISTEN connection.
	NoListenerWait bool
	// StoreURL, if set, is the database the hub reads the event log from and LISTENs on,
	// through a pool of its own, while the rest of the node uses the pool given to Start: a
	// test points it at a datatest.Proxy to cut the hub off alone.
	StoreURL string
	// Lag starts the hub on a LagStore (Node.Lag), so that the test can make it lag on purpose.
	Lag bool
	// Publisher configures the node's group commit.
	Publisher data.PublisherConfig
	// Presence, if set, runs the node's presence with it (docs/protocol.md section 8): presence
	// frames, signals, GET /api/presence and the page's online.
	Presence *realtime.PresenceConfig
}

// Node is one running node.
type Node struct {
	URL     string // http://Addr
	Addr    string
	Pool    *pgxpool.Pool
	Events  *data.Events
	Hub     *realtime.Hub
	Handler *web.Handler
	Auth    *auth.Manager
	// Lag is the store the hub reads through when Options.Lag was set; nil otherwise.
	Lag *LagStore
	// Presence is the node's presence when Options.Presence was set; nil otherwise.
	Presence *realtime.Presence

	stop func()
}

// Start starts a node on pool and returns once its hub is ready and listening (within 10 s).
func Start(pool *pgxpool.Pool, o Options) (*Node, error) {
	if o.Hub.Poll == 0 {
		o.Hub.Poll = time.Hour // tests prove delivery by notification, not by the safety net
	}
	if o.Auth.Password == nil {
		o.Auth.Password = &CheapPasswords
	}
	deps := web.Deps{Pool: pool, Events: data.NewEvents(pool), Publisher: data.NewPublisher(pool, o.Publisher)}
	if o.Metrics != nil {
		o.Hub.Metrics = realtime.NewMetrics(o.Metrics)
		deps.Metrics = promhttp.HandlerFor(o.Metrics, promhttp.HandlerOpts{})
	}
	var store realtime.Store = deps.Events
	var storePool *pgxpool.Pool
	if o.StoreURL != "" {
		var err error
		if storePool, err = pgxpool.New(context.Background(), o.StoreURL); err != nil {
			return nil, fmt.Errorf("open the hub's pool: %w", err)
		}
		store = data.NewEvents(storePool)
	}
	var lag *LagStore
	if o.Lag {
		lag = NewLagStore(store)
		store = lag
	}
	deps.Hub = realtime.NewHub(store, o.Hub)
	if lag != nil {
		lag.hub = deps.Hub
	}
	if o.Presence != nil {
		store, err := data.NewPresence(context.Background(), pool)
		if err != nil {
			return nil, fmt.Errorf("presence: %w", err)
		}
		deps.Presence = realtime.NewPresence(deps.Hub, store, *o.Presence)
	}
	deps.Auth = auth.NewManager(pool, o.Auth)
	n := &Node{Presence: deps.Presence, Pool: pool, Events: deps.Events, Hub: deps.Hub, Auth: deps.Auth, Handler: web.NewHandler(deps, o.Web), Lag: lag}

	srv := httptest.NewUnstartedServer(n.Handler)
	if o.Addr != "" {
		ln, err := net.Listen("tcp", o.Addr)
		if err != nil {
			return nil, fmt.Errorf("listen again on %s: %w", o.Addr, err)
		}
		srv.Listener.Close()
		srv.Listener = ln
	}
	ctx, cancel := context.WithCancel(context.Background())
	hubCtx := ctx
	if lag != nil {
		hubCtx = hubContext(ctx)
	}
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		if n.Presence != nil {
			presenceDone := make(chan struct{})
			go func() {
				defer close(presenceDone)
				n.Presence.Run(ctx)
			}()
			defer func() { <-presenceDone }()
		}
		n.Hub.Run(hubCtx)
	}()
	srv.Start()
	n.URL, n.Addr = srv.URL, srv.Listener.Addr().String()
	n.stop = func() {
		sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer scancel()
		n.Handler.Shutdown(sctx)
		srv.Close()
		deps.Publisher.Close()
		cancel()
		<-hubDone
		if storePool != nil {
			storePool.Close()
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for !isReady(n.Hub) || (!o.NoListenerWait && !n.Hub.Listening()) || (n.Presence != nil && !isClosed(n.Presence.Ready())) {
		if time.Now().After(deadline) {
			n.Stop()
			return nil, fmt.Errorf("the node's hub did not become ready and listening within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	return n, nil
}

func isReady(h *realtime.Hub) bool { return isClosed(h.Ready()) }

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// Stop closes every stream with 1001, then stops the server and the hub, and waits for all of
// it. Stopping a stopped node does nothing.
func (n *Node) Stop() {
	if n.stop != nil {
		n.stop()
		n.stop = nil
	}
}

// Watermark returns GET /api/last-event-id of the node at url.
func Watermark(hc *http.Client, url string) (int64, error) {
	resp, err := hc.Get(url + "/api/last-event-id")
	if err != nil {
		return 0, fmt.Errorf("last-event-id: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		LastEventID *int64 `json:"lastEventId"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK || body.LastEventID == nil {
		return 0, fmt.Errorf("last-event-id: got %d, %v", resp.StatusCode, err)
	}
	return *body.LastEventID, nil
}
