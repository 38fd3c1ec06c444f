package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"tidings/realtime"
	"tidings/web"
)

// holdCounter locks the event counter row in a transaction of its own, so that every event
// writer waits, until the returned release is called (also in t.Cleanup).
func (s *testServer) holdCounter(t *testing.T) (release func()) {
	t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT last_id FROM event_log_state FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback(ctx) }) }
	t.Cleanup(release)
	return release
}

// waitingAppend polls, with a bound, until a backend appending events waits on a lock, and
// returns its pid.
func (s *testServer) waitingAppend(t *testing.T) int32 {
	t.Helper()
	var pid int32
	waitFor(t, "an append waiting on a lock", func() bool {
		err := s.pool.QueryRow(context.Background(), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock'
			AND (query LIKE '%tidings_publish_keyed%' OR query LIKE '%tidings_append_events%')`).Scan(&pid)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return err == nil
	})
	return pid
}

// count runs a count query.
func (s *testServer) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := s.pool.QueryRow(context.Background(), query, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// nextAnswer reads frames, skipping events, until the ack or error with ref.
func (c *client) nextAnswer(ref string) frame {
	c.t.Helper()
	for {
		f := c.next()
		if (f.Type == "ack" || f.Type == "error") && f.Ref != nil && *f.Ref == ref {
			return f
		}
		if f.Type != "event" {
			c.t.Fatalf("waiting for the answer to %s: got %+v", ref, f)
		}
	}
}

func publishFrame(ref, key, text string) string {
	k := ""
	if key != "" {
		k = fmt.Sprintf(`,"key":%q`, key)
	}
	return fmt.Sprintf(`{"type":"publish","ref":%q%s,"event":{"type":"message","data":{"text":%q}}}`, ref, k, text)
}

// TestSocketPublishDuringStalledDatabase holds the event counter row so that a socket publish
// waits on the database, and checks that the stream meanwhile answers the client's ping and
// keeps answering the server's pings (100 ms apart, each due within 500 ms), that the publish
// is answered with outcome-unknown once its 1 s are up, and, once the database is released,
// that the event was stored once and a retry with its key returns its id and stores nothing.
func TestSocketPublishDuringStalledDatabase(t *testing.T) {
	t.Parallel()
	const publishTimeout = time.Second
	s := newServer(t, serverOptions{web: web.Config{Stream: realtime.StreamConfig{
		PingInterval: 100 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, PublishTimeout: publishTimeout,
	}}})
	b := s.browser(t)
	b.register("pat")
	var pings atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/api/events", &websocket.DialOptions{
		HTTPClient:     b.client,
		OnPingReceived: func(context.Context, []byte) bool { pings.Add(1); return true },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &client{t: t, conn: conn}
	c.expect("session")
	c.expect("ready")

	wm := getWatermark(t, s)
	release := s.holdCounter(t)
	sent := time.Now()
	c.send(publishFrame("r1", "k1", "hello"))
	s.waitingAppend(t)
	pingsBefore := pings.Load()
	c.send(`{"type":"ping","ref":"p1"}`)
	if f := c.next(); f.Type != "pong" || *f.Ref != "p1" {
		t.Fatalf("ping while the publish waits: got %+v, want pong p1 first", f)
	}
	f := c.next()
	waited := time.Since(sent)
	if f.Type != "error" || *f.Ref != "r1" || f.Code != realtime.CodeOutcomeUnknown {
		t.Fatalf("stalled publish: got %+v, want error outcome-unknown", f)
	}
	if waited > publishTimeout+2*time.Second {
		t.Fatalf("the stalled publish was answered after %v, want about %v", waited, publishTimeout)
	}
	if n := pings.Load() - pingsBefore; n < 3 {
		t.Fatalf("the server sent %d pings while the publish waited, want several", n)
	}
	c.send(`{"type":"ping","ref":"p2"}`)
	if f := c.next(); f.Type != "pong" {
		t.Fatalf("after the stalled publish: got %+v, want pong", f)
	}

	release()
	// The batch the publish was sent in commits now: the outcome was indeed unknown.
	if f := c.next(); f.Type != "event" || f.ID != wm+1 {
		t.Fatalf("after the release: got %+v, want event %d", f, wm+1)
	}
	c.send(publishFrame("r2", "k1", "hello"))
	if f := c.nextAnswer("r2"); f.Type != "ack" || f.ID != wm+1 {
		t.Fatalf("retry with the key: got %+v, want ack %d", f, wm+1)
	}
	c.send(publishFrame("r3", "k1", "another text"))
	if f := c.nextAnswer("r3"); f.Type != "error" || f.Code != realtime.CodeKeyReused {
		t.Fatalf("the key for another event: got %+v, want idempotency-key-reused", f)
	}
	if n := s.count(t, "SELECT count(*) FROM events WHERE type = 'message'"); n != 1 {
		t.Fatalf("got %d messages stored, want 1", n)
	}
}

// TestSocketPublishQueueIsBounded stalls the database and sends nine publishes at once: the
// ninth is refused with rate-limited at once, before any other answer, since eight are already
// waiting; the eight are answered in order when their time is up (the one sent to the
// database with outcome-unknown, the others with internal: never sent), and only the first is
// stored.
func TestSocketPublishQueueIsBounded(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{Stream: realtime.StreamConfig{PublishTimeout: time.Second}}})
	b := s.browser(t)
	b.register("quinn")
	c := b.stream("")
	c.expect("session")
	c.expect("ready")

	wm := getWatermark(t, s)
	release := s.holdCounter(t)
	for i := range 9 {
		c.send(publishFrame(fmt.Sprint("q", i), "", fmt.Sprint("m", i)))
	}
	if f := c.next(); f.Type != "error" || *f.Ref != "q8" || f.Code != realtime.CodeRateLimited {
		t.Fatalf("first answer: got %+v, want q8 rate-limited", f)
	}
	for i := range 8 {
		want := realtime.CodeInternal
		if i == 0 {
			want = realtime.CodeOutcomeUnknown
		}
		if f := c.next(); f.Type != "error" || *f.Ref != fmt.Sprint("q", i) || f.Code != want {
			t.Fatalf("answer %d: got %+v, want q%d %s", i, f, i, want)
		}
	}
	release()
	c.expectEvents(wm + 1)
	c.send(publishFrame("after", "", "after"))
	if f := c.nextAnswer("after"); f.Type != "ack" || f.ID != wm+2 {
		t.Fatalf("publish after the stall: got %+v, want ack %d", f, wm+2)
	}
	if n := s.count(t, "SELECT count(*) FROM events WHERE type = 'message'"); n != 2 {
		t.Fatalf("got %d messages stored, want 2", n)
	}
}

// TestSocketPublishKeys checks the scope of socket keys: one account's streams share them,
// another account's key of the same name is its own.
func TestSocketPublishKeys(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	alice, bob := s.browser(t), s.browser(t)
	alice.register("alice")
	bob.register("bob")
	var streams []*client
	for _, b := range []*browser{alice, alice, bob} {
		c := b.stream("")
		c.expect("session")
		c.expect("ready")
		streams = append(streams, c)
	}
	answers := make([]frame, 3)
	for i, c := range streams {
		c.send(publishFrame("r", "same-key", "hi"))
		answers[i] = c.nextAnswer("r")
	}
	if answers[0].Type != "ack" || answers[1].Type != "ack" || answers[1].ID != answers[0].ID {
		t.Fatalf("one account, one key, two streams: got %+v and %+v, want one id", answers[0], answers[1])
	}
	if answers[2].Type != "ack" || answers[2].ID == answers[0].ID {
		t.Fatalf("another account, same key: got %+v, want an id of its own", answers[2])
	}
	if n := s.count(t, "SELECT count(*) FROM events WHERE type = 'message'"); n != 2 {
		t.Fatalf("got %d messages stored, want 2", n)
	}
	streams[0].send(`{"type":"publish","ref":"bad","key":"no spaces","event":{"type":"message","data":{"text":"x"}}}`)
	if f := streams[0].nextAnswer("bad"); f.Code != realtime.CodeInvalidFrame {
		t.Fatalf("invalid key: got %+v, want invalid-frame", f)
	}
}

// postPublish sends POST /api/publish with the API key "secret" and the given Idempotency-Key
// values.
func postPublish(t *testing.T, s *testServer, body string, keys ...string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", s.URL+"/api/publish", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer secret")
	for _, k := range keys {
		req.Header.Add("Idempotency-Key", k)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestPublishAPIIdempotencyKey(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{APIKey: "secret"}})
	code, body, h := postPublish(t, s, `[{"type":"a"},{"type":"a","data":{"x":1}}]`, "k1")
	if code != 200 || body != "{\"ids\":[1,2]}\n" || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: got %d %s %v", code, body, h)
	}
	// The same request, with other white space and the key quoted: the same answer.
	code, body, h = postPublish(t, s, ` [ {"type":"a"}, {"type":"a","data":{ "x" : 1 }} ]`, `"k1"`)
	if code != 200 || body != "{\"ids\":[1,2]}\n" || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("retry: got %d %s %v", code, body, h)
	}
	if code, body, _ := postPublish(t, s, `{"type":"a"}`, "k1"); code != 422 || !strings.Contains(body, `"idempotency-key-reused"`) {
		t.Fatalf("the key for another request: got %d %s, want 422", code, body)
	}
	for _, keys := range [][]string{{""}, {"a b"}, {`"k1`}, {"k1", "k1"}, {strings.Repeat("k", 256)}} {
		if code, body, _ := postPublish(t, s, `{"type":"a"}`, keys...); code != 400 || !strings.Contains(body, `"invalid-idempotency-key"`) {
			t.Fatalf("keys %q: got %d %s, want 400 invalid-idempotency-key", keys, code, body)
		}
	}
	// Concurrent retries of one new key: one stores, every other gets its ids.
	var wg sync.WaitGroup
	bodies := make([]string, 8)
	for i := range bodies {
		wg.Go(func() {
			code, body, _ := postPublish(t, s, `{"type":"b"}`, "k2")
			if code != 200 {
				t.Errorf("concurrent retry: got %d %s", code, body)
			}
			bodies[i] = body
		})
	}
	wg.Wait()
	for _, b := range bodies {
		if b != bodies[0] {
			t.Fatalf("concurrent retries: got %q and %q, want one answer", bodies[0], b)
		}
	}
	if wm := getWatermark(t, s); wm != 3 {
		t.Fatalf("watermark: got %d, want 3", wm)
	}
}

// TestPublishAPIOutcomeUnknown terminates the backend of a publish while it waits for the
// counter row: the answer is 503 outcome-unknown, not unavailable (which says nothing was
// stored); a retry with the key stores the events once.
func TestPublishAPIOutcomeUnknown(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{APIKey: "secret"}})
	release := s.holdCounter(t)
	type answer struct {
		code int
		body string
	}
	first := make(chan answer, 1)
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		code, body, _ := postPublish(t, s, `{"type":"a"}`, "once")
		first <- answer{code, body}
	})
	pid := s.waitingAppend(t)
	if _, err := s.pool.Exec(context.Background(), "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	a := <-first
	var e struct {
		Error struct{ Code string } `json:"error"`
	}
	if json.Unmarshal([]byte(a.body), &e); a.code != 503 || e.Error.Code != "outcome-unknown" {
		t.Fatalf("publish whose connection was lost: got %d %s, want 503 outcome-unknown", a.code, a.body)
	}
	release()
	for range 2 {
		if code, body, _ := postPublish(t, s, `{"type":"a"}`, "once"); code != 200 || body != "{\"ids\":[1]}\n" {
			t.Fatalf("retry: got %d %s, want 200 [1]", code, body)
		}
	}
	if n := s.count(t, "SELECT count(*) FROM events"); n != 1 {
		t.Fatalf("got %d events, want 1", n)
	}
}
