package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Config configures a Client. The zero value of each field means its default.
type Config struct {
	// URL is the server's base address, http(s)://host:port (required).
	URL string
	// LastEventID is where to resume; nil starts live from the server's watermark.
	LastEventID *int64
	// HTTPClient makes the upgrade requests and session calls; its Jar holds the session
	// cookie. Default: a client with a fresh cookie jar.
	HTTPClient *http.Client
	// Token, when set, is a bearer session's token (from Register or Login, or from where the
	// program stored it): the client sends it as Authorization: Bearer on every upgrade and
	// HTTP call instead of a session cookie, keeps each successor the server hands over, and
	// reports it to OnToken. Empty: the session is HTTPClient's cookie jar's, if any.
	Token string
	// OnToken is called with each new token of a bearer session: a successor the server
	// handed over (in a token frame on the stream, or in the Tidings-Session-Token header of
	// an HTTP call), and "" when the server said that the token names no session any more
	// (logout, expiry, a session taken). A desktop program persists it here, and starts from
	// it next time. Calls are made one at a time, in order, from the goroutine that learned
	// of the token: the stream's, or a caller of Do, Session or Logout.
	OnToken func(token string)
	// OnNotice is called with each notice of the server (docs/protocol.md section 4.4:
	// "session-taken"): from a session frame, or from the answer of GET /api/session, which
	// the client asks after a 4001 or 4003 close, and Session.
	OnNotice func(notice string)
	// Header is sent with each upgrade (an Origin, say).
	Header http.Header
	// MinBackoff and MaxBackoff bound the wait between reconnections (defaults 100ms and 10s);
	// each wait is drawn uniformly from zero to the current bound (full jitter).
	MinBackoff, MaxBackoff time.Duration
	// Buffer is the capacity of the Events channel (default 1,024).
	Buffer int
	// SignalTimeout bounds the wait of Signal for the server's answer (default 5s).
	SignalTimeout time.Duration
	// OnSession is called with each session frame.
	OnSession func(Session)
	// OnReset is called when the server says the client must refetch its state; events after
	// lastEventID follow. It is called once the reset is in Events, possibly before the
	// consumer of Events has had the events that preceded it.
	//
	// Deprecated: read the reset where it stands among the events instead: Events delivers it
	// as an Event with Reset set.
	OnReset func(lastEventID int64)
	// OnReady is called when a (re)connection has caught up with the log.
	OnReady func(lastEventID int64)
	// OnClose is called after each connection ends, with its close code (-1 for a network
	// failure) and reason.
	OnClose func(code int, reason string)
	// OnPresence is called with each presence frame: every online user id, ascending, sent
	// once per (re)connection of a signed-in stream, right after ready (docs/protocol.md section
	// 8). It replaces what the caller knew: changes while the client was away are not sent.
	OnPresence func(online []int64)
	// OnPresenceChange is called with each presence-change frame: userID came online or went
	// offline.
	OnPresenceChange func(userID int64, online bool)
	// OnSignal is called with each signal that reaches the stream, the client's own included.
	OnSignal func(Signal)

	// Every On… callback is called from the client's read goroutine, in the order of the
	// frames: it must not block for long (nothing is read meanwhile, pongs included), and it
	// must not call Publish, Ping or Signal, which wait for that goroutine. Events and resets
	// go through the Events channel instead, so a callback may run before the consumer of
	// Events has had the events that preceded its frame.

	// Logger receives reconnections; nil discards them.
	Logger *slog.Logger
}

// Event is one delivered event, or a reset in its place among them (Reset).
type Event struct {
	ID   int64
	Type string
	Data json.RawMessage
	Time time.Time
	// Reset marks a reset, not an event (docs/protocol.md, section 2): events after the last
	// id the client had were lost (pruned, or the log moved back), so the caller's state,
	// built from the events received before this one, must be fetched again. ID is the
	// server's watermark: a state fetched from now on reflects every event up to it, and the
	// events that follow have ids above it. Type, Data and Time are empty.
	Reset bool
}

// Session is a session frame: the account, if any, and the notice.
type Session struct {
	Session json.RawMessage // the ApiSession object, or null
	Notice  string          // "" or "session-taken"
}

// PublishError is the server's refusal of a publish (codes of docs/protocol.md section 2).
type PublishError struct {
	Code    string
	Message string
}

