package web_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"tidings/web"
)

// corsRequest sends method path with an Origin (and extra headers, name then value) and
// returns the response, its body read and closed.
func corsRequest(t *testing.T, s *testServer, method, path, origin, body string, extra ...string) (*http.Response, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, s.URL+path, r)
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// corsHeaders are every header that CORS adds, for the tests that want none of them.
var corsHeaders = []string{"Access-Control-Allow-Origin", "Access-Control-Allow-Credentials", "Access-Control-Expose-Headers",
	"Access-Control-Allow-Methods", "Access-Control-Allow-Headers", "Access-Control-Max-Age"}

func wantNoCORS(t *testing.T, what string, resp *http.Response) {
	t.Helper()
	for _, h := range corsHeaders {
		if v, ok := resp.Header[h]; ok {
			t.Errorf("%s: got %s %q, want no CORS header", what, h, v)
		}
	}
}

func wantCORS(t *testing.T, what string, resp *http.Response, origin string) {
	t.Helper()
	for h, want := range map[string]string{
		"Access-Control-Allow-Origin":      origin,
		"Access-Control-Allow-Credentials": "true",
		"Access-Control-Expose-Headers":    "Tidings-Session-Token, Retry-After",
	} {
		if got := resp.Header.Values(h); len(got) != 1 || got[0] != want {
			t.Errorf("%s: got %s %q, want %q", what, h, got, want)
		}
	}
	if !strings.Contains(strings.Join(resp.Header.Values("Vary"), ","), "Origin") {
		t.Errorf("%s: Vary %q lacks Origin", what, resp.Header.Values("Vary"))
	}
}

// TestCORS: an app on an origin that TIDINGS_ALLOWED_ORIGINS lists, other than the server's own,
// gets CORS headers on every answer under /api/ and /client/ (its errors too, so that it can read
// them) and its preflights answered; any other origin gets none, and its 403 as before.
func TestCORS(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{AllowedOrigins: []string{"https://app.example", "tauri://localhost"}}})
	s.browser(t).register("cora")

	for _, origin := range []string{"https://app.example", "tauri://localhost"} {
		resp, body := corsRequest(t, s, "GET", "/api/session", origin, "")
		if resp.StatusCode != 200 {
			t.Fatalf("GET /api/session from %s: got %d %s", origin, resp.StatusCode, body)
		}
		wantCORS(t, "GET from "+origin, resp, origin)
		resp, _ = corsRequest(t, s, "POST", "/api/auth/login", origin, `{"name":"cora","password":"wrong-password"}`)
		if resp.StatusCode != 401 {
			t.Fatalf("wrong password from %s: got %d", origin, resp.StatusCode)
		}
		wantCORS(t, "a 401 from "+origin, resp, origin)
		resp, _ = corsRequest(t, s, "GET", "/client/tidings.js", origin, "")
		wantCORS(t, "/client/ from "+origin, resp, origin)

		for _, path := range []string{"/api/auth/login", "/api/users/7", "/api/no/such/path"} {
			resp, body = corsRequest(t, s, "OPTIONS", path, origin, "",
				"Access-Control-Request-Method", "PATCH", "Access-Control-Request-Headers", "authorization,content-type")
			if resp.StatusCode != 204 || body != "" {
				t.Fatalf("preflight of %s from %s: got %d %q, want 204", path, origin, resp.StatusCode, body)
			}
			wantCORS(t, "preflight from "+origin, resp, origin)
			for h, want := range map[string]string{
				"Access-Control-Allow-Methods": "GET, POST, PATCH, DELETE",
				"Access-Control-Allow-Headers": "Authorization, Content-Type",
				"Access-Control-Max-Age":       "600",
			} {
				if got := resp.Header.Get(h); got != want {
					t.Errorf("preflight of %s: got %s %q, want %q", path, h, got, want)
				}
			}
		}
	}
	// Not under /api/ or /client/: no CORS.
	resp, _ := corsRequest(t, s, "GET", "/healthz", "https://app.example", "")
	wantNoCORS(t, "/healthz", resp)

	// An origin that is not listed: no CORS header anywhere, today's 403 on mutations.
	for _, origin := range []string{"https://evil.example", "null", "tauri://evil"} {
		resp, _ := corsRequest(t, s, "GET", "/api/session", origin, "")
		wantNoCORS(t, "GET from "+origin, resp)
		resp, body := corsRequest(t, s, "POST", "/api/auth/login", origin, `{"name":"cora","password":"password-cora"}`)
		if resp.StatusCode != 403 || !strings.Contains(body, `"forbidden-origin"`) {
			t.Fatalf("login from %s: got %d %s, want 403 forbidden-origin", origin, resp.StatusCode, body)
		}
		wantNoCORS(t, "login from "+origin, resp)
		resp, _ = corsRequest(t, s, "OPTIONS", "/api/auth/login", origin, "", "Access-Control-Request-Method", "POST")
		if resp.StatusCode == 204 {
			t.Errorf("preflight from %s: got 204", origin)
		}
		wantNoCORS(t, "preflight from "+origin, resp)
	}

	// Without a list, the server's own origin is the only one allowed, and needs no CORS.
	plain := newServer(t, serverOptions{})
	resp, _ = corsRequest(t, plain, "GET", "/api/session", plain.URL, "")
	wantNoCORS(t, "own origin", resp)
	if v := resp.Header.Values("Vary"); len(v) != 0 {
		t.Errorf("own origin without a list: got Vary %q", v)
	}
	resp, _ = corsRequest(t, plain, "OPTIONS", "/api/session", "https://app.example", "", "Access-Control-Request-Method", "GET")
	wantNoCORS(t, "preflight without a list", resp)
}
