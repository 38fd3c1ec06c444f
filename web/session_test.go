package web_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"tidings/auth"
)

// browser is one cookie jar talking to a test server.
type browser struct {
	t      *testing.T
	s      *testServer
	jar    *cookiejar.Jar
	client *http.Client
}

func (s *testServer) browser(t *testing.T) *browser {
	jar, _ := cookiejar.New(nil)
	transport := &http.Transport{}
	t.Cleanup(transport.CloseIdleConnections)
	return &browser{t: t, s: s, jar: jar, client: &http.Client{Jar: jar, Transport: transport}}
}

type apiSession struct {
	ID      int64 `json:"id"`
	Account *struct {
		ID   int64  `json:"id"`
		Name string `json:"name"`
		Type string `json:"type"`
	} `json:"account"`
	RotatesAt string `json:"rotatesAt"`
	ExpiresAt string `json:"expiresAt"`
}

type sessionAnswer struct {
	Session *apiSession `json:"session"`
	Notice  *string     `json:"notice"`
}

// do sends a JSON request and returns the status, body and response.
func (b *browser) do(method, path string, body any) (int, []byte, *http.Response) {
	b.t.Helper()
	return doJSON(b.t, b.client, method, b.s.URL+path, body, nil)
}

// doJSON sends body (nil: none) as JSON with header to url, and returns the status, the body
// read and the response.
func doJSON(t *testing.T, c *http.Client, method, url string, body any, header http.Header) (int, []byte, *http.Response) {
	t.Helper()
	var r io.Reader
	if body != nil {
		j, _ := json.Marshal(body)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, url, r)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out, resp
}

func (b *browser) register(name string) apiSession {
	b.t.Helper()
	code, body, _ := b.do("POST", "/api/auth/register", map[string]string{"name": name, "password": "password-" + name})
	if code != 201 {
		b.t.Fatalf("register %s: got %d %s", name, code, body)
	}
	var s apiSession
	json.Unmarshal(body, &s)
	return s
}

func (b *browser) login(name string) apiSession {
	b.t.Helper()
	code, body, _ := b.do("POST", "/api/auth/login", map[string]string{"name": name, "password": "password-" + name})
	if code != 200 {
		b.t.Fatalf("login %s: got %d %s", name, code, body)
	}
	var s apiSession
	json.Unmarshal(body, &s)
	return s
}

func (b *browser) session() sessionAnswer {
	b.t.Helper()
	code, body, _ := b.do("GET", "/api/session", nil)
	if code != 200 {
		b.t.Fatalf("session: got %d %s", code, body)
	}
	var a sessionAnswer
	json.Unmarshal(body, &a)
	return a
}

// cookie returns the session cookie the jar holds.
func (b *browser) cookie() string {
	u, _ := url.Parse(b.s.URL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == "tidings-session" {
			return c.Value
		}
	}
	return ""
}

// setCookie puts a session cookie into the jar.
func (b *browser) setCookie(v string) {
	u, _ := url.Parse(b.s.URL)
	b.jar.SetCookies(u, []*http.Cookie{{Name: "tidings-session", Value: v, Path: "/"}})
}

func (b *browser) stream(query string) *client {
	b.t.Helper()
	return b.s.dialAs(b.t, b.client, query)
}

func sessionOf(t *testing.T, f frame) sessionAnswer {
	t.Helper()
	if f.Type != "session" {
		t.Fatalf("got frame %+v, want session", f)
	}
	var a sessionAnswer
	json.Unmarshal(f.Session, &a.Session)
	a.Notice = f.Notice
	return a
}

