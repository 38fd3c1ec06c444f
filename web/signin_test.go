package web_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"tidings/auth"
	"tidings/web"
)

// answer is one response, read in full.
type answer struct {
	code       int
	retryAfter string
	errCode    string
	err        error
}

// postJSON sends body to path on a client of its own (it may run in any goroutine).
func (s *testServer) postJSON(path, body string) answer {
	resp, err := http.Post(s.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.Unmarshal(b, &e)
	return answer{code: resp.StatusCode, retryAfter: resp.Header.Get("Retry-After"), errCode: e.Error.Code, err: err}
}

// postAll sends n requests at once, body(i) to path, and returns their answers.
func (s *testServer) postAll(t *testing.T, n int, path string, body func(i int) string) []answer {
	t.Helper()
	out := make([]answer, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			out[i] = s.postJSON(path, body(i))
		})
	}
	close(start)
	wg.Wait()
	for _, a := range out {
		if a.err != nil {
			t.Fatalf("POST %s: %v", path, a.err)
		}
	}
	return out
}

// statuses counts answers by status, and fails the test on a 429 or 503 without Retry-After.
func statuses(t *testing.T, answers []answer) map[int]int {
	t.Helper()
	out := map[int]int{}
	for _, a := range answers {
		out[a.code]++
		if (a.code == 429 || a.code == 503) && a.retryAfter == "" {
			t.Errorf("a %d (%s) without Retry-After", a.code, a.errCode)
		}
	}
	return out
}

// TestRegisterStormForATakenName: 50 registrations of a taken name at once all get 409 and
// run no password hash (they used to hash first, 19 MiB each, and only then find the name
// taken).
func TestRegisterStormForATakenName(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	s.browser(t).register("root")
	before := s.auth.HashStats()
	got := statuses(t, s.postAll(t, 50, "/api/auth/register", func(int) string { return `{"name":"ROOT","password":"password-x"}` }))
	if got[409] != 50 {
		t.Errorf("50 registrations of a taken name: got %v, want 50 × 409", got)
	}
	if n := s.auth.HashStats().Total - before.Total; n != 0 {
		t.Errorf("hashes run: got %d, want 0", n)
	}
}

// hashGate holds every password hash of a node in its slot while closed.
type hashGate struct {
	mu   sync.Mutex
	gate chan struct{} // guarded by mu: nil while open
}

func (g *hashGate) wait() {
	g.mu.Lock()
	c := g.gate
	g.mu.Unlock()
	if c != nil {
		<-c
	}
}

func (g *hashGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.gate = make(chan struct{})
}

func (g *hashGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.gate != nil {
		close(g.gate)
		g.gate = nil
	}
}

// TestPasswordHashingIsBounded: with one slot and a queue of one, 6 registrations at once
// while the hash in the slot is held: one hashes, one waits, and 4 are answered 503 busy with
// Retry-After at once. Released, the two are 201. At no moment did two hashes run.
func TestPasswordHashingIsBounded(t *testing.T) {
	t.Parallel()
	var g hashGate
	s := newServer(t, serverOptions{auth: auth.Config{Hashing: auth.HashLimits{Slots: 1, Queue: 1, Wait: time.Hour, OnHash: g.wait}}})
	t.Cleanup(g.open) // before the server stops: it waits for the requests held
	g.close()
	answers := make(chan answer, 6)
	for i := range 6 {
		go func() {
			answers <- s.postJSON("/api/auth/register", fmt.Sprintf(`{"name":"user%d","password":"password-x"}`, i))
		}()
	}
	var got []answer
	deadline := time.After(15 * time.Second)
	for range 4 {
		select {
		case a := <-answers:
			got = append(got, a)
		case <-deadline:
			t.Fatalf("timed out waiting for 4 answers while one hash is held; hashing %+v", s.auth.HashStats())
		}
	}
	for _, a := range got {
		if a.code != 503 || a.errCode != "busy" || a.retryAfter != "1" {
			t.Errorf("while held: got %d %s Retry-After %q, want 503 busy Retry-After 1", a.code, a.errCode, a.retryAfter)
		}
	}
	waitFor(t, "one hash running", func() bool { return s.auth.HashStats().Running == 1 })
	g.open()
	for range 2 {
		select {
		case a := <-answers:
			if a.code != 201 {
				t.Errorf("a registration that had its turn: got %d %s, want 201", a.code, a.errCode)
			}
		case <-deadline:
			t.Fatal("timed out waiting for the registrations that had a turn")
		}
	}
	if st := s.auth.HashStats(); st.Peak != 1 || st.Total != 2 {
		t.Errorf("hashing: got %+v, want a peak of 1 and 2 hashes", st)
	}
}

