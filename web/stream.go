package web

import (
	"context"
	"net/http"
	"net/url"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/julienschmidt/httprouter"

	"tidings/auth"
	"tidings/realtime"
)

// Subprotocol is the WebSocket subprotocol of docs/protocol.md version 1. SubprotocolShort names
// the same protocol: a bearer client offers it beside its token.
const Subprotocol = "tidings.v1"

// subprotocols are those the upgrade selects from, in this order: never a bearer token's.
var subprotocols = []string{Subprotocol, SubprotocolShort}

// errBadLastEventID explains the one accepted form of lastEventId.
var errBadLastEventID = badRequest("invalid-last-event-id",
	"lastEventId must be given at most once, as decimal digits from 0 to 9223372036854775807")

// ParseLastEventID reads the lastEventId parameter of a raw query string: nil when absent; an
// error when it is given more than once or is anything but ASCII decimal digits within int64.
func ParseLastEventID(rawQuery string) (*int64, error) {
	var found *int64
	for pair := range strings.SplitSeq(rawQuery, "&") {
		k, v, _ := strings.Cut(pair, "=")
		if key, err := url.QueryUnescape(k); err != nil || key != "lastEventId" {
			continue
		}
		if found != nil {
			return nil, errBadLastEventID
		}
		s, err := url.QueryUnescape(v)
		if err != nil || s == "" || len(s) > 19 {
			return nil, errBadLastEventID
		}
		for i := 0; i < len(s); i++ {
			if s[i] < '0' || s[i] > '9' {
				return nil, errBadLastEventID
			}
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, errBadLastEventID
		}
		found = &n
	}
	return found, nil
}

// events upgrades to the event stream (docs/protocol.md section 2).
func (h *Handler) events(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	after, err := ParseLastEventID(r.URL.RawQuery)
	if err != nil {
		writeError(w, err)
		return
	}
	if !h.origins.allow(r) {
		writeError(w, errBadOrigin)
		return
	}
	cred, err := h.credential(r, true)
	if err != nil {
		writeError(w, err)
		return
	}
	// With a session, the watermark is read in the transaction that resolves it: the stream
	// replays up to it, and a control event after it that names this session or user closes
	// the stream, even if the hub applied it before the stream subscribed. Without one, the
	// stream reads the watermark itself.
	var res auth.Resolution
	if cred.bearer {
		// A bearer token's successor travels in a token frame, after the session frame; a
		// dead token shows as a session frame without a session.
		res, err = h.deps.Auth.Resolve(r.Context(), cred.token)
	} else {
		res, err = h.resolveAs(w, r, cred) // a rotation's cookie rides on the 101
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var session int64
	if res.Session != nil {
		session = res.Session.ID
	}
	client := h.clientIP(r)
	release, ok := h.counts.acquire(addrKey(client, r.RemoteAddr), !client.IsLoopback(), session, h.cfg.MaxStreamsPerSession, h.cfg.MaxStreamsPerAddress)
	if !ok {
		writeError(w, errTooManyStreams)
		return
	}
	sock, err := realtime.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:       subprotocols,
		InsecureSkipVerify: true, // the origin was checked above, by our own rule
	})
	if err != nil {
		release()
		return // Accept has answered the request
	}
	opts := realtime.StreamOptions{
		SessionFrame: sessionFrame(res),
		LastEventID:  after,
	}
	if res.NewToken != "" {
		// The new cookie rode on the 101 (or the token on the token frame), but a 101 written
		// may still be lost: the successor counts as presented only once the client shows that
		// it received it (docs/protocol.md section 4.4: a lost response is never taken for a theft).
		successor := res.Session
		if cred.bearer {
			opts.TokenFrame = tokenFrame(res.NewToken)
		}
		opts.OnProven = func() {
			ctx, cancel := context.WithTimeout(h.streamCtx, 5*time.Second) // not r.Context() after Accept
			defer cancel()
			if err := h.deps.Auth.Presented(ctx, successor); err != nil {
				h.log.Warn("mark rotated session presented", "err", err)
			}
		}
	}
	if s := res.Session; s != nil {
		wm := res.Watermark
		opts.Watermark = &wm
		opts.Viewer = viewerOf(s)
		opts.Publish = h.publisherFor(s.Account)
		if res.Rotated {
			opts.CloseAtOnce = &realtime.CloseSessionRotated
		}
		opts.CloseAt, opts.CloseAtReason = s.RotatesAt, realtime.CloseSessionRotated
		if !s.ExpiresAt.After(s.RotatesAt) {
			opts.CloseAt, opts.CloseAtReason = s.ExpiresAt, realtime.CloseSessionExpired
		}
		if cred.bearer && !res.Rotated && opts.CloseAtReason == realtime.CloseSessionRotated {
			opts.FinalFrame = h.rotateBearer(cred.token, res, requestID(r.Context()))
		}
	}
	// The stream runs in a goroutine of its own, and the handler returns: net/http's
	// connection state (its 4 KiB buffers, the request, a stack grown by the request's
	// handling) is then freed, where it would otherwise stay with the socket for its whole
	// life. The request's context ends with the handler; the stream's belongs to the server.
	if !h.streams.add() { // the node is shutting down: as its other streams, going-away
		release()
		sock.Conn().Close(realtime.CloseGoingAway.Code, realtime.CloseGoingAway.Reason)
		return
	}
	remote, reqID := logAddr(client, r.RemoteAddr), requestID(r.Context())
	go func() {
		defer h.streams.done()
		defer release()
		defer func() {
			if p := recover(); p != nil { // as net/http does for a handler: log, drop the socket, go on
				h.log.Error("stream panicked", "panic", p, "stack", string(debug.Stack()), "remote", remote, "requestId", reqID)
				sock.Conn().CloseNow()
			}
		}()
		if err := h.deps.Hub.Serve(h.streamCtx, sock, h.cfg.Stream, opts); err != nil {
			h.log.Warn("stream ended", "err", err, "remote", remote, "requestId", reqID)
		}
	}()
}

