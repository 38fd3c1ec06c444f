package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"tidings/realtime/client"
	"tidings/web/webtest"
)

// Helpers for the tests that boot whole nodes: in-process with run, or the compiled binary;
// clients that follow the stream across a list of nodes; backend publishing over HTTP.

const testAPIKey = "test-key"

// nodeLog is a node's log (standard error, as text): it keeps the last lines for failure
// reports and hands over the URL of the line that says the node is ready.
type nodeLog struct {
	addr   chan string // capacity 1: the base URL, once ready
	listen chan string // capacity 1: the base URL, once listening (maybe not ready yet)

	mu      sync.Mutex
	partial []byte   // guarded by mu: the unfinished last line
	lines   []string // guarded by mu: the last maxLogLines lines
}

const maxLogLines = 200

func newNodeLog() *nodeLog { return &nodeLog{addr: make(chan string, 1), listen: make(chan string, 1)} }

func (l *nodeLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		line := string(l.partial[:i])
		l.partial = l.partial[i+1:]
		if a, ok := logAttr(line, "ready", "url"); ok {
			select {
			case l.addr <- a:
			default:
			}
		}
		if a, ok := logAttr(line, "listening", "url"); ok {
			select {
			case l.listen <- a:
			default:
			}
		}
		l.lines = append(l.lines, line)
		if len(l.lines) > maxLogLines {
			l.lines = l.lines[len(l.lines)-maxLogLines:]
		}
	}
	return len(p), nil
}

// logAttr returns the value of key in line, a log line as text or JSON, when its message is msg.
func logAttr(line, msg, key string) (string, bool) {
	if strings.HasPrefix(line, "{") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) != nil || m["msg"] != msg {
			return "", false
		}
		v, ok := m[key].(string)
		return v, ok
	}
	if strings.ContainsAny(msg, " =\"") {
		msg = strconv.Quote(msg)
	}
	if !strings.Contains(line+" ", " msg="+msg+" ") {
		return "", false
	}
	for f := range strings.FieldsSeq(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v, true
		}
	}
	return "", false
}

