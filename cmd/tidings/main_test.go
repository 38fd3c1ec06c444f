package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/alexedwards/argon2id"
	"github.com/coder/websocket"

	"tidings/data/datatest"
)

func TestMain(m *testing.M) { datatest.Main(m) }

// TestServeEndToEnd boots the whole program on port 0, streams an event published through the
// API, then shuts it down as SIGTERM would and checks that the stream got 1001 going-away and
// that run returned cleanly.
func TestServeEndToEnd(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"DATABASE_URL":    datatest.NewDatabase(t),
		"TIDINGS_ADDR":    "127.0.0.1:0",
		"TIDINGS_API_KEY": "k",
	}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	out, w := io.Pipe()
	ran := make(chan error, 1)
	go func() {
		ran <- run(ctx, []string{"tidings", "serve"}, func(k string) string { return env[k] }, nil, io.Discard, w)
		w.Close()
	}()
	base := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if addr, ok := logAttr(sc.Text(), "ready", "url"); ok {
				base <- addr
			}
		}
	}()
	var url string
	select {
	case url = <-base:
	case err := <-ran:
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the server never said where it listens")
	}

	dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(dctx, "ws"+strings.TrimPrefix(url, "http")+"/api/events?lastEventId=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	read := func() map[string]any {
		t.Helper()
		_, msg, err := conn.Read(dctx)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var f map[string]any
		json.Unmarshal(msg, &f)
		return f
	}
	if f := read(); f["type"] != "session" {
		t.Fatalf("first frame: got %v", f)
	}
	if f := read(); f["type"] != "ready" {
		t.Fatalf("second frame: got %v", f)
	}
	req, _ := http.NewRequest("POST", url+"/api/publish", strings.NewReader(`{"type":"hello","data":"world"}`))
	req.Header.Set("Authorization", "Bearer k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("publish: got %v, %v", resp, err)
	}
	resp.Body.Close()
	if f := read(); f["type"] != "event" || f["id"] != float64(1) {
		t.Fatalf("event: got %v", f)
	}

	resp, err = http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"tidings_streams_open 1", "tidings_events_delivered_total 1", "tidings_listener_up 1",
		"tidings_events_appended_total 1", "tidings_db_pool_max_conns", "tidings_delivery_latency_seconds_count 1", "go_goroutines"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}

	stop() // what SIGTERM does
	_, _, err = conn.Read(dctx)
	var ce websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.StatusGoingAway || ce.Reason != "going-away" {
		t.Fatalf("after shutdown: got %v, want close 1001 going-away", err)
	}
	select {
	case err := <-ran:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return after shutdown")
	}
}

