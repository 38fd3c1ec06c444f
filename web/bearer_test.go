package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/auth"
	"tidings/web"
)

// app holds a bearer session, as an app on another origin, a desktop wrapper or a backend
// does: no cookie jar, its token in hand (docs/protocol.md, "Bearer sessions").
type app struct {
	t      *testing.T
	s      *testServer
	token  string
	origin string // sent as Origin when set
	client *http.Client
}

func (s *testServer) app(t *testing.T, origin string) *app {
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	return &app{t: t, s: s, origin: origin, client: &http.Client{Transport: transport}}
}

// do sends a JSON request with the app's token and Origin, and returns the status, the body and
// the response.
func (a *app) do(method, path string, body any) (int, []byte, *http.Response) {
	a.t.Helper()
	h := http.Header{}
	if a.token != "" {
		h.Set("Authorization", "Bearer "+a.token)
	}
	if a.origin != "" {
		h.Set("Origin", a.origin)
	}
	return doJSON(a.t, a.client, method, a.s.URL+path, body, h)
}

// signedIn is the answer of a bearer register or login.
type signedIn struct {
	apiSession
	Token string `json:"token"`
}

// signIn registers (or logs in, at path) name asking for a bearer session, checks that no session
// cookie was set, and keeps the token.
func (a *app) signIn(path, name string, want int) signedIn {
	a.t.Helper()
	code, body, resp := a.do("POST", path, map[string]any{"name": name, "password": "password-" + name, "bearer": true})
	if code != want {
		a.t.Fatalf("bearer %s %s: got %d %s", path, name, code, body)
	}
	var in signedIn
	json.Unmarshal(body, &in)
	if in.Token == "" || in.Account == nil || in.Account.Name != name {
		a.t.Fatalf("bearer %s %s: got %s", path, name, body)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "tidings-session" {
			a.t.Fatalf("bearer %s set a session cookie", path)
		}
	}
	if !strings.Contains(strings.Join(resp.Header.Values("Set-Cookie"), ";"), "tidings-device=") {
		a.t.Fatalf("bearer %s set no device cookie", path)
	}
	a.token = in.Token
	return in
}

// tokenHeader is the Tidings-Session-Token of a response: its value, and whether it was there.
func tokenHeader(resp *http.Response) (string, bool) {
	v, ok := resp.Header[web.TokenHeader]
	if !ok || len(v) != 1 {
		return "", ok
	}
	return v[0], true
}

// session asks GET /api/session with the token, and keeps what the answer hands over, as a
// client does: the successor, or nothing when told to forget the token.
func (a *app) session() (sessionAnswer, *http.Response) {
	a.t.Helper()
	code, body, resp := a.do("GET", "/api/session", nil)
	if code != 200 {
		a.t.Fatalf("session: got %d %s", code, body)
	}
	if v, ok := tokenHeader(resp); ok {
		a.token = v
	}
	var s sessionAnswer
	json.Unmarshal(body, &s)
	return s, resp
}

// dial opens a stream with the token offered as a subprotocol, as a browser does, and checks
// that the server selected tidings.
func (a *app) dial(query string) *client {
	a.t.Helper()
	c, err := a.tryDial(query, nil)
	if err != nil {
		a.t.Fatalf("dial: %v", err)
	}
	return c
}

func (a *app) tryDial(query string, opts *websocket.DialOptions) (*client, error) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts == nil {
		opts = &websocket.DialOptions{}
	}
	opts.HTTPClient = a.client
	opts.Subprotocols = []string{"tidings", "tidings-bearer." + a.token}
	if a.origin != "" {
		opts.HTTPHeader = http.Header{"Origin": {a.origin}}
	}
	u := "ws" + strings.TrimPrefix(a.s.URL, "http") + "/api/events"
	if query != "" {
		u += "?" + query
	}
	conn, resp, err := websocket.Dial(ctx, u, opts)
	if err != nil {
		return &client{t: a.t, resp: resp}, err
	}
	a.t.Cleanup(func() { conn.CloseNow() })
	conn.SetReadLimit(1 << 24)
	if got := resp.Header.Values("Sec-WebSocket-Protocol"); len(got) != 1 || got[0] != "tidings" {
		a.t.Fatalf("selected subprotocol: got %q, want tidings", got)
	}
	return &client{t: a.t, conn: conn, resp: resp}, nil
}