func (e *PublishError) Error() string {
	return "tidings: publish refused: " + e.Code + ": " + e.Message
}

// Errors of the client.
var (
	// ErrNotConnected: there is no live connection to send on.
	ErrNotConnected = errors.New("tidings: not connected")
	// ErrConnectionLost: the connection ended before the answer came; a publish may or may
	// not have been stored.
	ErrConnectionLost = errors.New("tidings: connection lost before the answer")
)

// FatalCloseError ends Run: the server closed with a code that reconnecting cannot fix.
type FatalCloseError struct {
	Code   int
	Reason string
}

func (e *FatalCloseError) Error() string {
	return fmt.Sprintf("tidings: closed with %d %q: fix the client", e.Code, e.Reason)
}

// Client holds one stream, reconnecting as needed.
type Client struct {
	// Set at construction.
	cfg    Config
	log    *slog.Logger
	events chan Event

	last atomic.Int64 // the id of the last event delivered
	refs atomic.Int64 // for unique refs

	duplicates atomic.Int64 // event frames again with the last id delivered
	outOfOrder atomic.Int64 // event frames with an id below the last delivered

	mu   sync.Mutex
	conn *conn // guarded by mu: the live connection, if any

	// The bearer session's token, when the client began with one: read at any time, changed
	// only under tokenMu, which also keeps the OnToken calls in order (swapToken).
	token   atomic.Pointer[string]
	tokenMu sync.Mutex
}

