package main

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"tidings/data/datatest"
)

// get answers a GET of url sent with the Host header host ("" for the URL's own).
func get(t *testing.T, url, host string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestMetricsOnTheirOwnAddress boots the program with TIDINGS_METRICS_ADDR and pprof on: the
// metrics and the profiles are served there only, and the main listener answers 404 for
// them. Both listeners are on loopback, so both refuse a Host that is not a loopback name.
func TestMetricsOnTheirOwnAddress(t *testing.T) {
	t.Parallel()
	n := startNode(t, "metrics", map[string]string{
		"DATABASE_URL":         datatest.NewDatabase(t),
		"TIDINGS_METRICS_ADDR": "127.0.0.1:0",
		"TIDINGS_PPROF_ADDR":   "127.0.0.1:0",
	})
	var aside string
	for line := range strings.SplitSeq(n.log.String(), "\n") {
		if u, ok := logAttr(line, "metrics listening", "url"); ok {
			aside = strings.TrimSuffix(u, "/metrics")
		}
	}
	if aside == "" || aside == n.url {
		t.Fatalf("no metrics address of its own in the output:\n%s", n.log)
	}
	for path, want := range map[string]int{"/metrics": 404, "/debug/pprof/": 404, "/debug/pprof/cmdline": 404, "/healthz": 200} {
		if code, body := get(t, n.url+path, ""); code != want {
			t.Errorf("main listener %s: got %d %.100s, want %d", path, code, body, want)
		}
	}
	code, body := get(t, aside+"/metrics", "")
	if code != 200 || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "tidings_streams_open") {
		t.Errorf("metrics listener /metrics: got %d %.200s, want the metrics", code, body)
	}
	if code, _ := get(t, aside+"/debug/pprof/cmdline", ""); code != 200 {
		t.Errorf("metrics listener /debug/pprof/cmdline: got %d, want 200", code)
	}
	// DNS rebinding: a page of evil.example whose name now points at 127.0.0.1.
	for _, u := range []string{aside + "/metrics", n.url + "/healthz"} {
		if code, body := get(t, u, "evil.example"); code != http.StatusMisdirectedRequest {
			t.Errorf("%s with Host evil.example: got %d %.100s, want 421", u, code, body)
		}
		port := u[strings.LastIndexByte(u, ':')+1:]
		port = port[:strings.IndexByte(port, '/')]
		if code, _ := get(t, u, "localhost:"+port); code != 200 {
			t.Errorf("%s with Host localhost:%s: got %d, want 200", u, port, code)
		}
	}
}

// TestDevModeOnPublicAddress: development mode on an address that is not loopback stops the
// start with an error that names the settings, unless TIDINGS_DEV_PUBLIC allows it, and then
// the node says so in its log.
func TestDevModeOnPublicAddress(t *testing.T) {
	t.Parallel()
	// A database that is not there: the refusal comes before any use of it.
	env := map[string]string{"TIDINGS_DEV": "true", "TIDINGS_ADDR": "0.0.0.0:0", "DATABASE_URL": "postgres://127.0.0.1:1/none?connect_timeout=1"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := run(ctx, []string{"tidings", "serve"}, func(k string) string { return env[k] }, nil, io.Discard, io.Discard)
	for _, want := range []string{"TIDINGS_DEV", "TIDINGS_ADDR=0.0.0.0:0", "TIDINGS_DEV_PUBLIC"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("got %v, want a refusal that names %s", err, want)
		}
	}
	n := startNode(t, "dev-public", map[string]string{
		"DATABASE_URL": datatest.NewDatabase(t), "TIDINGS_DEV": "true", "TIDINGS_ADDR": "0.0.0.0:0", "TIDINGS_DEV_PUBLIC": "true",
	})
	if !strings.Contains(n.log.String(), "DEVELOPMENT MODE ON A PUBLIC ADDRESS") {
		t.Errorf("no warning in the output:\n%s", n.log)
	}
}