func TestConfigErrorsNameTheSetting(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"TIDINGS_SESSION_ROTATE":          "soon",
		"TIDINGS_RETENTION":               "-1h",
		"TIDINGS_DEV":                     "maybe",
		"TIDINGS_ALLOWED_ORIGINS":         "example.com",
		"TIDINGS_MAX_STREAMS_PER_SESSION": "0",
		"TIDINGS_MAX_STREAMS_PER_ADDRESS": "-2",
		"TIDINGS_TRUSTED_PROXIES":         "10.0.0.0/8,10.0.0.0/33",
		"TIDINGS_ALLOWED_HOSTS":           "https://tidings.example.com",
		"TIDINGS_METRICS_ADDR":            "9090",
		"TIDINGS_DEV_PUBLIC":              "maybe",
		"TIDINGS_API_KEY_FILE":            "/nonexistent/key",
		"TIDINGS_DB_WAIT":                 "-1s",
		"TIDINGS_LOG_FORMAT":              "logfmt",
		"TIDINGS_LOG_LEVEL":               "loud",
		"TIDINGS_ACCESS_LOG":              "sometimes",
		"DATABASE_URL":                    "postgres://u:hunter2@host:port-is-not-a-number/db",
	}
	for key, value := range cases {
		_, err := parseConfig("serve", nil, func(k string) string {
			if k == key {
				return value
			}
			return ""
		}, io.Discard)
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s=%s: got %v, want an error naming %s", key, value, err, key)
		}
	}
	c, err := parseConfig("serve", []string{"-addr", ":9"}, func(string) string { return "" }, io.Discard)
	if err != nil || c.addr != ":9" || c.dataDir != "./data" || c.sessionRotate != time.Hour || c.sessionExpire != 336*time.Hour ||
		c.sessionGrace != 30*time.Second || c.retention != 168*time.Hour || c.pruneInterval != time.Minute || c.dev ||
		c.maxPerAddress != 1000 || c.metricsAddr != "" || c.trustedProxies != nil || c.allowedHosts != nil || c.apiKey != "" {
		t.Fatalf("defaults: got %+v, %v", c, err)
	}
	for _, tc := range []struct {
		env  map[string]string
		want []string // in the error
	}{
		{map[string]string{"TIDINGS_METRICS_ADDR": "127.0.0.1:9090", "TIDINGS_PPROF_ADDR": "127.0.0.1:6060"},
			[]string{"TIDINGS_PPROF_ADDR", "TIDINGS_METRICS_ADDR"}},
		{map[string]string{"TIDINGS_API_KEY": "k", "TIDINGS_API_KEY_FILE": "/dev/null"},
			[]string{"TIDINGS_API_KEY_FILE", "TIDINGS_API_KEY "}},
		{map[string]string{"TIDINGS_ALLOWED_HOSTS": "*.example.com"}, []string{"TIDINGS_ALLOWED_HOSTS"}},
		{map[string]string{"TIDINGS_ALLOWED_ORIGINS": "https://app.example,null"}, []string{"TIDINGS_ALLOWED_ORIGINS", `"null"`}},
		{map[string]string{"TIDINGS_ALLOWED_ORIGINS": "*"}, []string{"TIDINGS_ALLOWED_ORIGINS"}},
		{map[string]string{"TIDINGS_ALLOWED_ORIGINS": "app://main/index.html"}, []string{"TIDINGS_ALLOWED_ORIGINS"}},
	} {
		_, err := parseConfig("serve", nil, func(k string) string { return tc.env[k] }, io.Discard)
		for _, w := range tc.want {
			if err == nil || !strings.Contains(err.Error(), w) {
				t.Errorf("%v: got %v, want an error naming %s", tc.env, err, w)
			}
		}
	}
	c, err = parseConfig("serve", nil, func(k string) string {
		return map[string]string{
			"TIDINGS_TRUSTED_PROXIES": " 10.1.2.3/8, 192.0.2.7 ,fd00::/8,::ffff:198.51.100.0/120",
			"TIDINGS_ALLOWED_HOSTS":   "tidings.example.com, [::1]:8080,127.0.0.1",
			"TIDINGS_ALLOWED_ORIGINS": "https://app.example, tauri://localhost,app://main",
		}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(c.trustedProxies); got != "[10.0.0.0/8 192.0.2.7/32 fd00::/8 198.51.100.0/24]" {
		t.Errorf("trusted proxies: got %s", got)
	}
	if got := fmt.Sprint(c.allowedHosts); got != "[tidings.example.com [::1]:8080 127.0.0.1]" {
		t.Errorf("allowed hosts: got %s", got)
	}
	if got := fmt.Sprint(c.allowedOrigins); got != "[https://app.example tauri://localhost app://main]" {
		t.Errorf("allowed origins: got %s", got)
	}
}

func TestUserCreate(t *testing.T) {
	t.Parallel()
	env := map[string]string{"DATABASE_URL": datatest.NewDatabase(t)}
	getenv := func(k string) string { return env[k] }
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("password-root\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	args := []string{"tidings", "user", "create", "--name", "root", "--password-file", file, "--type", "admin"}
	if err := run(context.Background(), args, getenv, nil, &out, io.Discard); err != nil {
		t.Fatalf("user create: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), `created user 1 "root" (admin)`) {
		t.Fatalf("output: %s", out.String())
	}
	err := run(context.Background(), args, getenv, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "name taken") {
		t.Fatalf("same name again: got %v, want name taken", err)
	}
	out.Reset()
	stdin := []string{"tidings", "user", "create", "--name", "ann", "--password-file", "-"}
	if err := run(context.Background(), stdin, getenv, strings.NewReader("password-ann\r\nnot this line\n"), &out, io.Discard); err != nil {
		t.Fatalf("user create from standard input: %v", err)
	}
	if !strings.Contains(out.String(), `"ann" (regular)`) {
		t.Fatalf("output: %s", out.String())
	}
	bad := []string{"tidings", "user", "create", "--name", "x", "--password-file", "-"}
	if err := run(context.Background(), bad, getenv, strings.NewReader("short\n"), io.Discard, io.Discard); err == nil {
		t.Fatal("a short password was accepted")
	}

	// The password is the file's first line, without its line ending: both users sign in.
	pool := datatest.OpenPool(t, env["DATABASE_URL"])
	for name, password := range map[string]string{"root": "password-root", "ann": "password-ann"} {
		var hash string
		if err := pool.QueryRow(context.Background(), "SELECT password_hash FROM users WHERE name = $1", name).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		if ok, err := argon2id.ComparePasswordAndHash(password, hash); !ok || err != nil {
			t.Errorf("%s: the stored hash is not of %q (%v)", name, password, err)
		}
	}
}

// TestSecretsAreNotFlagValues: a password or an API key given as a flag value is refused with
// an error that says where to put it; the API key is read from a file.
func TestSecretsAreNotFlagValues(t *testing.T) {
	t.Parallel()
	noEnv := func(string) string { return "" }
	for _, args := range [][]string{
		{"tidings", "user", "create", "--name", "x", "--password", "password-x"},
		{"tidings", "user", "create", "--name", "x", "-password=password-x"},
	} {
		err := run(context.Background(), args, noEnv, nil, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--password-file") {
			t.Errorf("%v: got %v, want a refusal that names --password-file", args, err)
		}
	}
	for _, args := range [][]string{{"-api-key", "k"}, {"--api-key=k"}} {
		_, err := parseConfig("serve", args, noEnv, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "TIDINGS_API_KEY") || !strings.Contains(err.Error(), "-api-key-file") {
			t.Errorf("%v: got %v, want a refusal that names TIDINGS_API_KEY and -api-key-file", args, err)
		}
	}
	file := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(file, []byte("  the-key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := parseConfig("serve", []string{"-api-key-file", file}, noEnv, io.Discard)
	if err != nil || c.apiKey != "the-key" {
		t.Fatalf("-api-key-file: got %q, %v, want the-key", c.apiKey, err)
	}
	c, err = parseConfig("serve", nil, func(k string) string {
		return map[string]string{"TIDINGS_API_KEY_FILE": file}[k]
	}, io.Discard)
	if err != nil || c.apiKey != "the-key" {
		t.Fatalf("TIDINGS_API_KEY_FILE: got %q, %v, want the-key", c.apiKey, err)
	}
	c, err = parseConfig("serve", nil, func(k string) string {
		return map[string]string{"TIDINGS_API_KEY": "env-key"}[k]
	}, io.Discard)
	if err != nil || c.apiKey != "env-key" {
		t.Fatalf("TIDINGS_API_KEY: got %q, %v, want env-key", c.apiKey, err)
	}
}
