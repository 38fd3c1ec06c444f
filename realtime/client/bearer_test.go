package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/auth"
	"tidings/data/datatest"
	"tidings/realtime/client"
	"tidings/web"
	"tidings/web/webtest"
)

// bearerNode starts a node whose sessions rotate and keep their grace as given.
func bearerNode(t *testing.T, rotate, grace time.Duration) string {
	t.Helper()
	n, err := webtest.Start(datatest.NewPool(t), webtest.Options{Web: web.Config{Dev: true}, Auth: auth.Config{Rotate: rotate, Grace: grace}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Stop)
	return n.URL
}

// recorder keeps what a client reports, each kind on a channel of its own.
type recorder struct {
	tokens   chan string
	sessions chan client.Session
	closes   chan string
	notices  chan string
}

func newRecorder() *recorder {
	return &recorder{tokens: make(chan string, 64), sessions: make(chan client.Session, 1024),
		closes: make(chan string, 1024), notices: make(chan string, 64)}
}

// config is a bearer client's configuration that reports to r.
func (r *recorder) config(url, token string) client.Config {
	return client.Config{URL: url, Token: token, MinBackoff: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnToken:   func(tok string) { r.tokens <- tok },
		OnSession: func(s client.Session) { r.sessions <- s },
		OnClose:   func(code int, reason string) { r.closes <- strings.TrimSpace(strconv.Itoa(code) + " " + reason) },
		OnNotice:  func(n string) { r.notices <- n },
	}
}

// sessionID is the id of a session frame's session, 0 for none.
func sessionID(t *testing.T, s client.Session) int64 {
	t.Helper()
	var a *struct{ ID int64 }
	if err := json.Unmarshal(s.Session, &a); err != nil {
		t.Fatalf("session %s: %v", s.Session, err)
	}
	if a == nil {
		return 0
	}
	return a.ID
}

// TestBearerClient: a Go program signs in with a bearer session and streams with the token; at
// rotatesAt the server hands the successor over in a token frame, then closes with 4002, and
// the client reports the token and reconnects with it onto the successor session; HTTP calls
// carry the token; logout makes the client forget it.
func TestBearerClient(t *testing.T) {
	t.Parallel()
	url := bearerNode(t, time.Second, 10*time.Second)
	ctx := context.Background()
	in, err := client.Register(ctx, nil, url, "ada", "password-ada")
	if err != nil || in.Token == "" || !strings.Contains(string(in.Session), `"name":"ada"`) || strings.Contains(string(in.Session), in.Token) {
		t.Fatalf("register: got %+v, %v", in, err)
	}
	var apiErr *client.APIError
	if _, err := client.Login(ctx, nil, url, "ada", "wrong-password"); !errors.As(err, &apiErr) || apiErr.Status != 401 || apiErr.Code != "bad-login" {
		t.Fatalf("wrong password: got %v", err)
	}
	r := newRecorder()
	c := runClient(t, r.config(url, in.Token))
	first := next(t, r.sessions, "the session frame")
	if sessionID(t, first) == 0 {
		t.Fatalf("session frame: %s", first.Session)
	}
	waitConnected(t, c)
	if _, err := c.Publish(ctx, "message", map[string]string{"text": "hi"}); err != nil {
		t.Fatalf("publish as ada: %v", err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", url+"/api/users", nil)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/users with the token: %v %v", resp, err)
	}
	resp.Body.Close()

	successor := next(t, r.tokens, "the successor at rotatesAt")
	if successor == "" || successor == in.Token {
		t.Fatalf("OnToken: got %q", successor)
	}
	if got := next(t, r.closes, "the 4002"); got != "4002 session-rotated" {
		t.Fatalf("close: got %q, want 4002 session-rotated", got)
	}
	second := next(t, r.sessions, "the reconnect's session frame")
	if id := sessionID(t, second); id == 0 || id == sessionID(t, first) || c.Token() != successor {
		t.Fatalf("after the rotation: session %s, token changed %v", second.Session, c.Token() != in.Token)
	}

	if err := c.Logout(ctx); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if got := next(t, r.tokens, "the token forgotten"); got != "" || c.Token() != "" {
		t.Fatalf("after logout: OnToken(%q), Token() %q; want both empty", got, c.Token())
	}
	if got := next(t, r.closes, "the 4003"); got != "4003 logout" {
		t.Fatalf("close: got %q, want 4003 logout", got)
	}
	if s := next(t, r.sessions, "the anonymous reconnect"); sessionID(t, s) != 0 {
		t.Fatalf("after logout: session %s, want anonymous", s.Session)
	}
	select {
	case n := <-r.notices:
		t.Fatalf("notice %q, want none", n)
	default:
	}
}

// TestBearerClientTheft: a copy of the client's old token is used after the client rotated and
// presented the successor, beyond the grace: the taker is answered session-taken; the client's
// stream closes with 4003 session-taken, and it reports the notice and forgets its token.
func TestBearerClientTheft(t *testing.T) {
	t.Parallel()
	url := bearerNode(t, time.Second, 200*time.Millisecond)
	in, err := client.Register(context.Background(), nil, url, "bea", "password-bea")
	if err != nil {
		t.Fatal(err)
	}
	r := newRecorder()
	c := runClient(t, r.config(url, in.Token))
	next(t, r.sessions, "the session frame")
	if tok := next(t, r.tokens, "the successor"); tok == "" {
		t.Fatal("OnToken(\"\") at the rotation")
	}
	next(t, r.closes, "the 4002")
	if s := next(t, r.sessions, "the successor's stream"); sessionID(t, s) == 0 {
		t.Fatal("the successor's stream is anonymous")
	}

	taker := client.New(client.Config{URL: url, Token: in.Token})
	var taken client.Session
	deadline := time.Now().Add(10 * time.Second)
	for taken.Notice == "" && time.Now().Before(deadline) { // the old token works until its grace is over
		if taken, err = taker.Session(context.Background()); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if taken.Notice != "session-taken" || taker.Token() != "" {
		t.Fatalf("the taker: got %+v, token kept %v", taken, taker.Token() != "")
	}
	if got := next(t, r.closes, "the 4003"); got != "4003 session-taken" {
		t.Fatalf("close: got %q, want 4003 session-taken", got)
	}
	if n := next(t, r.notices, "the notice"); n != "session-taken" {
		t.Fatalf("notice: got %q", n)
	}
	if tok := next(t, r.tokens, "the token forgotten"); tok != "" || c.Token() != "" {
		t.Fatalf("after the theft: OnToken(%q), Token() %q; want both empty", tok, c.Token())
	}
}

// TestBearerClientLostRotationResponse: the response that carried the successor was lost, so the
// client starts with the old token within its grace: each stream is closed with 4002 at once,
// and the client backs off (it got no successor) instead of reconnecting in a tight loop; once
// the grace is over, the upgrade gives it a fresh successor in a token frame: signed in, no
// notice.
func TestBearerClientLostRotationResponse(t *testing.T) {
	t.Parallel()
	url := bearerNode(t, 200*time.Millisecond, time.Second)
	ctx := context.Background()
	in, err := client.Register(ctx, nil, url, "cal", "password-cal")
	if err != nil {
		t.Fatal(err)
	}
	lost := client.New(client.Config{URL: url, Token: in.Token})
	deadline := time.Now().Add(10 * time.Second)
	for lost.Token() == in.Token && time.Now().Before(deadline) { // until a request rotates it
		if _, err := lost.Session(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if lost.Token() == in.Token {
		t.Fatal("the session never rotated")
	}

	r := newRecorder()
	var rotated atomic.Int32
	cfg := r.config(url, in.Token) // the old token: its successor's response was lost
	onClose := cfg.OnClose
	cfg.OnClose = func(code int, reason string) {
		if code == 4002 {
			rotated.Add(1)
		}
		onClose(code, reason)
	}
	c := runClient(t, cfg)
	fresh := next(t, r.tokens, "a fresh successor after the grace")
	if fresh == "" || fresh == lost.Token() {
		t.Fatalf("OnToken: got %q, want a fresh successor", fresh)
	}
	waitConnected(t, c)
	if _, err := c.Publish(ctx, "message", map[string]string{"text": "still me"}); err != nil {
		t.Fatalf("publish after the lost response: %v", err)
	}
	if n := rotated.Load(); n > 40 {
		t.Fatalf("%d reconnects closed with 4002 during the 1 s grace: the client did not back off", n)
	}
	select {
	case n := <-r.notices:
		t.Fatalf("notice %q after a lost response, want none", n)
	default:
	}
}

// TestBearerTokenStaysOutOfLogs: the client's logs (a bad frame ends a connection, and the
// error is logged) never show a token, and the upgrade carries it only in Authorization, never
// in its URL.
func TestBearerTokenStaysOutOfLogs(t *testing.T) {
	t.Parallel()
	const secret = "c2VjcmV0LXRva2VuLXRoYXQtbXVzdC1uZXZlci1sZWFr"
	var auths atomic.Value
	url, connections := rawServer(t, func(ctx context.Context, ws *websocket.Conn) {
		writeFrames(ctx, ws, `{"type":"session","session":{"id":1},"notice":null}`,
			`{"type":"token","token":"`+secret+`","id":"not a number"}`)
	})
	var logs strings.Builder
	var mu sync.Mutex
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), &slog.HandlerOptions{Level: slog.LevelDebug}))
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		auths.Store(r.Header.Get("Authorization") + " " + r.URL.String())
		return http.DefaultTransport.RoundTrip(r)
	})}
	runClient(t, client.Config{URL: url, Token: "first-token", HTTPClient: hc, Logger: logger, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	deadline := time.Now().Add(10 * time.Second)
	for connections.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if connections.Load() < 3 || !strings.Contains(logs.String(), "bad frame") {
		t.Fatalf("got %d connections and logs %q; want the bad frame logged and reconnects", connections.Load(), logs.String())
	}
	if strings.Contains(logs.String(), secret) || strings.Contains(logs.String(), "first-token") {
		t.Fatalf("a token is in the logs: %s", logs.String())
	}
	if got := auths.Load().(string); !strings.HasPrefix(got, "Bearer first-token ") || strings.Contains(got[len("Bearer first-token "):], "token") {
		t.Fatalf("the upgrade: got Authorization and URL %q", got)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