// logBuffer collects a node's logs, to check that no token lands in them.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// wantNotIn fails when any of the tokens is in the logs.
func (l *logBuffer) wantNotIn(t *testing.T, tokens ...string) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, tok := range tokens {
		if tok != "" && strings.Contains(l.buf.String(), tok) {
			t.Errorf("a token is in the logs:\n%s", l.buf.String())
		}
	}
}

// TestBearerSessionEndToEnd: register and login asking for a bearer session answer the token
// and set no session cookie; the token then authenticates requests (before any cookie) and a
// stream that offers it as a subprotocol (the server selects tidings, never the token); the
// stream publishes; logout with the token closes the session's streams with 4003. No token is
// ever in a log line or echoed.
func TestBearerSessionEndToEnd(t *testing.T) {
	t.Parallel()
	var logs logBuffer
	s := newServer(t, serverOptions{web: web.Config{Logger: logs.logger()}, auth: auth.Config{Logger: logs.logger()}})
	ada := s.app(t, "")
	reg := ada.signIn("/api/auth/register", "ada", 201)
	if a, resp := ada.session(); a.Session == nil || a.Session.ID != reg.ID || a.Session.Account.Name != "ada" || a.Notice != nil {
		t.Fatalf("GET /api/session with the token: got %+v", a)
	} else if _, ok := tokenHeader(resp); ok {
		t.Fatal("a session not due for rotation handed a token over")
	}
	tokens := []string{reg.Token}

	// The token takes precedence over a cookie of another user.
	bob := s.browser(t)
	bob.register("bob")
	req, _ := http.NewRequest("GET", s.URL+"/api/session", nil)
	req.Header.Set("Authorization", "Bearer "+ada.token)
	for _, c := range bob.jar.Cookies(req.URL) {
		req.AddCookie(c)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var both sessionAnswer
	json.NewDecoder(resp.Body).Decode(&both)
	resp.Body.Close()
	if both.Session == nil || both.Session.Account.Name != "ada" {
		t.Fatalf("bearer and cookie: got %+v, want ada's session", both)
	}

	c := ada.dial("")
	if f := sessionOf(t, c.next()); f.Session == nil || f.Session.ID != reg.ID {
		t.Fatalf("session frame: got %+v", f)
	}
	c.expect("ready")
	c.send(`{"type":"publish","ref":"m1","event":{"type":"message","data":{"text":"from the app"}}}`)
	// The ack and the event come in either order: the ack leaves when the publish commits, the
	// event when the hub reads it.
	for seen := map[string]bool{}; !seen["ack"] || !seen["event"]; {
		seen[c.next().Type] = true
	}

	// A Go client may send the header on the upgrade instead, or both when they agree.
	hc := s.dial(t, "", http.Header{"Authorization": {"Bearer " + ada.token}})
	if f := sessionOf(t, hc.next()); f.Session == nil || f.Session.ID != reg.ID {
		t.Fatalf("upgrade with the header: got %+v", f)
	}

	// A second login asks for another bearer session of the same user.
	other := s.app(t, "")
	in := other.signIn("/api/auth/login", "ada", 200)
	if in.ID == reg.ID || in.Token == reg.Token {
		t.Fatalf("login: got session %d again", in.ID)
	}
	tokens = append(tokens, in.Token)

	code, body, resp := ada.do("POST", "/api/auth/logout", nil)
	if code != 204 || len(body) != 0 {
		t.Fatalf("bearer logout: got %d %s", code, body)
	}
	if v, ok := tokenHeader(resp); !ok || v != "" {
		t.Fatalf("bearer logout: got %s %q, want it empty", web.TokenHeader, v)
	}
	c.expectClose(4003, "logout")
	hc.expectClose(4003, "logout")
	if a, resp := ada.session(); a.Session != nil {
		t.Fatalf("after logout: got %+v", a)
	} else if v, ok := tokenHeader(resp); !ok || v != "" {
		t.Fatalf("after logout: got %s %q, %v; want it empty: forget the token", web.TokenHeader, v, ok)
	}
	if a, _ := other.session(); a.Session == nil {
		t.Fatal("logout ended the other bearer session of the same user")
	}
	if a := bob.session(); a.Session == nil {
		t.Fatal("the bearer logout ended the cookie's session")
	}
	logs.wantNotIn(t, tokens...)
}

// TestBearerRefusals: a bearer token from an Origin that is present and not allowed is 403 (on
// sign-in, requests and the stream); a malformed Authorization or subprotocol list is 400,
// without echoing it; one beyond the server's header limit is refused before any handler.
func TestBearerRefusals(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{AllowedOrigins: []string{"https://app.example", "tauri://localhost"}}})
	desktop := s.app(t, "tauri://localhost")
	desktop.signIn("/api/auth/register", "cleo", 201)
	token := desktop.token
	if a, resp := desktop.session(); a.Session == nil || resp.Header.Get("Access-Control-Allow-Origin") != "tauri://localhost" {
		t.Fatalf("allowed origin: got %+v, CORS %q", a, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	site := s.app(t, "https://app.example")
	site.signIn("/api/auth/login", "cleo", 200)
	site.dial("").expect("session")

	evil := s.app(t, "https://evil.example")
	evil.token = token
	for _, r := range []struct{ method, path string }{{"GET", "/api/session"}, {"GET", "/api/users"}, {"POST", "/api/auth/logout"}} {
		code, body, _ := evil.do(r.method, r.path, nil)
		if code != 403 || !strings.Contains(string(body), `"forbidden-origin"`) {
			t.Errorf("bearer %s %s from an unlisted Origin: got %d %s, want 403", r.method, r.path, code, body)
		}
	}
	if c, err := evil.tryDial("", nil); err == nil || c.resp == nil || c.resp.StatusCode != 403 {
		t.Fatalf("bearer stream from an unlisted Origin: got %v, want 403", err)
	}
	evil.token = ""
	code, body, _ := evil.do("POST", "/api/auth/login", map[string]any{"name": "cleo", "password": "password-cleo", "bearer": true})
	if code != 403 || strings.Contains(string(body), "token") {
		t.Fatalf("bearer login from an unlisted Origin: got %d %s, want 403", code, body)
	}
	if a, _ := desktop.session(); a.Session == nil {
		t.Fatal("the refused requests ended the session")
	}

	request := func(header http.Header) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", s.URL+"/api/session", nil)
		req.Header = header
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, h := range []http.Header{
		{"Authorization": {"Bearer"}},
		{"Authorization": {"Bearer " + token + "!"}},
		{"Authorization": {"Bearer " + token, "Bearer " + token}},
		{"Authorization": {"Bearer " + strings.Repeat("A", 64<<10)}},
	} {
		code, body := request(h)
		if code != 400 || !strings.Contains(body, `"invalid-authorization"`) || strings.Contains(body, token) || strings.Contains(body, "AAAA") {
			t.Errorf("Authorization %.60q: got %d %.200s, want 400 invalid-authorization without the value", h["Authorization"], code, body)
		}
	}
	if code, _ := request(http.Header{"Authorization": {"Basic Y2xlbzpwYXNz"}}); code != 200 {
		t.Errorf("another scheme (a proxy's): got %d, want it ignored", code)
	}
	if code, _ := request(http.Header{"Authorization": {"Bearer " + strings.Repeat("A", 2<<20)}}); code != 431 {
		t.Errorf("a 2 MiB Authorization: got %d, want 431 from the server's header limit", code)
	}

	for _, protocols := range [][]string{
		{"tidings-bearer." + token}, // nothing the server may select
		{"tidings", "tidings-bearer." + token, "tidings-bearer." + token},
		{"tidings", "tidings-bearer.a=b"},
		append(strings.Split(strings.Repeat("x,", 16), ","), "tidings"),
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, resp, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/api/events", &websocket.DialOptions{Subprotocols: protocols})
		cancel()
		if err == nil || resp == nil || resp.StatusCode != 400 {
			t.Errorf("subprotocols %.60q: got %v, want 400", protocols, err)
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		if !strings.Contains(string(b), `"invalid-subprotocol"`) || strings.Contains(string(b), token) {
			t.Errorf("subprotocols %.60q: got %s", protocols, b)
		}
	}
	// The header and the subprotocol naming different tokens.
	two := s.app(t, "")
	two.token = token
	if c, err := two.tryDial("", &websocket.DialOptions{HTTPHeader: http.Header{"Authorization": {"Bearer other"}}}); err == nil || c.resp.StatusCode != 400 {
		t.Errorf("two tokens: got %v, want 400", err)
	}
}