// TestRegisterRateLimitPerAddress: one address registers 20 users, then gets 429 with a
// Retry-After (docs/protocol.md section 4.1: a per-address limit allows at least 20 a minute).
func TestRegisterRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	for i := range 20 {
		if a := s.postJSON("/api/auth/register", fmt.Sprintf(`{"name":"user%d","password":"password-x"}`, i)); a.code != 201 {
			t.Fatalf("registration %d: got %d %s, want 201", i+1, a.code, a.errCode)
		}
	}
	if a := s.postJSON("/api/auth/register", `{"name":"user20","password":"password-x"}`); a.code != 429 || a.errCode != "rate-limited" || a.retryAfter == "" {
		t.Fatalf("21st registration: got %d %s Retry-After %q, want 429 rate-limited with Retry-After", a.code, a.errCode, a.retryAfter)
	}
}

// TestParallelWrongPasswordsForOneName: 60 wrong passwords for one name at once: at most 10
// are evaluated (401, one hash each), the rest are 429 with Retry-After; then the right
// password is 429 too. They used to be all evaluated, all 401.
func TestParallelWrongPasswordsForOneName(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	s.browser(t).register("dave")
	before := s.auth.HashStats()
	got := statuses(t, s.postAll(t, 60, "/api/auth/login", func(int) string { return `{"name":"dave","password":"wrong-password"}` }))
	if got[401] != 10 || got[429] != 50 {
		t.Errorf("60 parallel wrong passwords: got %v, want 10 × 401 and 50 × 429", got)
	}
	if n := s.auth.HashStats().Total - before.Total; n != 10 {
		t.Errorf("hashes run: got %d, want 10", n)
	}
	if a := s.postJSON("/api/auth/login", `{"name":"dave","password":"password-dave"}`); a.code != 429 {
		t.Errorf("right password after: got %d, want 429", a.code)
	}
}

// deviceCookie returns the device cookie the jar holds.
func (b *browser) deviceCookie() string {
	u, _ := url.Parse(b.s.URL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == "tidings-device" {
			return c.Value
		}
	}
	return ""
}