func TestRegisterLoginAndSessionFrame(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	alice := s.browser(t)
	code, body, resp := alice.do("POST", "/api/auth/register", map[string]string{"name": "alice", "password": "password-alice"})
	if code != 201 {
		t.Fatalf("register: got %d %s", code, body)
	}
	setCookie := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"tidings-session=", "Path=/", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(setCookie, want) {
			t.Errorf("Set-Cookie %q lacks %q", setCookie, want)
		}
	}
	var reg apiSession
	json.Unmarshal(body, &reg)
	if reg.Account == nil || reg.Account.Name != "alice" || reg.Account.Type != "regular" || reg.ID == 0 || reg.RotatesAt == "" || reg.ExpiresAt == "" {
		t.Fatalf("register answer: %s", body)
	}
	if strings.Contains(string(body), alice.cookie()) {
		t.Fatal("the session answer contains the token")
	}
	if a := alice.session(); a.Session == nil || a.Session.ID != reg.ID || a.Notice != nil {
		t.Fatalf("GET /api/session: got %+v", a)
	}
	c := alice.stream("")
	if a := sessionOf(t, c.next()); a.Session == nil || a.Session.Account.Name != "alice" || a.Session.ID != reg.ID {
		t.Fatalf("session frame: got %+v", a)
	}

	// Wrong password and unknown name: one answer.
	stranger := s.browser(t)
	code1, body1, _ := stranger.do("POST", "/api/auth/login", map[string]string{"name": "alice", "password": "wrong-password"})
	code2, body2, _ := stranger.do("POST", "/api/auth/login", map[string]string{"name": "nobody", "password": "wrong-password"})
	if code1 != 401 || code2 != 401 || string(body1) != string(body2) {
		t.Fatalf("bad logins: got %d %s and %d %s, want one 401 body", code1, body1, code2, body2)
	}
	other := s.browser(t)
	code, body, _ = other.do("POST", "/api/auth/login", map[string]string{"name": "ALICE", "password": "password-alice"})
	var got apiSession
	json.Unmarshal(body, &got)
	if code != 200 || got.Account == nil || got.Account.ID != reg.Account.ID || got.ID == reg.ID {
		t.Fatalf("login: got %+v", got)
	}
}

