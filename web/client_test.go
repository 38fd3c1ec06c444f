package web_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
)

// getPath fetches a path of s with the given headers and returns the response and its body.
func getPath(t *testing.T, s *testServer, path string, header http.Header) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", s.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// TestLibrary: every node serves the browser library, web/client/tidings.js as it is in the
// source tree, at /client/tidings.js (revalidated) and /client/tidings.<hash>.js (immutable),
// and the page loads the very same file.
func TestLibrary(t *testing.T) {
	t.Parallel()
	src, err := os.ReadFile("client/tidings.js")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(src)
	hash := hex.EncodeToString(sum[:])[:12]
	s := newServer(t, serverOptions{})

	resp, body := getPath(t, s, "/client/tidings.js", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/javascript" ||
		resp.Header.Get("Cache-Control") != "no-cache" || resp.Header.Get("X-Content-Type-Options") != "nosniff" {
		t.Fatalf("/client/tidings.js: got %d %v", resp.StatusCode, resp.Header)
	}
	if !bytes.Equal(body, src) {
		t.Fatalf("/client/tidings.js: got %d bytes, want web/client/tidings.js (%d bytes)", len(body), len(src))
	}
	if r, _ := getPath(t, s, "/client/tidings.js", http.Header{"If-None-Match": {resp.Header.Get("ETag")}}); r.StatusCode != 304 {
		t.Errorf("revalidation: got %d, want 304", r.StatusCode)
	}

	resp, body = getPath(t, s, "/client/tidings."+hash+".js", nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/javascript" ||
		resp.Header.Get("Cache-Control") != "public, max-age=31536000, immutable" || !bytes.Equal(body, src) {
		t.Fatalf("/client/tidings.%s.js: got %d %v, %d bytes", hash, resp.StatusCode, resp.Header, len(body))
	}

	for _, p := range []string{
		"/client/tidings.000000000000.js", "/client/tidings." + hash[:11] + ".js", "/client/tidings.d.ts",
		"/client/package.json", "/client/", "/client/tidings.js/x", "/client/../page.go", "/client/Tidings.js",
	} {
		if r, b := getPath(t, s, p, nil); r.StatusCode != 404 {
			t.Errorf("%s: got %d %.60q, want 404", p, r.StatusCode, b)
		}
	}

	// The page preloads the library under its version, and its app module imports it there.
	_, html, _ := s.browser(t).page()
	m := regexp.MustCompile(`href="(/static/[0-9a-f]+/client/tidings\.js)"`).FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("the page does not preload the library:\n%s", html)
	}
	resp, body = getPath(t, s, m[1], nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, src) || !strings.Contains(resp.Header.Get("Cache-Control"), "immutable") {
		t.Fatalf("%s: got %d %v, %d bytes; want the library, immutable", m[1], resp.StatusCode, resp.Header, len(body))
	}
	app := strings.Replace(m[1], "/client/tidings.js", "/static/app.js", 1)
	if _, body := getPath(t, s, app, nil); !strings.Contains(string(body), "from '../client/tidings.js'") {
		t.Errorf("%s does not import the library:\n%s", app, body)
	}
}