func (l *nodeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// nodeEnv is the environment of a test node: a port chosen by the kernel, the test API key,
// and a data directory of the test's own, with extra on top.
func nodeEnv(t *testing.T, extra map[string]string) map[string]string {
	env := map[string]string{
		"TIDINGS_ADDR":     "127.0.0.1:0",
		"TIDINGS_API_KEY":  testAPIKey,
		"TIDINGS_DATA_DIR": t.TempDir(),
	}
	maps.Copy(env, extra)
	return env
}

// node is one `tidings serve` running in this process through run.
type node struct {
	name string
	url  string // http://127.0.0.1:PORT
	log  *nodeLog

	stopOnce sync.Once
	cancel   context.CancelFunc
	ran      chan error // run's result
}

// startNode runs `tidings serve` with env (over nodeEnv's defaults) until the test ends, and
// waits until it is ready.
func startNode(t *testing.T, name string, env map[string]string) *node {
	t.Helper()
	n, err := tryStartNode(t, name, env)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// tryStartNode is startNode for any goroutine: it reports a failure instead of ending the test.
func tryStartNode(t *testing.T, name string, env map[string]string) (*node, error) {
	n := launchNode(t, name, env)
	select {
	case n.url = <-n.log.addr:
		return n, nil
	case err := <-n.ran:
		n.ran <- err // for stop
		return nil, fmt.Errorf("node %s: run returned before listening: %v", name, err)
	case <-time.After(30 * time.Second):
		return nil, fmt.Errorf("node %s never said where it listens", name)
	}
}

// launchNode runs `tidings serve` with env (over nodeEnv's defaults) until the test ends, and
// returns at once: n.log says when it listens and when it is ready.
func launchNode(t *testing.T, name string, env map[string]string) *node {
	env = nodeEnv(t, env)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{name: name, log: newNodeLog(), cancel: cancel, ran: make(chan error, 1)}
	go func() {
		n.ran <- run(ctx, []string{"tidings", "serve"}, func(k string) string { return env[k] }, nil, n.log, n.log)
	}()
	t.Cleanup(func() {
		n.stop(t)
		if t.Failed() {
			t.Logf("node %s output:\n%s", n.name, n.log)
		}
	})
	return n
}

// stop does what SIGTERM does and waits, with a bound, for run to return cleanly.
func (n *node) stop(t *testing.T) {
	t.Helper()
	n.stopOnce.Do(func() {
		n.cancel()
		select {
		case err := <-n.ran:
			if err != nil {
				t.Errorf("node %s: run: %v", n.name, err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("node %s: run did not return 20s after shutdown", n.name)
		}
	})
}

// buildTidings compiles this command into dir and returns the binary's path.
func buildTidings(t *testing.T, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "tidings")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// The test runs in the package's directory; `go test` puts its own go first in PATH.
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// process is a `tidings serve` run from the compiled binary.
type process struct {
	url string
	log *nodeLog
	cmd *exec.Cmd

	exited  chan struct{} // closed once Wait returned
	waitErr error         // set before exited is closed
}

// startProcess execs bin serve with env (over nodeEnv's defaults) and waits until it listens.
// The test's end kills it if it still runs.
func startProcess(t *testing.T, bin string, env map[string]string) *process {
	t.Helper()
	env = nodeEnv(t, env)
	p := &process{log: newNodeLog(), exited: make(chan struct{})}
	p.cmd = exec.Command(bin, "serve")
	p.cmd.Env = os.Environ()
	for k, v := range env {
		p.cmd.Env = append(p.cmd.Env, k+"="+v) // the last value of a key wins
	}
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		p.kill(t)
		if t.Failed() {
			t.Logf("process %d output:\n%s", p.cmd.Process.Pid, p.log)
		}
	})
	select {
	case p.url = <-p.log.addr:
	case <-p.exited:
		t.Fatalf("tidings serve exited before listening: %v\n%s", p.waitErr, p.log)
	case <-time.After(30 * time.Second):
		t.Fatalf("tidings serve never said where it listens:\n%s", p.log)
	}
	return p
}

// kill sends SIGKILL to the process by its pid and waits for it to be gone.
func (p *process) kill(t *testing.T) {
	t.Helper()
	select {
	case <-p.exited:
		return
	default:
	}
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill %d: %v", p.cmd.Process.Pid, err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Errorf("process %d still there 10s after SIGKILL", p.cmd.Process.Pid)
	}
}

// waitErrIsKill reports whether the process has exited, killed by SIGKILL.
func (p *process) waitErrIsKill() bool {
	select {
	case <-p.exited:
	default:
		return false
	}
	var ee *exec.ExitError
	if !errors.As(p.waitErr, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// follower follows the event stream from lastEventId 0 like a client that knows several nodes:
// it runs one realtime/client on the first URL and, when that connection fails at the network
// level (the node is gone), starts a new client on the next URL with the last id it got.
type follower struct {
	name   string
	urls   []string
	cancel context.CancelFunc
	done   chan struct{}
	ready  chan struct{} // closed at the first ready frame

	mu     sync.Mutex
	ids    []int64      // guarded by mu: every event id delivered, in delivery order
	stats  client.Stats // guarded by mu: summed over the clients that have finished
	moves  int          // guarded by mu: how many times it went to another node
	closes []int        // guarded by mu: the close codes seen
	errs   []error      // guarded by mu: errors that ended a client's Run
	cur    *client.Client
}

// follow starts a follower on urls (the first is where it starts), stopped when the test ends.
func follow(t *testing.T, name string, urls ...string) *follower {
	ctx, cancel := context.WithCancel(context.Background())
	f := &follower{name: name, urls: urls, cancel: cancel, done: make(chan struct{}), ready: make(chan struct{})}
	go func() {
		defer close(f.done)
		f.run(ctx)
	}()
	t.Cleanup(f.stop)
	return f
}

func (f *follower) run(ctx context.Context) {
	last := int64(0)
	var readyOnce sync.Once
	for i := 0; ; i = (i + 1) % len(f.urls) {
		lost := make(chan struct{}, 1)
		c := client.New(client.Config{
			URL:         f.urls[i],
			LastEventID: &last,
			MinBackoff:  10 * time.Millisecond,
			MaxBackoff:  100 * time.Millisecond,
			OnReady:     func(int64) { readyOnce.Do(func() { close(f.ready) }) },
			OnClose: func(code int, _ string) {
				f.mu.Lock()
				f.closes = append(f.closes, code)
				f.mu.Unlock()
				if code == -1 && len(f.urls) > 1 {
					select {
					case lost <- struct{}{}:
					default:
					}
				}
			},
		})
		f.mu.Lock()
		f.cur = c
		f.mu.Unlock()
		cctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			if err := c.Run(cctx); err != nil {
				f.mu.Lock()
				f.errs = append(f.errs, err)
				f.mu.Unlock()
			}
		})
		wg.Go(func() {
			select {
			case <-lost:
			case <-cctx.Done():
			}
			cancel()
		})
		for ev := range c.Events() { // closed when Run returns
			f.mu.Lock()
			f.ids = append(f.ids, ev.ID)
			f.mu.Unlock()
		}
		cancel()
		wg.Wait()
		s := c.Stats()
		f.mu.Lock()
		f.stats.Duplicates += s.Duplicates
		f.stats.OutOfOrder += s.OutOfOrder
		f.cur = nil
		f.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		if id := c.LastEventID(); id > last {
			last = id
		}
		f.mu.Lock()
		f.moves++
		f.mu.Unlock()
	}
}

// stop ends the follower and waits for its clients; it may be called again.
func (f *follower) stop() {
	f.cancel()
	<-f.done
}

func (f *follower) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.ids)
}