// rotateBearer returns the final frame of a bearer stream: at rotatesAt the server rotates the
// session itself, and the stream hands the successor over in a token frame just before its
// 4002 close, so that the client reconnects with it. The token is the one the client holds now:
// the successor, if the upgrade rotated. When the session was rotated meanwhile by another
// request (which handed its successor over) or ended, there is no frame.
func (h *Handler) rotateBearer(presented auth.Token, res auth.Resolution, reqID string) func(context.Context) []byte {
	token := presented
	if res.NewToken != "" {
		token = res.NewToken
	}
	return func(ctx context.Context) []byte {
		next, err := h.deps.Auth.Resolve(ctx, token)
		if err != nil {
			h.log.Warn("rotate a bearer stream's session", "err", err, "requestId", reqID)
			return nil // the client comes back with its token, and the upgrade rotates it
		}
		if next.NewToken == "" {
			return nil
		}
		return tokenFrame(next.NewToken)
	}
}

// streamGroup counts the goroutines of the streams, and takes no new one once Shutdown waits
// for them. A sync.WaitGroup would not do: a stream whose handler is still upgrading may not
// Add to a WaitGroup that somebody already waits on.
type streamGroup struct {
	mu      sync.Mutex
	n       int           // guarded by mu: streams running
	closing bool          // guarded by mu: Shutdown has begun
	idle    chan struct{} // closed once closing and no stream runs
}

// add counts a stream about to start; it reports false once shutdown has begun.
func (g *streamGroup) add() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return false
	}
	g.n++
	return true
}

// done counts a stream that has ended.
func (g *streamGroup) done() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.n--; g.n == 0 && g.closing {
		close(g.idle)
	}
}

// close refuses new streams and returns a channel closed once every running one has ended.
func (g *streamGroup) close() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.closing {
		g.closing = true
		g.idle = make(chan struct{})
		if g.n == 0 {
			close(g.idle)
		}
	}
	return g.idle
}
