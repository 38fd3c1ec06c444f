package web_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"tidings/web"
)

// request sends method path with the Host header host and returns the status and the error
// code of the body, if any.
func (s *testServer) request(t *testing.T, method, path, host string, header http.Header, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e.Error.Code
}

// TestDNSRebinding: on a node that listens on loopback, a page of another site whose name was
// pointed at 127.0.0.1 sends its own name as Host (and as Origin, so the Origin rule alone
// would let it through). It gets 421 before anything happens: no user registered, no stream.
func TestDNSRebinding(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{LoopbackListener: true}})
	port := s.URL[strings.LastIndexByte(s.URL, ':')+1:]
	evil := "evil.example:" + port
	fromEvil := http.Header{"Origin": {"http://" + evil}, "Content-Type": {"application/json"}}
	upgrade := http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Version": {"13"},
		"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ=="}, "Origin": {"http://" + evil}}
	for _, r := range []struct {
		method, path string
		header       http.Header
		body         string
	}{
		{"POST", "/api/auth/register", fromEvil, `{"name":"mallory","password":"password-mallory"}`},
		{"GET", "/api/session", nil, ""},
		{"GET", "/api/events?lastEventId=0", upgrade, ""},
		{"GET", "/", nil, ""},
		{"GET", "/no/such/path", nil, ""},
	} {
		if code, ecode := s.request(t, r.method, r.path, evil, r.header, r.body); code != http.StatusMisdirectedRequest || ecode != "misdirected-request" {
			t.Errorf("%s %s with Host %s: got %d %q, want 421 misdirected-request", r.method, r.path, evil, code, ecode)
		}
	}
	if n := s.count(t, "SELECT count(*) FROM users"); n != 0 {
		t.Fatalf("%d users registered through a rebound name", n)
	}
	// The node's own names still work, with any port.
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST", "[::1]:" + port} {
		if code, _ := s.request(t, "GET", "/api/session", host, nil, ""); code != http.StatusOK {
			t.Errorf("Host %s: got %d, want 200", host, code)
		}
	}
	code, _ := s.request(t, "POST", "/api/auth/register", "localhost:"+port,
		http.Header{"Origin": {"http://localhost:" + port}, "Content-Type": {"application/json"}}, `{"name":"alice","password":"password-alice"}`)
	if code != http.StatusCreated {
		t.Fatalf("register on localhost: got %d, want 201", code)
	}
}

// TestAllowedHosts: a list replaces the default rule; without a list a node that does not
// listen on loopback answers any Host.
func TestAllowedHosts(t *testing.T) {
	t.Parallel()
	listed := newServer(t, serverOptions{web: web.Config{LoopbackListener: true, AllowedHosts: []string{"tidings.example.com"}}})
	for host, want := range map[string]int{"tidings.example.com": 200, "Tidings.Example.Com:8443": 200, "127.0.0.1": 421, "localhost": 421, "evil.example": 421} {
		if code, _ := listed.request(t, "GET", "/healthz", host, nil, ""); code != want {
			t.Errorf("listed, Host %s: got %d, want %d", host, code, want)
		}
	}
	public := newServer(t, serverOptions{})
	if code, _ := public.request(t, "GET", "/healthz", "anything.example", nil, ""); code != 200 {
		t.Errorf("no list, not loopback: got %d, want 200", code)
	}
}
