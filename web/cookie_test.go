package web_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"tidings/web"
)

// TestSecureCookieOutsideDevelopment checks the production cookie: __Host- prefixed, Secure,
// HttpOnly, SameSite=Lax, Path=/, and that the development name is then not read.
func TestSecureCookieOutsideDevelopment(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	h := web.NewHandler(web.Deps{Pool: s.pool, Events: s.events, Hub: s.hub, Auth: s.auth}, web.Config{})
	req, _ := http.NewRequest("POST", "/api/auth/register", strings.NewReader(`{"name":"olga","password":"password-olga"}`))
	req.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	c := w.Header().Get("Set-Cookie")
	if w.Code != 201 || !strings.HasPrefix(c, "__Host-tidings-session=") {
		t.Fatalf("register: got %d, Set-Cookie %q", w.Code, c)
	}
	for _, want := range []string{"Path=/", "HttpOnly", "Secure", "SameSite=Lax"} {
		if !strings.Contains(c, want) {
			t.Errorf("Set-Cookie %q lacks %s", c, want)
		}
	}
	token := strings.TrimPrefix(strings.SplitN(c, ";", 2)[0], "__Host-tidings-session=")
	if len(token) < 43 { // 32 random bytes, base64url
		t.Fatalf("token %d characters, want at least 43", len(token))
	}
	for name, wantSignedIn := range map[string]bool{"__Host-tidings-session": true, "tidings-session": false} {
		req, _ := http.NewRequest("GET", "/api/session", nil)
		req.AddCookie(&http.Cookie{Name: name, Value: token})
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if got := strings.Contains(w.Body.String(), `"name":"olga"`); got != wantSignedIn {
			t.Errorf("cookie %s: got %s", name, w.Body)
		}
	}
}