// TestDeviceCookieKeepsItsHolderSignedIn: register and login set a tidings-device cookie
// (HttpOnly, SameSite=Lax, Path=/), which logout keeps. Ten failures from strangers lock the
// name, even for the right password, but the browser holding a device cookie of that user
// still signs in; its own failures are limited to 10 as well.
func TestDeviceCookieKeepsItsHolderSignedIn(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	admin := s.browser(t)
	code, body, resp := admin.do("POST", "/api/auth/register", map[string]string{"name": "root", "password": "password-root"})
	if code != 201 {
		t.Fatalf("register: got %d %s", code, body)
	}
	device := cookieHeader(resp, "tidings-device")
	for _, want := range []string{"Path=/", "HttpOnly", "SameSite=Lax", "Expires="} {
		if !strings.Contains(device, want) {
			t.Errorf("device Set-Cookie %q lacks %q", device, want)
		}
	}
	held := admin.deviceCookie()
	if len(held) < 43 || held == admin.cookie() {
		t.Fatalf("device cookie: got %q, want a token of its own", held)
	}
	code, _, resp = admin.do("POST", "/api/auth/logout", nil)
	if code != 204 || cookieHeader(resp, "tidings-device") != "" || admin.deviceCookie() != held {
		t.Fatalf("logout: got %d, device Set-Cookie %q; want 204 and the device cookie kept", code, cookieHeader(resp, "tidings-device"))
	}

	stranger := s.browser(t)
	for i := range 10 {
		if code, _, _ := stranger.do("POST", "/api/auth/login", map[string]string{"name": "root", "password": "wrong-password"}); code != 401 {
			t.Fatalf("stranger's failure %d: got %d, want 401", i+1, code)
		}
	}
	if code, _, _ := s.browser(t).do("POST", "/api/auth/login", map[string]string{"name": "root", "password": "password-root"}); code != 429 {
		t.Fatalf("right password without the device cookie: got %d, want 429", code)
	}
	admin.login("root")
	if admin.deviceCookie() != held {
		t.Errorf("device cookie after its login: got another, want the same")
	}

	for i := range 10 {
		if code, _, _ := admin.do("POST", "/api/auth/login", map[string]string{"name": "root", "password": "wrong-password"}); code != 401 {
			t.Fatalf("device's failure %d: got %d, want 401", i+1, code)
		}
	}
	code, body, resp = admin.do("POST", "/api/auth/login", map[string]string{"name": "root", "password": "password-root"})
	if code != 429 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("right password after the device's 10 failures: got %d %s, Retry-After %q; want 429 with Retry-After", code, body, resp.Header.Get("Retry-After"))
	}
}

// cookieHeader returns the Set-Cookie of resp for the cookie name, or "".
func cookieHeader(resp *http.Response, name string) string {
	for _, c := range resp.Header.Values("Set-Cookie") {
		if strings.HasPrefix(c, name+"=") {
			return c
		}
	}
	return ""
}

// TestSecureDeviceCookieOutsideDevelopment: outside development the device cookie has the
// session cookie's rules but under the name docs/protocol.md gives it, tidings-device: Secure,
// HttpOnly, SameSite=Lax, Path=/; a login reads it under that name.
func TestSecureDeviceCookieOutsideDevelopment(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	h := web.NewHandler(web.Deps{Pool: s.pool, Events: s.events, Hub: s.hub, Auth: s.auth}, web.Config{})
	post := func(path, body, device string) *httptest.ResponseRecorder {
		req, _ := http.NewRequest("POST", path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if device != "" {
			req.AddCookie(&http.Cookie{Name: "tidings-device", Value: device})
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	w := post("/api/auth/register", `{"name":"olga","password":"password-olga"}`, "")
	c := cookieHeader(&http.Response{Header: w.Header()}, "tidings-device")
	if w.Code != 201 || c == "" {
		t.Fatalf("register: got %d, Set-Cookie %q", w.Code, w.Header().Values("Set-Cookie"))
	}
	for _, want := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
		if !strings.Contains(c, want) {
			t.Errorf("Set-Cookie %q lacks %s", c, want)
		}
	}
	device := strings.TrimPrefix(strings.SplitN(c, ";", 2)[0], "tidings-device=")
	for range 10 {
		if w := post("/api/auth/login", `{"name":"olga","password":"wrong-password"}`, ""); w.Code != 401 {
			t.Fatalf("failure: got %d, want 401", w.Code)
		}
	}
	if w := post("/api/auth/login", `{"name":"olga","password":"password-olga"}`, ""); w.Code != 429 {
		t.Fatalf("locked name without the device cookie: got %d, want 429", w.Code)
	}
	if w := post("/api/auth/login", `{"name":"olga","password":"password-olga"}`, device); w.Code != 200 {
		t.Fatalf("locked name with the device cookie: got %d %s, want 200", w.Code, w.Body)
	}
}
