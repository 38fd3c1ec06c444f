package web

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestCheckOrigin(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"https://app.example", "http://localhost:5173", "https://APP.example:443", "http://[::1]:8080",
		"tauri://localhost", "app://main", "capacitor://localhost", "chrome-extension://abcdefgh", "x+y.z-w://h:1",
	} {
		if err := CheckOrigin(s); err != nil {
			t.Errorf("%q: got %v, want accepted", s, err)
		}
	}
	for _, s := range []string{
		"", "null", "*", "example.com", "https://", "https://app.example/path", "https://app.example?q",
		"https://user@app.example", "app://", "://host", "1app://host", "app://main/index.html", "app://ma in",
		"app://*", "app://a,b", "app://a?b", "app://a#b", "app://u@h", "app://h\x7f", "app\x00://h", "http//x",
	} {
		if err := CheckOrigin(s); err == nil {
			t.Errorf("%q: accepted, want refused", s)
		}
	}
}

// TestCrossOrigin: CORS names an allowed origin only when it is another than the request's own,
// as it was sent; never without a list, never for an origin that is not allowed.
func TestCrossOrigin(t *testing.T) {
	t.Parallel()
	cases := []struct {
		allowed []string
		host    string
		tls     bool
		origin  []string
		want    string // "" for none
	}{
		{nil, "localhost:8080", false, []string{"http://localhost:8080"}, ""},
		{nil, "localhost:8080", false, []string{"http://app.example"}, ""},
		{[]string{"https://app.example"}, "tidings.example", true, []string{"https://app.example"}, "https://app.example"},
		{[]string{"https://app.example"}, "tidings.example", true, []string{"https://APP.example:443"}, "https://APP.example:443"},
		{[]string{"https://app.example"}, "tidings.example", true, []string{"https://evil.example"}, ""},
		{[]string{"https://app.example"}, "tidings.example", true, nil, ""},
		{[]string{"https://app.example"}, "tidings.example", true, []string{"https://app.example", "https://app.example"}, ""},
		{[]string{"https://tidings.example", "https://app.example"}, "tidings.example", true, []string{"https://tidings.example"}, ""},
		{[]string{"tauri://localhost"}, "127.0.0.1:8080", false, []string{"tauri://localhost"}, "tauri://localhost"},
		{[]string{"tauri://localhost"}, "127.0.0.1:8080", false, []string{"null"}, ""},
	}
	for _, tc := range cases {
		r := originRequest("/api/session", tc.host, tc.tls, tc.origin)
		got, ok := newOrigins(tc.allowed).crossOrigin(r)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("allowed %v, host %s, origin %v: got %q %v, want %q", tc.allowed, tc.host, tc.origin, got, ok, tc.want)
		}
	}
}

// originRequest is a GET of path to host (over TLS when overTLS) with one Origin header per entry
// of origins.
func originRequest(path, host string, overTLS bool, origins []string) *http.Request {
	r := httptest.NewRequest("GET", path, nil)
	r.Host = host
	if overTLS {
		r.TLS = &tls.ConnectionState{}
	}
	for _, o := range origins {
		r.Header.Add("Origin", o)
	}
	return r
}
