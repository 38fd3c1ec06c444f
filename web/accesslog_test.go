package web_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/web"
)

// String returns the logs written so far.
func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines returns the JSON log lines written so far.
func (l *logBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line is not JSON: %v: %s", err, l)
		}
		out = append(out, m)
	}
	return out
}

// TestAccessLog: one line per request with method, path without its query, status, bytes,
// duration, the request id the answer carries and the client address a trusted proxy names;
// a stream's upgrade logs 101 and still works; a long path is cut; and a slow body is still
// cut off through the log's writer.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{BodyTimeout: 300 * time.Millisecond}})
	var logs logBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	ts := httptest.NewServer(web.AccessLog(s.handler, log, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}))
	defer ts.Close()

	req, _ := http.NewRequest("GET", ts.URL+"/api/last-event-id?token=secret-in-query&x=1", nil)
	req.Header.Set("X-Forwarded-For", "203.0.113.9")
	req.Header.Set("X-Request-Id", "req-42")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/last-event-id: got %d", resp.StatusCode)
	}
	resp, err = http.Get(ts.URL + "/api/nothing/" + strings.Repeat("é", 400))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http")+"/api/events?lastEventId=0", nil)
	if err != nil {
		t.Fatalf("stream through the access log: %v", err)
	}
	for _, want := range []string{"session", "ready"} {
		_, msg, err := conn.Read(ctx)
		if err != nil || !strings.Contains(string(msg), `"type":"`+want+`"`) {
			t.Fatalf("stream through the access log: got %s, %v, want a %s frame", msg, err, want)
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")

	if status, took, closed := slowRequest(t, ts.URL, "POST /api/auth/login HTTP/1.1\r\n"); status != http.StatusRequestTimeout || took > 3*time.Second || !closed {
		t.Errorf("slow body through the access log: got %d after %v, closed %v; want 408 soon, and the connection closed", status, took, closed)
	}

	lines := logs.lines(t)
	if len(lines) != 4 {
		t.Fatalf("got %d access lines, want 4:\n%s", len(lines), logs.String())
	}
	for _, l := range lines {
		if l["msg"] != "request" || l["level"] != "INFO" || l["durationMs"] == nil || l["requestId"] == "" || l["bytes"] == nil {
			t.Errorf("line %v: want msg request at INFO with durationMs, requestId and bytes", l)
		}
	}
	first := lines[0]
	if first["method"] != "GET" || first["path"] != "/api/last-event-id" || first["status"] != float64(200) ||
		first["bytes"] != float64(len(body)) || first["requestId"] != "req-42" || first["client"] != "203.0.113.9" {
		t.Errorf("first line: got %v, want GET /api/last-event-id 200, %d bytes, request id req-42, client 203.0.113.9", first, len(body))
	}
	if p, _ := lines[1]["path"].(string); lines[1]["status"] != float64(404) || len(p) > 520 || !strings.HasPrefix(p, "/api/nothing/é") || !strings.HasSuffix(p, "…") {
		t.Errorf("long path: got status %v path %q, want 404 and the path cut near 512 bytes", lines[1]["status"], p)
	}
	if lines[2]["path"] != "/api/events" || lines[2]["status"] != float64(101) || lines[2]["client"] != "127.0.0.1" {
		t.Errorf("stream line: got %v, want /api/events 101 from 127.0.0.1", lines[2])
	}
	if lines[3]["method"] != "POST" || lines[3]["status"] != float64(408) {
		t.Errorf("slow body line: got %v, want POST 408", lines[3])
	}
	if all := logs.String(); strings.Contains(all, "secret-in-query") || strings.Contains(all, "x=1") {
		t.Errorf("the query string reached the log:\n%s", all)
	}
}

// TestGate: before it opens, a starting node answers /healthz 200 with its build, /readyz and
// anything else 503 starting, and a foreign Host 421; once open, the node's handler answers.
func TestGate(t *testing.T) {
	t.Parallel()
	g := web.NewGate(web.Config{LoopbackListener: true, Build: web.Build{Version: "v1.2.3", Commit: "abc1234"}})
	ts := httptest.NewServer(g)
	defer ts.Close()
	get := func(path, host string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("GET", ts.URL+path, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if code, body := get("/healthz", ""); code != 200 || body["status"] != "ok" || body["version"] != "v1.2.3" || body["commit"] != "abc1234" {
		t.Errorf("/healthz while starting: got %d %v, want 200 ok v1.2.3 abc1234", code, body)
	}
	for _, p := range []string{"/readyz", "/api/last-event-id", "/"} {
		code, body := get(p, "")
		e, _ := body["error"].(map[string]any)
		if code != 503 || e["code"] != "starting" {
			t.Errorf("%s while starting: got %d %v, want 503 starting", p, code, body)
		}
	}
	if code, _ := get("/healthz", "evil.example"); code != http.StatusMisdirectedRequest {
		t.Errorf("/healthz for Host evil.example: got %d, want 421", code)
	}
	g.Open(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	if code, _ := get("/readyz", ""); code != http.StatusTeapot {
		t.Errorf("/readyz once open: got %d, want the node's handler's 418", code)
	}
}

// TestHealthzNamesTheBuild: the node's /healthz says its version and commit.
func TestHealthzNamesTheBuild(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{Build: web.Build{Version: "v9.8.7", Commit: "fedcba9"}}})
	resp, err := http.Get(s.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]string
	json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != 200 || body["status"] != "ok" || body["version"] != "v9.8.7" || body["commit"] != "fedcba9" {
		t.Fatalf("/healthz: got %d %v, want 200 ok v9.8.7 fedcba9", resp.StatusCode, body)
	}
}