func TestRegisterRefusals(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	b := s.browser(t)
	b.register("Bob")
	for _, c := range []struct {
		body map[string]string
		want int
	}{
		{map[string]string{"name": "bob", "password": "password-x"}, 409},
		{map[string]string{"name": "", "password": "password-x"}, 400},
		{map[string]string{"name": "has space", "password": "password-x"}, 400},
		{map[string]string{"name": strings.Repeat("n", 65), "password": "password-x"}, 400},
		{map[string]string{"name": "carol", "password": "short"}, 400},
		{map[string]string{"name": "carol", "password": strings.Repeat("p", 1025)}, 400},
		{map[string]string{"name": "carol"}, 400},
	} {
		if code, body, _ := s.browser(t).do("POST", "/api/auth/register", c.body); code != c.want {
			t.Errorf("%v: got %d %s, want %d", c.body, code, body, c.want)
		}
	}
	req, _ := http.NewRequest("POST", s.URL+"/api/auth/register", strings.NewReader("name=x&password=y"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if code := statusOf(t, req); code != 415 {
		t.Fatalf("form register: got %d, want 415", code)
	}
	req, _ = http.NewRequest("POST", s.URL+"/api/auth/login", strings.NewReader(`{"name":"Bob","password":"password-Bob"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "http://evil.example")
	if code := statusOf(t, req); code != 403 {
		t.Fatalf("cross-site login: got %d, want 403", code)
	}
}

// statusOf sends req and returns its status, closing the body.
func statusOf(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	s.browser(t).register("dave")
	b := s.browser(t)
	for i := range 10 {
		if code, _, _ := b.do("POST", "/api/auth/login", map[string]string{"name": "dave", "password": "wrong-password"}); code != 401 {
			t.Fatalf("failure %d: got %d, want 401", i+1, code)
		}
	}
	if code, _, _ := b.do("POST", "/api/auth/login", map[string]string{"name": "DAVE", "password": "password-dave"}); code != 429 {
		t.Fatalf("right password after 10 failures: got %d, want 429", code)
	}
}

func TestLogoutClosesStreams(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	b := s.browser(t)
	b.register("erin")
	c1, c2 := b.stream(""), b.stream("")
	sessionOf(t, c1.next())
	sessionOf(t, c2.next())
	c1.expect("ready")
	c2.expect("ready")
	code, _, resp := b.do("POST", "/api/auth/logout", nil)
	if code != 204 || !strings.Contains(resp.Header.Get("Set-Cookie"), "Max-Age=0") {
		t.Fatalf("logout: got %d, Set-Cookie %q", code, resp.Header.Get("Set-Cookie"))
	}
	c1.expectClose(4003, "logout")
	c2.expectClose(4003, "logout")
	if a := b.session(); a.Session != nil || a.Notice != nil {
		t.Fatalf("after logout: got %+v", a)
	}
}

func TestLogoutOnOneNodeClosesStreamOnAnother(t *testing.T) {
	t.Parallel()
	a := newServer(t, serverOptions{})
	b := newServer(t, serverOptions{dbURL: a.pool.Config().ConnString()})
	onA := a.browser(t)
	onA.register("frank")
	onB := b.browser(t)
	onB.setCookie(onA.cookie())
	c := onB.stream("")
	if got := sessionOf(t, c.next()); got.Session == nil || got.Session.Account.Name != "frank" {
		t.Fatalf("stream on node B: got %+v", got)
	}
	c.expect("ready")
	start := time.Now()
	onA.do("POST", "/api/auth/logout", nil)
	c.expectClose(4003, "logout")
	if d := time.Since(start); d > time.Second {
		t.Logf("closed on the other node after %v", d) // reported, not asserted: speed is for benchmarks
	}
}

func TestExpiryCloses4001(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Expire: 1500 * time.Millisecond}})
	b := s.browser(t)
	b.register("gina")
	c := b.stream("")
	a := sessionOf(t, c.next())
	if a.Session == nil {
		t.Fatal("the session expired before the stream opened; the test machine is too slow for this lifetime")
	}
	c.expect("ready")
	c.expectClose(4001, "session-expired")
	expires, _ := time.Parse(time.RFC3339, a.Session.ExpiresAt)
	if time.Now().Before(expires) {
		t.Fatalf("closed before expiresAt %v", expires)
	}
	if got := b.session(); got.Session != nil {
		t.Fatalf("after expiry: got %+v", got)
	}
}

func TestRotationCloses4002AndReconnectGetsNewCookie(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 700 * time.Millisecond, Grace: 5 * time.Second}})
	b := s.browser(t)
	b.register("hank")
	old := b.cookie()
	c := b.stream("")
	first := sessionOf(t, c.next())
	c.expect("ready")
	c.expectClose(4002, "session-rotated")

	c2 := b.stream("")
	if got := c2.resp.Header.Get("Set-Cookie"); !strings.Contains(got, "tidings-session=") {
		t.Fatalf("the reconnect's 101 set no cookie (Set-Cookie %q)", got)
	}
	second := sessionOf(t, c2.next())
	if b.cookie() == old || second.Session == nil || second.Session.ID == first.Session.ID ||
		second.Session.RotatesAt <= first.Session.RotatesAt || second.Session.Account.ID != first.Session.Account.ID {
		t.Fatalf("after rotation: got %+v, was %+v", second.Session, first.Session)
	}
	// The old cookie, within its grace, is still the same account, but its stream closes at once.
	stale := s.browser(t)
	stale.setCookie(old)
	c3 := stale.stream("")
	if got := sessionOf(t, c3.next()); got.Session == nil || got.Session.Account.Name != "hank" {
		t.Fatalf("old cookie within grace: got %+v", got)
	}
	c3.expectClose(4002, "session-rotated")
}

// TestTheft: the real user and a taker hold one cookie. The taker uses it first after it is
// due, and gets the successor; once the grace is over, the real user's old cookie reveals the
// theft: the taker's stream closes with 4003 session-taken and both are told.
func TestTheftDetected(t *testing.T) {
	t.Parallel()
	// The successor rotates a second after the taker gets it; the theft shows after 200ms.
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: time.Second, Grace: 200 * time.Millisecond}})
	real := s.browser(t)
	real.register("ivy")
	taker := s.browser(t)
	taker.setCookie(real.cookie())
	stolen := real.cookie()

	waitFor(t, "rotation due", func() bool {
		a := taker.session()
		return a.Session != nil && taker.cookie() != stolen
	})
	c := taker.stream("")
	if got := sessionOf(t, c.next()); got.Session == nil || got.Session.Account.Name != "ivy" {
		t.Fatalf("taker's stream: got %+v", got)
	}
	c.expect("ready")
	var told sessionAnswer
	waitFor(t, "grace over", func() bool {
		told = real.session()
		return told.Session == nil
	})
	if told.Notice == nil || *told.Notice != "session-taken" || real.cookie() != "" {
		t.Fatalf("real user: got %+v, cookie %q; want notice session-taken and the cookie cleared", told, real.cookie())
	}
	c.expectClose(4003, "session-taken")
	if a := taker.session(); a.Session != nil || a.Notice == nil || *a.Notice != "session-taken" {
		t.Fatalf("taker after: got %+v", a)
	}
}

// TestLostRotationResponseKeepsUserSignedIn: the response that carried the successor never
// arrived; the old cookie after the grace gets a new successor instead of a theft verdict.
func TestLostRotationResponseKeepsUserSignedIn(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 300 * time.Millisecond, Grace: 300 * time.Millisecond}})
	b := s.browser(t)
	b.register("jack")
	old := b.cookie()
	waitFor(t, "rotated", func() bool { b.session(); return b.cookie() != old })
	b.setCookie(old) // as if that response was lost
	var a sessionAnswer
	waitFor(t, "grace over", func() bool {
		a = b.session()
		return b.cookie() != old
	})
	if a.Session == nil || a.Session.Account.Name != "jack" || a.Notice != nil {
		t.Fatalf("after a lost rotation: got %+v", a)
	}
}

// TestTheftDetectedWhenTheTakerOnlyStreams: the taker's successor arrives on the 101 of a
// stream upgrade and is never presented in a request; the stream, whose client answers the
// server's ping, proves it arrived, so the real user's old cookie still reveals the theft
// rather than pass for a lost response.
func TestTheftDetectedWhenTheTakerOnlyStreams(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 500 * time.Millisecond, Grace: 200 * time.Millisecond}})
	real := s.browser(t)
	real.register("uma")
	taker := s.browser(t)
	taker.setCookie(real.cookie())
	stolen := real.cookie()
	var c *client
	waitFor(t, "a rotating upgrade", func() bool {
		c = taker.stream("")
		if taker.cookie() != stolen {
			return true
		}
		c.conn.CloseNow()
		return false
	})
	if got := sessionOf(t, c.next()); got.Session == nil {
		t.Fatalf("taker's stream: got %+v", got)
	}
	// The taker's page reads its stream, as every client does: it answers the server's ping,
	// which shows that the 101 carrying the successor arrived.
	ended := c.readOn()
	var told sessionAnswer
	waitFor(t, "grace over", func() bool {
		told = real.session()
		return told.Session == nil
	})
	if told.Notice == nil || *told.Notice != "session-taken" {
		t.Fatalf("real user: got %+v, want notice session-taken", told)
	}
	wantClose(t, <-ended, 4003, "session-taken")
}

// TestMessageCarriesTheCurrentName: a rename after the stream opened shows in later messages.
func TestMessageCarriesTheCurrentName(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	b := s.browser(t)
	id := b.register("vic").Account.ID
	c := b.stream("")
	sessionOf(t, c.next())
	c.expect("ready")
	if code, body, _ := b.do("PATCH", fmt.Sprintf("/api/users/%d", id), map[string]string{"name": "victoria"}); code != 200 {
		t.Fatalf("rename: got %d %s", code, body)
	}
	c.send(`{"type":"publish","ref":"m","event":{"type":"message","data":{"text":"hi"}}}`)
	for {
		f := c.next()
		if f.Type == "event" && eventType(t, f) == "message" {
			if !strings.Contains(string(f.Event), `"userName": "victoria"`) {
				t.Fatalf("message: got %s, want the new name", f.Event)
			}
			return
		}
	}
}
