package web

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/julienschmidt/httprouter"

	"tidings/auth"
	"tidings/data"
	"tidings/realtime"
)

// Config configures the handler. The zero value of each field means its default.
type Config struct {
	// AllowedOrigins replaces the default allowed origin (the request's own) with this list.
	AllowedOrigins []string
	// APIKey is the bearer key of POST /api/publish; empty disables that endpoint (404).
	APIKey string
	// Stream configures every WebSocket stream.
	Stream realtime.StreamConfig
	// MaxStreamsPerSession limits the streams one session holds open on a node (default
	// DefaultMaxStreamsPerSession); a negative value means no limit.
	MaxStreamsPerSession int
	// MaxStreamsPerAddress limits the streams one client address (an IPv4 address or an IPv6
	// /64, behind a trusted proxy the forwarded one) holds open on a node (default
	// DefaultMaxStreamsPerAddress); a negative value means no limit. Loopback clients are not
	// limited.
	MaxStreamsPerAddress int
	// TrustedProxies are the peers whose X-Forwarded-For or Forwarded header names the client
	// for limits and logs (ClientIP); empty: none, the client is the connection's peer.
	TrustedProxies []netip.Prefix
	// AllowedHosts are the Host values answered, "name" (any port) or "name:port"; any other
	// Host gets 421 before anything else. Empty: any Host, unless LoopbackListener.
	AllowedHosts []string
	// LoopbackListener says that the node listens on a loopback address: with AllowedHosts
	// empty, only loopback names are answered then (DNS rebinding).
	LoopbackListener bool
	// BodyTimeout bounds how long a request body may take to arrive, from the end of the
	// request's headers (default DefaultBodyTimeout). The stream's upgrade has no body.
	BodyTimeout time.Duration
	// Dev names the session cookie tidings-session, without Secure (plain http on localhost).
	Dev bool
	// Build is what GET /healthz says the node runs; zero: "unknown".
	Build Build
	// Logger receives request failures; nil discards them.
	Logger *slog.Logger
}

// Deps are what the handler serves from.
type Deps struct {
	Pool      *pgxpool.Pool
	Events    *data.Events
	Publisher *data.Publisher
	Hub       *realtime.Hub
	Auth      *auth.Manager
	// Presence answers who is online (GET /api/presence, the page); nil: nobody is.
	Presence *realtime.Presence
	// Metrics serves GET /metrics (Prometheus); nil answers 404.
	Metrics http.Handler
}

// maxBody is the largest request body read (docs/protocol.md section 5).
const maxBody = 1 << 20

// Handler serves the HTTP API and the event stream.
type Handler struct {
	// Set at construction.
	deps    Deps
	cfg     Config
	log     *slog.Logger
	origins origins
	hosts   hosts
	apiKey  [sha256.Size]byte
	counts  streamCounts
	patches patchLimits // rate limits of PATCH /api/users/:id (patchlimits.go)
	router  *httprouter.Router

	// streams owns every stream's goroutine; streamCtx ends them all on a forced shutdown.
	streams      streamGroup
	streamCtx    context.Context
	cancelStream context.CancelFunc
}

// NewHandler returns the handler of every route of docs/protocol.md that exists so far.
func NewHandler(deps Deps, cfg Config) *Handler {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Stream.Logger == nil {
		cfg.Stream.Logger = log
	}
	if cfg.MaxStreamsPerSession == 0 {
		cfg.MaxStreamsPerSession = DefaultMaxStreamsPerSession
	}
	if cfg.MaxStreamsPerAddress == 0 {
		cfg.MaxStreamsPerAddress = DefaultMaxStreamsPerAddress
	}
	if cfg.BodyTimeout <= 0 {
		cfg.BodyTimeout = DefaultBodyTimeout
	}
	h := &Handler{deps: deps, cfg: cfg, log: log, origins: newOrigins(cfg.AllowedOrigins),
		hosts: newHosts(cfg.AllowedHosts, cfg.LoopbackListener)}
	h.apiKey = sha256.Sum256([]byte(cfg.APIKey))
	h.streamCtx, h.cancelStream = context.WithCancel(context.Background())

	r := httprouter.New()
	r.HandleMethodNotAllowed = true
	r.RedirectTrailingSlash = false
	r.RedirectFixedPath = false
	r.GET("/api/last-event-id", h.lastEventID)
	r.GET("/api/events", h.events)
	r.POST("/api/publish", h.publish)
	r.POST("/api/auth/register", h.register)
	r.POST("/api/auth/login", h.login)
	r.POST("/api/auth/logout", h.logout)
	r.GET("/api/session", h.session)
	r.GET("/api/users", h.listUsers)
	r.GET("/api/presence", h.presence)
	r.GET("/api/users/:id", h.getUser)
	r.PATCH("/api/users/:id", h.patchUser)
	r.DELETE("/api/users/:id", h.deleteUser)
	r.GET("/healthz", h.healthz)
	r.GET("/readyz", h.readyz)
	if deps.Metrics != nil {
		r.Handler("GET", "/metrics", deps.Metrics)
	}
	site := newSite()
	r.GET("/", h.page(site))
	r.POST("/", h.pageForm)
	r.GET("/static/:version/*file", site.serveStatic)
	r.GET("/client/:file", newLibrary().serve)
	r.NotFound = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeError(w, errNotFound) })
	r.MethodNotAllowed = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { writeError(w, errMethod) })
	r.PanicHandler = func(w http.ResponseWriter, r *http.Request, v any) {
		log.Error("panic in handler", "path", r.URL.Path, "panic", v)
		writeError(w, errInternal)
	}
	h.router = r
	return h
}

