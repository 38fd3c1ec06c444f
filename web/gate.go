package web

import (
	"net/http"
	"sync/atomic"
)

// Build names the running binary in GET /healthz. An empty field is reported as "unknown".
type Build struct {
	// Version is the module version the binary was built as, such as v1.2.0 or devel.
	Version string
	// Commit is the version-control revision it was built from, short.
	Commit string
}

// healthBody is what GET /healthz answers: the node is alive, and which binary it runs.
func healthBody(b Build) map[string]string {
	if b.Version == "" {
		b.Version = "unknown"
	}
	if b.Commit == "" {
		b.Commit = "unknown"
	}
	return map[string]string{"status": "ok", "version": b.Version, "commit": b.Commit}
}

// errStarting answers everything but /healthz while a node waits for its database.
var errStarting = &apiError{http.StatusServiceUnavailable, "starting", "the node is starting: it waits for its database"}

// Gate serves a node that listens before it can serve, while it waits for its database and
// migrates it (docs/protocol.md section 5, TIDINGS_DB_WAIT): GET /healthz answers 200 with the
// build, /readyz and every other request 503 starting; the Host check of Config.AllowedHosts
// applies as on the node. Once Open hands it the node's handler, that handler gets every
// request. A Gate is safe for concurrent use.
type Gate struct {
	// Set at construction.
	hosts hosts
	build Build

	next atomic.Pointer[http.Handler] // nil until Open
}

// NewGate returns a closed gate. It reads AllowedHosts, LoopbackListener and Build of cfg.
func NewGate(cfg Config) *Gate {
	return &Gate{hosts: newHosts(cfg.AllowedHosts, cfg.LoopbackListener), build: cfg.Build}
}

// Open hands every request from now on to h.
func (g *Gate) Open(h http.Handler) { g.next.Store(&h) }

// ServeHTTP answers as the node's handler once the gate is open, and as a starting node before.
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := g.next.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	if !g.hosts.allow(r.Host) { // before anything else (DNS rebinding)
		writeError(w, errMisdirected)
		return
	}
	withRequestID(w, r)
	if r.URL.Path == "/healthz" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		writeJSON(w, http.StatusOK, healthBody(g.build))
		return
	}
	w.Header().Set("Retry-After", "1")
	writeError(w, errStarting)
}