// waitReady waits, with a bound, for the first ready frame.
func (f *follower) waitReady(t *testing.T) {
	t.Helper()
	select {
	case <-f.ready:
	case <-time.After(15 * time.Second):
		t.Fatalf("follower %s: no ready frame within 15s", f.name)
	}
}

// waitFor waits, with a bound, until the follower has n events.
func (f *follower) waitFor(t *testing.T, n int) {
	t.Helper()
	waitUntil(t, fmt.Sprintf("follower %s to have %d events", f.name, n), 15*time.Second, func() bool { return f.count() >= n })
}

// check says the follower got exactly the events 1..n, in order, none of them twice, and that
// its clients dropped no frame as duplicate or out of order.
func (f *follower) check(t *testing.T, n int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	stats := f.stats
	if f.cur != nil {
		s := f.cur.Stats()
		stats.Duplicates += s.Duplicates
		stats.OutOfOrder += s.OutOfOrder
	}
	if stats != (client.Stats{}) {
		t.Errorf("follower %s: client stats %+v, want zero", f.name, stats)
	}
	if len(f.errs) > 0 {
		t.Errorf("follower %s: client errors %v", f.name, f.errs)
	}
	if len(f.ids) != n {
		t.Errorf("follower %s: got %d events, want %d", f.name, len(f.ids), n)
	}
	for i, id := range f.ids {
		if id != int64(i+1) {
			t.Errorf("follower %s: event #%d has id %d, want %d (ids around it: %v)", f.name, i+1, id, i+1, f.ids[max(0, i-3):min(len(f.ids), i+4)])
			return
		}
	}
}

func (f *follower) movesAndCloses() (int, []int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.moves, append([]int(nil), f.closes...)
}

// waitUntil polls cond every 10ms until it holds, failing the test after timeout.
func waitUntil(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		<-tick.C
	}
}

// newHTTPClient is an HTTP client of the test's own, whose idle connections are closed at the
// end so that none outlives it.
func newHTTPClient(t *testing.T) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 15 * time.Second}
}

// publishEvents POSTs body to url's /api/publish with the test key and returns the status and,
// on 200, the ids. A transport error (the node is gone) is returned as it is.
func publishEvents(hc *http.Client, url, body string) (status int, ids []int64, err error) {
	req, err := http.NewRequest("POST", url+"/api/publish", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+testAPIKey)
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil, nil
	}
	var out struct {
		IDs []int64 `json:"ids"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return resp.StatusCode, nil, fmt.Errorf("publish answer %q: %w", b, err)
	}
	return resp.StatusCode, out.IDs, nil
}

// getStatus GETs url and returns the status (0 on a transport error).
func getStatus(hc *http.Client, url string) int {
	resp, err := hc.Get(url)
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// watermark returns GET /api/last-event-id of the node at url.
func watermark(t *testing.T, hc *http.Client, url string) int64 {
	t.Helper()
	id, err := webtest.Watermark(hc, url)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// ackedIDs collects the ids that publishes got back, from several writers.
type ackedIDs struct {
	mu  sync.Mutex
	ids map[int64]bool
}

// add records ids and reports false when one was already acknowledged.
func (a *ackedIDs) add(ids []int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ids == nil {
		a.ids = map[int64]bool{}
	}
	ok := true
	for _, id := range ids {
		if a.ids[id] {
			ok = false
		}
		a.ids[id] = true
	}
	return ok
}

func (a *ackedIDs) len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ids)
}

// checkExactly says the acknowledged ids are exactly 1..n.
func (a *ackedIDs) checkExactly(t *testing.T, n int64) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	if int64(len(a.ids)) != n {
		t.Errorf("acknowledged %d distinct ids, want %d", len(a.ids), n)
	}
	for id := int64(1); id <= n; id++ {
		if !a.ids[id] {
			t.Errorf("id %d was never acknowledged (acknowledged %d ids, watermark %d)", id, len(a.ids), n)
			return
		}
	}
}

// eventBody is the JSON of count events (one object when count is 1, else an array) tagged
// with who wrote them.
func eventBody(writer string, seq, count int) string {
	evs := make([]string, count)
	for i := range evs {
		evs[i] = fmt.Sprintf(`{"type":"test","data":{"writer":%q,"seq":%d,"part":%d}}`, writer, seq, i)
	}
	if count == 1 {
		return evs[0]
	}
	return "[" + strings.Join(evs, ",") + "]"
}