// ServeHTTP applies the checks every request gets, then routes it.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !h.hosts.allow(r.Host) { // before anything else (DNS rebinding)
		writeError(w, errMisdirected)
		return
	}
	r = withRequestID(w, r)
	if h.cors(w, r) { // a preflight, answered; otherwise every answer below carries CORS
		return
	}
	if r.URL.Path != "/api/events" {
		// Every handler but the stream's answers within requestTimeout: the database calls
		// it makes end with this context.
		ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
		defer cancel()
		r = r.WithContext(ctx)
		if hasBody(r) {
			r.Body = bodyWithDeadline(w, r.Body, h.cfg.BodyTimeout)
		}
	}
	if r.ContentLength > maxBody {
		writeError(w, errTooLarge)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	switch r.Method {
	case http.MethodPost, http.MethodPatch, http.MethodDelete:
		if r.URL.Path != "/api/publish" {
			if !h.origins.allow(r) {
				writeError(w, errBadOrigin)
				return
			}
			// POST / is a form of the page sent before its scripts ran: pageForm reads none of it.
			if hasBody(r) && !isJSON(r.Header.Get("Content-Type")) && r.URL.Path != "/" {
				writeError(w, errUnsupportedMedia)
				return
			}
		}
	}
	h.router.ServeHTTP(w, r)
}

// requestTimeout bounds every HTTP handler except the event stream.
const requestTimeout = 15 * time.Second

type requestIDKey struct{}

// withRequestID gives the request an id for the logs, taken from a proxy's X-Request-Id when it
// sends a sane one, and says it in the answer's X-Request-Id (which AccessLog reads).
func withRequestID(w http.ResponseWriter, r *http.Request) *http.Request {
	id := r.Header.Get("X-Request-Id")
	if len(id) == 0 || len(id) > 64 || strings.ContainsFunc(id, func(c rune) bool { return c <= ' ' || c > '~' }) {
		id = newRequestID()
	}
	w.Header().Set("X-Request-Id", id)
	return r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id))
}

// requestID is the id of the request ctx belongs to, or "".
func requestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

func newRequestID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// DefaultBodyTimeout is how long a request body may take to arrive when Config.BodyTimeout is
// 0: a 1 MiB body at 100 KiB/s.
const DefaultBodyTimeout = 10 * time.Second

// deadlineBody is a request body that its connection stops reading at a deadline, so that a
// body sent a few bytes at a time cannot hold a goroutine and a descriptor for longer; a read
// past the deadline fails with errBodyTimeout. net/http lifts the deadline by itself at the
// body's end, as it starts reading ahead for the next request: the handler keeps its time.
type deadlineBody struct{ io.ReadCloser }

// bodyWithDeadline sets the connection's read deadline timeout from now and returns body.
func bodyWithDeadline(w http.ResponseWriter, body io.ReadCloser, timeout time.Duration) io.ReadCloser {
	if http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout)) != nil {
		return body // not a connection of net/http's (a test recorder)
	}
	return deadlineBody{body}
}

func (b deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		err = errBodyTimeout
	}
	return n, err
}

// hasBody reports whether the request carries a body.
func hasBody(r *http.Request) bool {
	return r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != nil && r.Body != http.NoBody)
}

// isJSON reports whether a Content-Type is application/json, with any parameters.
func isJSON(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "application/json")
}

// Shutdown closes every stream with 1001 going-away and waits for their goroutines, until ctx
// ends; then it cuts the remaining sockets and still waits for their goroutines to finish.
func (h *Handler) Shutdown(ctx context.Context) {
	h.deps.Hub.Shutdown()
	done := h.streams.close()
	select {
	case <-done:
	case <-ctx.Done():
		h.cancelStream() // cut the sockets that did not close in time
		<-done
	}
}

// lastEventID serves the safe watermark (docs/protocol.md section 1).
func (h *Handler) lastEventID(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	id, err := h.deps.Events.Watermark(r.Context())
	if err != nil {
		h.log.Error("read watermark", "requestId", requestID(r.Context()), "err", err)
		writeError(w, errUnavailable)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int64{"lastEventId": id})
}

// healthz says that the node is alive, and which binary it runs.
func (h *Handler) healthz(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	writeJSON(w, http.StatusOK, healthBody(h.cfg.Build))
}

// readyz reports whether this node can serve streams: the database answers, the hub reads the
// event log, and the listener is up.
func (h *Handler) readyz(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := h.deps.Pool.Ping(ctx); err != nil {
		writeError(w, &apiError{http.StatusServiceUnavailable, "database-unreachable", "the database does not answer"})
		return
	}
	if h.deps.Hub.Stalled() {
		writeError(w, &apiError{http.StatusServiceUnavailable, "event-log-stalled", "the node's reads of the event log fail or time out"})
		return
	}
	if !h.deps.Hub.Listening() {
		writeError(w, &apiError{http.StatusServiceUnavailable, "listener-down", "the event listener is reconnecting"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// bearerOK reports whether r carries the configured API key, compared in constant time.
func (h *Handler) bearerOK(r *http.Request) bool {
	scheme, key, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(key)))
	return subtle.ConstantTimeCompare(got[:], h.apiKey[:]) == 1
}
