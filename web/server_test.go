package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/auth"
	"tidings/data"
	"tidings/data/datatest"
	"tidings/realtime"
	"tidings/web"
	"tidings/web/webtest"
)

func TestMain(m *testing.M) { datatest.Main(m) }

// testServer is one node over a fresh database.
type testServer struct {
	URL     string
	pool    *pgxpool.Pool
	events  *data.Events
	hub     *realtime.Hub
	handler *web.Handler
	auth    *auth.Manager
}

// Client returns the HTTP client of the tests' plain requests.
func (s *testServer) Client() *http.Client { return http.DefaultClient }

type serverOptions struct {
	hub   realtime.HubConfig
	web   web.Config
	auth  auth.Config
	dbURL string // share a database with another node; empty: a fresh one
	// presence, if set, runs the node's presence with it.
	presence *realtime.PresenceConfig
}

func newServer(t testing.TB, o serverOptions) *testServer {
	t.Helper()
	var pool *pgxpool.Pool
	if o.dbURL == "" {
		pool = datatest.NewPool(t)
	} else {
		var err error
		if pool, err = pgxpool.New(context.Background(), o.dbURL); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
	}
	o.web.Dev = true // plain http: the cookie jar sends tidings-session without Secure
	n, err := webtest.Start(pool, webtest.Options{Hub: o.hub, Web: o.web, Auth: o.auth, Presence: o.presence})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Stop()
		// The tests' own clients keep idle keep-alive connections; let them go.
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})
	return &testServer{URL: n.URL, pool: pool, events: n.Events, hub: n.Hub, handler: n.Handler, auth: n.Auth}
}

// waitFor polls cond, with a bound, until it holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// publish appends events in one transaction of its own and returns their ids.
func (s *testServer) publish(t *testing.T, evs ...data.NewEvent) []int64 {
	t.Helper()
	var ids []int64
	err := pgx.BeginFunc(context.Background(), s.pool, func(tx pgx.Tx) error {
		var err error
		ids, err = data.AppendEvents(context.Background(), tx, evs)
		return err
	})
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	return ids
}

// publishN appends n events of type typ, one transaction each, and returns the last id.
func (s *testServer) publishN(t *testing.T, n int, typ string) int64 {
	t.Helper()
	var last int64
	for i := range n {
		last = s.publish(t, data.NewEvent{Type: typ, Data: json.RawMessage(fmt.Sprint(i))})[0]
	}
	return last
}

// frame is any server frame.
type frame struct {
	Type        string          `json:"type"`
	ID          int64           `json:"id"`
	LastEventID int64           `json:"lastEventId"`
	Ref         *string         `json:"ref"`
	Code        string          `json:"code"`
	Message     string          `json:"message"`
	Event       json.RawMessage `json:"event"`
	Session     json.RawMessage `json:"session"`
	Notice      *string         `json:"notice"`
	Online      []int64         `json:"online"`
	Token       string          `json:"token"`
}

type client struct {
	t    *testing.T
	conn *websocket.Conn
	resp *http.Response
}

// dial opens a stream; query is the raw query string.
func (s *testServer) dial(t *testing.T, query string, header http.Header) *client {
	t.Helper()
	c, err := s.tryDial(t, query, header)
	if err != nil {
		t.Fatalf("dial ?%s: %v", query, err)
	}
	return c
}

// dialLive opens a stream with no history to replay and reads its session and ready frames.
func (s *testServer) dialLive(t *testing.T) *client {
	t.Helper()
	c := s.dial(t, "", nil)
	c.expect("session")
	c.expect("ready")
	return c
}

func (s *testServer) tryDial(t *testing.T, query string, header http.Header) (*client, error) {
	return s.tryDialAs(t, nil, query, header)
}

// dialAs opens a stream through an HTTP client (its cookie jar).
func (s *testServer) dialAs(t *testing.T, hc *http.Client, query string) *client {
	t.Helper()
	c, err := s.tryDialAs(t, hc, query, nil)
	if err != nil {
		t.Fatalf("dial ?%s: %v", query, err)
	}
	return c
}

func (s *testServer) tryDialAs(t *testing.T, hc *http.Client, query string, header http.Header) (*client, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := "ws" + strings.TrimPrefix(s.URL, "http") + "/api/events"
	if query != "" {
		u += "?" + query
	}
	opts := &websocket.DialOptions{HTTPHeader: header, Subprotocols: []string{"tidings.v1"}}
	if hc != nil {
		opts.HTTPClient = hc
	}
	conn, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		return &client{t: t, resp: resp}, err
	}
	conn.SetReadLimit(1 << 24)
	c := &client{t: t, conn: conn, resp: resp}
	t.Cleanup(func() { conn.CloseNow() })
	return c, nil
}

// next reads one frame, failing the test after 15 s.
func (c *client) next() frame {
	c.t.Helper()
	f, err := c.tryNext()
	if err != nil {
		c.t.Fatalf("read frame: %v", err)
	}
	return f
}

func (c *client) tryNext() (frame, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	typ, msg, err := c.conn.Read(ctx)
	if err != nil {
		return frame{}, err
	}
	var f frame
	if typ != websocket.MessageText {
		return f, fmt.Errorf("got a binary message")
	}
	if err := json.Unmarshal(msg, &f); err != nil {
		return f, fmt.Errorf("frame %s: %w", msg, err)
	}
	return f, nil
}

// expect reads one frame and checks its type.
func (c *client) expect(typ string) frame {
	c.t.Helper()
	f := c.next()
	if f.Type != typ {
		c.t.Fatalf("got frame %+v, want type %q", f, typ)
	}
	return f
}

// expectEvents reads event frames and checks their ids.
func (c *client) expectEvents(ids ...int64) {
	c.t.Helper()
	for _, id := range ids {
		if f := c.expect("event"); f.ID != id {
			c.t.Fatalf("got event %d, want %d", f.ID, id)
		}
	}
}

// expectClose reads until the socket closes and checks the close code and reason.
func (c *client) expectClose(code websocket.StatusCode, reason string) {
	c.t.Helper()
	for {
		_, err := c.tryNext()
		if err == nil {
			continue
		}
		var ce websocket.CloseError
		if !asCloseError(err, &ce) {
			c.t.Fatalf("got %v, want close %d", err, code)
		}
		if ce.Code != code || (reason != "" && ce.Reason != reason) {
			c.t.Fatalf("got close %d %q, want %d %q", ce.Code, ce.Reason, code, reason)
		}
		return
	}
}

func (c *client) send(msg string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.conn.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func asCloseError(err error, ce *websocket.CloseError) bool { return errors.As(err, ce) }

func webConfigStream(sc realtime.StreamConfig) web.Config { return web.Config{Stream: sc} }
