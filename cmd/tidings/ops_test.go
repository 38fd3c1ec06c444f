package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/data/datatest"
)

// The operator's side of the binary: its command line, its version, its logs, its start
// before the database, and the data directory that make run and user create share.

// cliResult is what cli gave back: the exit code and both streams.
type cliResult struct {
	code           int
	stdout, stderr string
}

// runCLI runs the program as main would, with env as its whole environment.
func runCLI(t *testing.T, env map[string]string, stdin io.Reader, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr syncBuffer
	code := cli(ctx, append([]string{"tidings"}, args...), func(k string) string { return env[k] }, stdin, &stdout, &stderr)
	return cliResult{code, stdout.String(), stderr.String()}
}

// syncBuffer is a strings.Builder that goroutines may write at once.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// versionLine is what `tidings version` prints.
var versionLine = regexp.MustCompile(`^tidings \S+ \(commit \S+(, modified)?, built \S+, go1\.\S+\)\n$`)

// TestCommandLine: -h and --help print the usage to stdout and exit 0; a command line that
// cannot be parsed prints what is wrong and the usage to stderr and exits 2; a bad setting
// exits 1 naming it; the version in its three spellings exits 0.
func TestCommandLine(t *testing.T) {
	t.Parallel()
	password := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(password, []byte("password-x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args       []string
		env        map[string]string
		code       int
		stdout     string // a part of it; "" means empty
		stderr     string // a part of it; "" means empty
		stderrSays string // another part of it
	}{
		{args: []string{"-h"}, stdout: "usage: tidings <command>"},
		{args: []string{"--help"}, stdout: "usage: tidings <command>"},
		{args: []string{"help"}, stdout: "usage: tidings <command>"},
		{args: []string{"serve", "-h"}, stdout: "usage: tidings serve [flags]"},
		{args: []string{"serve", "--help"}, stdout: "-db-wait"},
		{args: []string{"migrate", "-help"}, stdout: "usage: tidings migrate [flags]"},
		{args: []string{"user", "create", "-h"}, stdout: "usage: tidings user create --name N --password-file F"},
		{args: []string{"user", "--help"}, stdout: "usage: tidings <command>"},
		{args: nil, code: 2, stderr: "no command", stderrSays: "usage: tidings <command>"},
		{args: []string{"frobnicate"}, code: 2, stderr: `unknown command "frobnicate"`, stderrSays: "usage: tidings <command>"},
		{args: []string{"serve", "-nope"}, code: 2, stderr: "flag provided but not defined: -nope", stderrSays: "usage: tidings serve"},
		{args: []string{"serve", "extra"}, code: 2, stderr: "unexpected arguments: extra", stderrSays: "usage: tidings serve"},
		{args: []string{"serve", "-addr"}, code: 2, stderr: "flag needs an argument: -addr", stderrSays: "usage: tidings serve"},
		{args: []string{"serve", "-dev=maybe"}, code: 2, stderr: `invalid boolean value "maybe" for -dev`, stderrSays: "usage: tidings serve"},
		{args: []string{"serve", "-api-key", "k"}, code: 2, stderr: "-api-key is not a flag", stderrSays: "usage: tidings serve"},
		{args: []string{"user"}, code: 2, stderr: "needs a subcommand: create", stderrSays: "usage: tidings <command>"},
		{args: []string{"user", "delete"}, code: 2, stderr: "needs a subcommand: create"},
		{args: []string{"user", "create", "--name=x"}, code: 2, stderr: "--password-file is needed", stderrSays: "usage: tidings user create"},
		{args: []string{"user", "create", "--password-file", password}, code: 2, stderr: "--name is needed", stderrSays: "usage: tidings user create"},
		{args: []string{"user", "create", "--name=x", "--password-file", password, "--type=boss"}, code: 2, stderr: `--type "boss"`},
		{args: []string{"user", "create", "--name=x", "--password=password-x"}, code: 2, stderr: "--password is not a flag", stderrSays: "--password-file"},
		{args: []string{"version", "extra"}, code: 2, stderr: "unexpected arguments"},
		{args: []string{"serve"}, env: map[string]string{"TIDINGS_RETENTION": "soon"}, code: 1, stderr: "invalid TIDINGS_RETENTION (-retention)"},
		{args: []string{"serve"}, env: map[string]string{"TIDINGS_DEV": "maybe"}, code: 1, stderr: "invalid TIDINGS_DEV (-dev)"},
		{args: []string{"serve"}, env: map[string]string{"TIDINGS_LOG_FORMAT": "xml"}, code: 1, stderr: "invalid TIDINGS_LOG_FORMAT (-log-format)"},
	} {
		name := strings.Join(c.args, " ")
		got := runCLI(t, c.env, nil, c.args...)
		if got.code != c.code {
			t.Errorf("tidings %s: exit code %d, want %d\nstdout: %s\nstderr: %s", name, got.code, c.code, got.stdout, got.stderr)
		}
		for _, s := range []struct {
			stream, got, want string
		}{{"stdout", got.stdout, c.stdout}, {"stderr", got.stderr, c.stderr}} {
			if s.want == "" && s.got != "" {
				t.Errorf("tidings %s: %s %q, want it empty", name, s.stream, s.got)
			}
			if !strings.Contains(s.got, s.want) {
				t.Errorf("tidings %s: %s %q, want it to say %q", name, s.stream, s.got, s.want)
			}
		}
		if !strings.Contains(got.stderr, c.stderrSays) {
			t.Errorf("tidings %s: stderr %q, want it to say %q", name, got.stderr, c.stderrSays)
		}
	}
	got := runCLI(t, map[string]string{"DATABASE_URL": "postgres://u:hunter2@host:port-is-not-a-number/db"}, nil, "migrate")
	if got.code != 1 || !strings.Contains(got.stderr, "invalid DATABASE_URL") || strings.Contains(got.stderr, "hunter2") {
		t.Errorf("a bad DATABASE_URL: got %d, stderr %q; want 1, naming DATABASE_URL without its password", got.code, got.stderr)
	}
	for _, args := range [][]string{{"version"}, {"-version"}, {"--version"}} {
		got := runCLI(t, nil, nil, args...)
		if got.code != 0 || !versionLine.MatchString(got.stdout) || got.stderr != "" {
			t.Errorf("tidings %s: got %d, stdout %q, stderr %q; want 0 and a version line", args[0], got.code, got.stdout, got.stderr)
		}
	}
}

// TestExitCodesOfTheBinary: the compiled binary exits with cli's codes, and a binary built
// from a checkout says its commit.
func TestExitCodesOfTheBinary(t *testing.T) {
	t.Parallel()
	bin := buildTidings(t, t.TempDir())
	for _, c := range []struct {
		args []string
		code int
	}{{nil, 2}, {[]string{"-h"}, 0}, {[]string{"bogus"}, 2}, {[]string{"serve", "-bogus"}, 2}, {[]string{"version"}, 0}} {
		cmd := exec.Command(bin, c.args...)
		cmd.Env = []string{"TIDINGS_RETENTION=1h"} // nothing of the test's own environment
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != c.code {
			t.Errorf("tidings %v: exit code %d, want %d\n%s", c.args, code, c.code, out)
		}
	}
}

// TestBooleanFlags: a boolean setting is a boolean flag (-dev alone is true, -dev=false wins
// over the variable), its variable takes true, false, 1 and 0, and an unreadable variable is
// an error only when the flag does not decide.
func TestBooleanFlags(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		args             []string
		env              map[string]string
		dev, access, pub bool
		err              string
	}{
		{},
		{args: []string{"-dev"}, dev: true},
		{args: []string{"-dev", "-access-log", "-dev-public"}, dev: true, access: true, pub: true},
		{args: []string{"--dev=true"}, dev: true},
		{args: []string{"-dev=false"}, env: map[string]string{"TIDINGS_DEV": "true"}},
		{env: map[string]string{"TIDINGS_DEV": "1", "TIDINGS_ACCESS_LOG": "true"}, dev: true, access: true},
		{env: map[string]string{"TIDINGS_DEV": "0", "TIDINGS_ACCESS_LOG": "false"}},
		{args: []string{"-dev"}, env: map[string]string{"TIDINGS_DEV": "maybe"}, dev: true},
		{env: map[string]string{"TIDINGS_ACCESS_LOG": "yes"}, err: "TIDINGS_ACCESS_LOG (-access-log)"},
	} {
		cfg, err := parseConfig("tidings serve", c.args, func(k string) string { return c.env[k] }, io.Discard)
		switch {
		case c.err != "":
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v %v: got %v, want an error naming %s", c.args, c.env, err, c.err)
			}
		case err != nil:
			t.Errorf("%v %v: %v", c.args, c.env, err)
		case cfg.dev != c.dev || cfg.accessLog != c.access || cfg.devPublic != c.pub:
			t.Errorf("%v %v: got dev %v, access log %v, dev public %v; want %v, %v, %v", c.args, c.env, cfg.dev, cfg.accessLog, cfg.devPublic, c.dev, c.access, c.pub)
		}
	}
	cfg, err := parseConfig("tidings serve", nil, func(string) string { return "" }, io.Discard)
	if err != nil || cfg.dbWait != 5*time.Minute || cfg.logFormat != "text" || cfg.logLevel.String() != "INFO" || cfg.accessLog {
		t.Errorf("defaults: got db wait %v, log %s at %v, access log %v (%v); want 5m, text at INFO, false", cfg.dbWait, cfg.logFormat, cfg.logLevel, cfg.accessLog, err)
	}
}