// New returns a Client; Run starts it.
func New(cfg Config) *Client {
	if cfg.HTTPClient == nil {
		jar, _ := cookiejar.New(nil)
		cfg.HTTPClient = &http.Client{Jar: jar}
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.Buffer <= 0 {
		cfg.Buffer = 1024
	}
	if cfg.SignalTimeout <= 0 {
		cfg.SignalTimeout = 5 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: log, events: make(chan Event, cfg.Buffer)}
	c.token.Store(&cfg.Token)
	c.last.Store(-1)
	if cfg.LastEventID != nil {
		c.last.Store(*cfg.LastEventID)
	}
	return c
}

// Events delivers every event, exactly once and in id order, and each reset (Event.Reset) in
// its place among them: the events received before a reset are those that came before it. It
// is closed when Run returns.
func (c *Client) Events() <-chan Event { return c.events }

// Stats counts the event frames the client dropped because the server broke its promise:
// the same id twice in a row, or an id lower than one already delivered. Both stay zero
// against a correct server; load tests check them.
type Stats struct {
	Duplicates, OutOfOrder int64
}

// Stats returns the counts of dropped frames.
func (c *Client) Stats() Stats {
	return Stats{Duplicates: c.duplicates.Load(), OutOfOrder: c.outOfOrder.Load()}
}

// LastEventID returns the id of the last event delivered (or given as the start), -1 before
// any.
func (c *Client) LastEventID() int64 { return c.last.Load() }

// Run connects and reconnects until ctx ends or the server closes with a code that
// reconnecting cannot fix (1008, 1009), then closes Events. Close codes are handled as
// docs/protocol.md says: 4002 reconnects at once; 4001 and 4003 fetch /api/session (which clears a
// dead cookie) and reconnect; 4004, 1001, 1011 and network failures back off with jitter. A
// bearer client reconnects at once after 4002 when the stream handed it a successor, and with
// backoff when it did not (the token frame was lost: the old token keeps being closed with 4002
// until its grace is over, and then gets a fresh successor).
//
// An upgrade answered with a status instead of 101 is reported to OnClose as -1 with the
// reason "upgrade refused: " and the status. A temporary one (UpgradeError.Temporary: 408, 429
// too-many-streams, every 5xx), like a dial that failed or was refused, is tried again after
// the backoff with jitter, and after the Retry-After the server gave, if any, first: it ends
// only with ctx. Any other (400, 401, 403, 404, ...) is final: Run returns it, an
// *UpgradeError.
func (c *Client) Run(ctx context.Context) error {
	defer close(c.events)
	backoff := c.cfg.MinBackoff
	for {
		start := time.Now()
		token := c.Token()
		code, reason, err := c.connectOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if c.cfg.OnClose != nil {
			c.cfg.OnClose(code, reason)
		}
		var refused *UpgradeError
		if errors.As(err, &refused) && !refused.Temporary() {
			return refused
		}
		if time.Since(start) > 10*time.Second {
			backoff = c.cfg.MinBackoff // it was a healthy connection
		}
		wait := time.Duration(0)
		switch code {
		case int(websocket.StatusPolicyViolation), int(websocket.StatusMessageTooBig):
			return &FatalCloseError{Code: code, Reason: reason}
		case 4002:
			// The session rotated: reconnect now; the upgrade carries the new cookie, or the
			// bearer token that the stream handed over.
			if c.bearer() && token != "" && c.Token() == token {
				wait = rand.N(backoff + 1)
				backoff = min(2*backoff, c.cfg.MaxBackoff)
			}
		case 4001, 4003:
			if err := c.refreshSession(ctx); err != nil {
				c.log.Warn("fetch session", "err", err)
			}
		default:
			wait = rand.N(backoff + 1)
			backoff = min(2*backoff, c.cfg.MaxBackoff)
		}
		if refused != nil {
			// The server said when to come back: the jitter spreads its clients after that.
			wait += refused.RetryAfter
		}
		c.log.Info("tidings stream closed; reconnecting", "code", code, "reason", reason, "err", err, "in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// refreshSession asks the server for the session, which rotates or clears the cookie or the
// bearer token, and says whether it was taken.
func (c *Client) refreshSession(ctx context.Context) error {
	_, err := c.Session(ctx)
	return err
}

// streamURL is the upgrade address for resuming after the last delivered id.
func (c *Client) streamURL() (string, error) {
	u, err := url.Parse(strings.TrimRight(c.cfg.URL, "/") + "/api/events")
	if err != nil {
		return "", fmt.Errorf("tidings: url: %w", err)
	}
	switch u.Scheme {
	case "http":
		u.Scheme = "ws"
	case "https":
		u.Scheme = "wss"
	}
	if last := c.last.Load(); last >= 0 {
		u.RawQuery = "lastEventId=" + strconv.FormatInt(last, 10)
	}
	return u.String(), nil
}

// PublishOption changes one Publish.
type PublishOption func(frame map[string]any)

// WithKey gives a publish an idempotency key (1 to 255 ASCII letters, digits and -._~:+/=):
// publishing again with the same key, from any connection of the same account within the
// server's key window (a day by default), returns the first publish's id and stores nothing.
// Retry with the key after ErrConnectionLost or a PublishError with code outcome-unknown.
func WithKey(key string) PublishOption {
	return func(frame map[string]any) { frame["key"] = key }
}

// Publish sends an event over the socket and returns its id once the server stored it. A
// refusal is a *PublishError; ErrNotConnected and ErrConnectionLost say the socket was not
// there (after ErrConnectionLost, or the code outcome-unknown, the event may or may not
// exist: publish again with the same WithKey to be sure it exists once).
func (c *Client) Publish(ctx context.Context, eventType string, data any, opts ...PublishOption) (int64, error) {
	d, err := json.Marshal(data)
	if err != nil {
		return 0, fmt.Errorf("tidings: encode data: %w", err)
	}
	ref := "p" + strconv.FormatInt(c.refs.Add(1), 10)
	f := map[string]any{"type": "publish", "ref": ref, "event": map[string]any{"type": eventType, "data": json.RawMessage(d)}}
	for _, o := range opts {
		o(f)
	}
	frame, _ := json.Marshal(f)
	a, err := c.request(ctx, ref, frame)
	if err != nil {
		return 0, err
	}
	if a.Type == "error" {
		return 0, &PublishError{Code: a.Code, Message: a.Message}
	}
	return a.ID, nil
}

// Ping sends a ping frame and waits for its pong.
func (c *Client) Ping(ctx context.Context) error {
	ref := "q" + strconv.FormatInt(c.refs.Add(1), 10)
	frame, _ := json.Marshal(map[string]string{"type": "ping", "ref": ref})
	_, err := c.request(ctx, ref, frame)
	return err
}

// request sends a frame on the live connection and waits for the answer with its ref.
func (c *Client) request(ctx context.Context, ref string, frame []byte) (answer, error) {
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn == nil {
		return answer{}, ErrNotConnected
	}
	return cn.request(ctx, ref, frame)
}