// managedDataDir is a data directory for a managed cluster; when the tests run as root, the
// postgres user that runs the cluster can traverse its parents.
func managedDataDir(t *testing.T) string {
	t.Helper()
	tmp := t.TempDir()
	if os.Geteuid() == 0 {
		for _, d := range []string{filepath.Dir(tmp), tmp} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	return filepath.Join(tmp, "data")
}

// TestUserCreateWhileTheNodeRuns: on the node's managed data directory, user create (the
// password from standard input, then from a file, with --flag=value) reaches the cluster the
// running node owns, and the new users sign in on that node; the node still stops cleanly.
func TestUserCreateWhileTheNodeRuns(t *testing.T) {
	t.Parallel()
	dir := managedDataDir(t)
	n := startNode(t, "managed", map[string]string{"TIDINGS_DATA_DIR": dir})

	env := map[string]string{"TIDINGS_DATA_DIR": dir}
	got := runCLI(t, env, strings.NewReader("password-root\n"), "user", "create", "--name=root", "--password-file", "-", "--type=admin")
	if got.code != 0 || !strings.Contains(got.stdout, `"root" (admin)`) {
		t.Fatalf("user create from standard input while the node runs: exit %d\nstdout: %s\nstderr: %s", got.code, got.stdout, got.stderr)
	}
	if !strings.Contains(got.stderr, "using the running postgres") {
		t.Errorf("user create did not say it used the running cluster:\n%s", got.stderr)
	}
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("password-ann\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got = runCLI(t, env, nil, "user", "create", "-name", "ann", "--password-file="+file)
	if got.code != 0 || !strings.Contains(got.stdout, `"ann" (regular)`) {
		t.Fatalf("user create from a file while the node runs: exit %d\nstdout: %s\nstderr: %s", got.code, got.stdout, got.stderr)
	}

	for name, typ := range map[string]string{"root": "admin", "ann": "regular"} {
		jar, _ := cookiejar.New(nil)
		hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
		resp, err := hc.Post(n.url+"/api/auth/login", "application/json", strings.NewReader(fmt.Sprintf(`{"name":%q,"password":"password-%s"}`, name, name)))
		if err != nil {
			t.Fatal(err)
		}
		var s struct {
			Account struct {
				Name string `json:"name"`
				Type string `json:"type"`
			} `json:"account"`
		}
		err = json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil || s.Account.Name != name || s.Account.Type != typ {
			t.Errorf("sign in as %s on the node: got %d %+v (%v), want 200 as %s", name, resp.StatusCode, s, err, typ)
		}
		hc.CloseIdleConnections()
	}
	n.stop(t) // and the node, which owns the cluster, still stops it cleanly
}

// TestNodeStartsBeforeItsDatabase: a node whose database does not answer (a black-holed
// connection) listens anyway, answers /healthz 200 with its version and /readyz 503, logs each
// try, and once the database answers, gets ready and streams what is published.
func TestNodeStartsBeforeItsDatabase(t *testing.T) {
	t.Parallel()
	proxy := datatest.NewProxy(t, datatest.NewDatabase(t))
	proxy.Freeze()
	n := launchNode(t, "early", map[string]string{"DATABASE_URL": proxy.ConnString(), "TIDINGS_DB_WAIT": "2m"})
	var url string
	select {
	case url = <-n.log.listen:
	case err := <-n.ran:
		n.ran <- err
		t.Fatalf("run returned before listening: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the node never said where it listens")
	}
	hc := newHTTPClient(t)
	getJSON := func(path string) (int, map[string]any) {
		resp, err := hc.Get(url + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	b := readBuild()
	if code, body := getJSON("/healthz"); code != 200 || body["status"] != "ok" || body["version"] != b.version || body["commit"] != b.commit {
		t.Errorf("/healthz while waiting: got %d %v, want 200 ok %s %s", code, body, b.version, b.commit)
	}
	if code, body := getJSON("/readyz"); code != 503 {
		t.Errorf("/readyz while waiting: got %d %v, want 503", code, body)
	}
	waitUntil(t, "a logged failed try", 30*time.Second, func() bool {
		return strings.Contains(n.log.String(), "database not reachable; trying again")
	})
	if code, _ := getJSON("/readyz"); code != 503 {
		t.Errorf("/readyz after a failed try: got %d, want 503", code)
	}

	proxy.Thaw()
	waitUntil(t, "/readyz 200 once the database answers", 60*time.Second, func() bool {
		code, _ := getJSON("/readyz")
		return code == 200
	})
	if !strings.Contains(n.log.String(), "database reachable") {
		t.Errorf("no line saying the database was reached:\n%s", n.log)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/api/events?lastEventId=0", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	for _, want := range []string{`"type":"session"`, `"type":"ready"`, "publish", `"type":"event","id":1`} {
		if want == "publish" {
			if status, ids, err := publishEvents(hc, url, `{"type":"hello","data":"world"}`); status != 200 || len(ids) != 1 || err != nil {
				t.Fatalf("publish: got %d %v %v", status, ids, err)
			}
			continue
		}
		_, msg, err := conn.Read(ctx)
		if err != nil || !strings.Contains(string(msg), want) {
			t.Fatalf("stream: got %s, %v, want %s", msg, err, want)
		}
	}
	conn.Close(websocket.StatusNormalClosure, "")
}

// TestDatabaseWaitRunsOut: when nothing answers at the database's address for TIDINGS_DB_WAIT,
// serve exits 1 with a message that says so, having logged each try; with 0 it tries once; the
// log level hides the tries' warnings but not the end.
func TestDatabaseWaitRunsOut(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "postgres://tidings@" + ln.Addr().String() + "/tidings?sslmode=disable"
	ln.Close() // nothing listens there now
	for _, c := range []struct {
		env      map[string]string
		tries    string // in the final message
		retried  bool   // a "trying again" line
		maxTaken time.Duration
	}{
		{map[string]string{"TIDINGS_DB_WAIT": "2s"}, "", true, 20 * time.Second},
		{map[string]string{"TIDINGS_DB_WAIT": "0"}, "after 1 tries", false, 15 * time.Second},
		{map[string]string{"TIDINGS_DB_WAIT": "2s", "TIDINGS_LOG_LEVEL": "error"}, "", false, 20 * time.Second},
	} {
		c.env["DATABASE_URL"] = nowhere
		c.env["TIDINGS_ADDR"] = "127.0.0.1:0"
		start := time.Now()
		got := runCLI(t, c.env, nil, "serve")
		took := time.Since(start)
		if got.code != 1 || took > c.maxTaken {
			t.Errorf("%v: exit %d after %v, want 1 within %v\n%s", c.env, got.code, took, c.maxTaken, got.stderr)
		}
		if !strings.Contains(got.stderr, "database not reachable after") || !strings.Contains(got.stderr, "TIDINGS_DB_WAIT="+c.env["TIDINGS_DB_WAIT"]) ||
			!strings.Contains(got.stderr, c.tries) || !strings.Contains(got.stderr, "level=ERROR msg=exiting") {
			t.Errorf("%v: stderr does not say clearly why it gave up:\n%s", c.env, got.stderr)
		}
		if retried := strings.Contains(got.stderr, "trying again"); retried != c.retried {
			t.Errorf("%v: a logged retry %v, want %v:\n%s", c.env, retried, c.retried, got.stderr)
		}
		if got.stdout != "" {
			t.Errorf("%v: stdout %q, want it empty", c.env, got.stdout)
		}
	}
}

// TestJSONLogs: with TIDINGS_LOG_FORMAT=json every line the node writes is a JSON object with
// time, level and msg; the first says the version; with TIDINGS_ACCESS_LOG each request has a
// line with its fields, and the query string is never in the log.
func TestJSONLogs(t *testing.T) {
	t.Parallel()
	n := startNode(t, "json", map[string]string{
		"DATABASE_URL": datatest.NewDatabase(t), "TIDINGS_LOG_FORMAT": "json", "TIDINGS_ACCESS_LOG": "true",
	})
	hc := newHTTPClient(t)
	req, _ := http.NewRequest("GET", n.url+"/api/last-event-id?token=query-secret", nil)
	req.Header.Set("X-Request-Id", "ops-test-1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	waitUntil(t, "the access line", 10*time.Second, func() bool { return strings.Contains(n.log.String(), "ops-test-1") })
	n.stop(t)

	lines := strings.Split(strings.TrimSpace(n.log.String()), "\n")
	var access map[string]any
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d is not JSON (%v): %s", i+1, err, l)
		}
		if m["time"] == nil || m["level"] == nil || m["msg"] == nil {
			t.Errorf("line %d lacks time, level or msg: %s", i+1, l)
		}
		if i == 0 && (m["msg"] != "starting" || m["version"] != readBuild().version || m["commit"] == nil || m["go"] == nil) {
			t.Errorf("first line: got %s, want starting with the version", l)
		}
		if m["requestId"] == "ops-test-1" {
			access = m
		}
	}
	if access == nil || access["msg"] != "request" || access["method"] != "GET" || access["path"] != "/api/last-event-id" ||
		access["status"] != float64(200) || access["bytes"] != float64(len(body)) || access["client"] != "127.0.0.1" || access["durationMs"] == nil {
		t.Errorf("access line: got %v, want GET /api/last-event-id 200 with %d bytes from 127.0.0.1 and a duration", access, len(body))
	}
	if strings.Contains(n.log.String(), "query-secret") {
		t.Errorf("the query string reached the log:\n%s", n.log)
	}
}

// TestStopWhileWaitingForTheDatabase: SIGTERM while the node waits for its database stops it
// at once, cleanly (run returns nil: exit 0).
func TestStopWhileWaitingForTheDatabase(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	nowhere := "postgres://tidings@" + ln.Addr().String() + "/tidings?sslmode=disable"
	ln.Close()
	n := launchNode(t, "waiting", map[string]string{"DATABASE_URL": nowhere, "TIDINGS_DB_WAIT": "10m"})
	select {
	case <-n.log.listen:
	case <-time.After(30 * time.Second):
		t.Fatal("the node never said where it listens")
	}
	waitUntil(t, "a logged failed try", 30*time.Second, func() bool {
		return strings.Contains(n.log.String(), "database not reachable; trying again")
	})
	n.cancel() // what SIGTERM does
	select {
	case err := <-n.ran:
		n.ran <- err // for the cleanup's stop
		if err != nil {
			t.Errorf("run after a stop while waiting: %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Error("run did not return 10 s after a stop while waiting")
	}
}
