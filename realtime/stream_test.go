package realtime

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
)

// streamServer is a hub serving streams over real sockets, without the web package's routes.
type streamServer struct {
	hub    *Hub
	pool   *pgxpool.Pool
	url    string
	served chan error // one value per stream, when its Serve returns
	stop   func()     // closes every stream and stops the node; called at the test's end too
}

func newStreamServer(t *testing.T, cfg StreamConfig) *streamServer {
	t.Helper()
	pool := datatest.NewPool(t)
	return newStreamServerOn(t, pool, data.NewEvents(pool), cfg)
}

// newStreamServerOn is newStreamServer with the hub reading store.
func newStreamServerOn(t *testing.T, pool *pgxpool.Pool, store Store, cfg StreamConfig) *streamServer {
	t.Helper()
	return startStreamServer(t, pool, store, HubConfig{}, cfg, nil)
}

// startStreamServer is a stream server with every setting: the hub's config (its poll is an
// hour unless set), and the options of each stream, decided from its request (nil: an anonymous
// stream with the request's lastEventId).
func startStreamServer(t *testing.T, pool *pgxpool.Pool, store Store, hcfg HubConfig, cfg StreamConfig, optsFor func(*http.Request) StreamOptions, tweak ...func(*httptest.Server)) *streamServer {
	t.Helper()
	return startNode(t, pool, store, hcfg, cfg, optsFor, nil, tweak...)
}

// startNode is startStreamServer with a setup of the hub before it runs and serves (attaching
// its presence, say), which returns what else to run beside the hub.
func startNode(t *testing.T, pool *pgxpool.Pool, store Store, hcfg HubConfig, cfg StreamConfig, optsFor func(*http.Request) StreamOptions, setup func(*Hub) func(context.Context), tweak ...func(*httptest.Server)) *streamServer {
	t.Helper()
	if hcfg.Poll == 0 {
		hcfg.Poll = time.Hour
	}
	hub := NewHub(store, hcfg)
	hub.shard = 4 // hand pages out in parallel, as to thousands of streams
	ctx, cancel := context.WithCancel(context.Background())
	var run sync.WaitGroup
	if setup != nil {
		if beside := setup(hub); beside != nil {
			run.Go(func() { beside(ctx) })
		}
	}
	run.Go(func() { hub.Run(ctx) })
	s := &streamServer{hub: hub, pool: pool, served: make(chan error, 100)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		opts := StreamOptions{LastEventID: lastEventIDOf(r)}
		if optsFor != nil {
			opts = optsFor(r)
		}
		if opts.SessionFrame == nil {
			opts.SessionFrame = []byte(`{"type":"session","session":null}`)
		}
		sock, err := Accept(w, r, nil)
		if err != nil {
			return
		}
		err = hub.Serve(r.Context(), sock, cfg, opts)
		select {
		case s.served <- err:
		default: // a test with more streams than it reads results of
		}
	}))
	for _, f := range tweak {
		f(srv)
	}
	srv.Start()
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			hub.Shutdown()
			srv.Close()
			cancel()
			run.Wait()
		})
	}
	t.Cleanup(s.stop)
	<-hub.Ready()
	s.url = "ws" + strings.TrimPrefix(srv.URL, "http")
	return s
}

// lastEventIDOf is the request's lastEventId, nil when absent (the web package parses it
// strictly; tests send only good ones).
func lastEventIDOf(r *http.Request) *int64 {
	v := r.URL.Query().Get("lastEventId")
	if v == "" {
		return nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		panic(err)
	}
	return &n
}

// dial opens a live stream and reads its session and ready frames.
func (s *streamServer) dial(t *testing.T) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	for _, want := range []string{"session", "ready"} {
		if f := readFrame(t, c); f.Type != want {
			t.Fatalf("got %q frame, want %q", f.Type, want)
		}
	}
	return c
}

type testFrame struct {
	Type string `json:"type"`
	ID   int64  `json:"id"`
}

func readFrame(t *testing.T, c *websocket.Conn) testFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, msg, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f testFrame
	if err := json.Unmarshal(msg, &f); err != nil {
		t.Fatalf("frame %s: %v", msg, err)
	}
	return f
}

func (s *streamServer) publish(t *testing.T, n int, payload string) {
	t.Helper()
	evs := make([]data.NewEvent, n)
	for i := range evs {
		evs[i] = data.NewEvent{Type: "test", Data: json.RawMessage(payload)}
	}
	ctx := context.Background()
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		_, err := data.AppendEvents(ctx, tx, evs)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	s.hub.Wake()
}

// waitUntil polls cond for up to 10 s.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestParkedStreamsAreWrittenByTheHub: live streams with nothing to send park their writers,
// and the hub writes new events to them itself, in order, without starting a writer.
func TestParkedStreamsAreWrittenByTheHub(t *testing.T) {
	t.Parallel()
	s := newStreamServer(t, StreamConfig{})
	const streams, events = 20, 5
	conns := make([]*websocket.Conn, streams)
	for i := range conns {
		conns[i] = s.dial(t)
	}
	waitUntil(t, "every writer parked", func() bool { return s.hub.Writers() == 0 })
	restarts := s.hub.restarts.Load()
	for range events {
		s.publish(t, 1, `{"n":1}`)
	}
	for i, c := range conns {
		for want := int64(1); want <= events; want++ {
			if f := readFrame(t, c); f.Type != "event" || f.ID != want {
				t.Fatalf("stream %d: got %s %d, want event %d", i, f.Type, f.ID, want)
			}
		}
	}
	if got := s.hub.restarts.Load() - restarts; got != 0 {
		t.Fatalf("%d writers started to deliver events to current, idle streams; want none", got)
	}
	if w := s.hub.Writers(); w != 0 {
		t.Fatalf("%d writers running after delivery; want 0", w)
	}
}

// TestParkedStreamBackedUpHandsOverToItsWriter: a parked stream whose peer stops reading fills
// its socket; the hub's non-blocking writes leave a frame half sent, the writer finishes it,
// and once the peer reads again every event arrives whole and in order.
func TestParkedStreamBackedUpHandsOverToItsWriter(t *testing.T) {
	t.Parallel()
	s := newStreamServer(t, StreamConfig{MaxLag: 1 << 20, WriteTimeout: time.Minute}) // only the lag rule and the peer matter here
	c := s.dial(t)
	c.SetReadLimit(1 << 20)
	waitUntil(t, "the writer parked", func() bool { return s.hub.Writers() == 0 })
	const events = 200
	payload := `"` + strings.Repeat("x", 32<<10) + `"`
	for range events / 10 {
		s.publish(t, 10, payload)
	}
	waitUntil(t, "a writer to take over the backed-up socket", func() bool { return s.hub.restarts.Load() > 0 })
	for want := int64(1); want <= events; want++ {
		if f := readFrame(t, c); f.Type != "event" || f.ID != want {
			t.Fatalf("got %s %d, want event %d", f.Type, f.ID, want)
		}
	}
	waitUntil(t, "the writer parked again", func() bool { return s.hub.Writers() == 0 })
}

// TestParkedStreamPingsFindADeadPeer: a parked stream still pings; a peer that never answers
// is dropped after the write timeout, and the stream ends.
func TestParkedStreamPingsFindADeadPeer(t *testing.T) {
	t.Parallel()
	s := newStreamServer(t, StreamConfig{PingInterval: 20 * time.Millisecond, WriteTimeout: 50 * time.Millisecond})
	s.dial(t) // and never read again: pongs are only sent while reading
	select {
	case err := <-s.served:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a peer that answers no ping is still open")
	}
	if s.hub.Subscribers() != 0 {
		t.Fatalf("%d subscribers left", s.hub.Subscribers())
	}
}

// TestParkedStreamAnswersPings: a client ping to a parked stream gets its pong.
func TestParkedStreamAnswersPings(t *testing.T) {
	t.Parallel()
	s := newStreamServer(t, StreamConfig{})
	c := s.dial(t)
	waitUntil(t, "the writer parked", func() bool { return s.hub.Writers() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"ping","ref":"p1"}`)); err != nil {
		t.Fatal(err)
	}
	if f := readFrame(t, c); f.Type != "pong" {
		t.Fatalf("got %q, want pong", f.Type)
	}
	c.Close(websocket.StatusNormalClosure, "")
	if err := <-s.served; err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("serve: %v", err)
	}
}

// deafStore is the event log without its wake-ups: the hub reads it only when woken by hand.
type deafStore struct{ *data.Events }

func (deafStore) Listen(ctx context.Context, _ data.ListenerConfig, _ func(data.ListenerState)) error {
	<-ctx.Done()
	return nil
}

// TestLiveStartIsTheDatabaseWatermark: a stream opened without lastEventId starts at the
// database's watermark even while the hub has not read the newest commits yet, so an event
// committed before the stream opened never arrives as live.
func TestLiveStartIsTheDatabaseWatermark(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	s := newStreamServerOn(t, pool, deafStore{data.NewEvents(pool)}, StreamConfig{})
	hub, ctx := s.hub, context.Background()

	evs := []data.NewEvent{{Type: "before", Data: json.RawMessage(`1`)}}
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { _, err := data.AppendEvents(ctx, tx, evs); return err }); err != nil {
		t.Fatal(err)
	}
	if h := hub.Head(); h != 0 {
		t.Fatalf("hub head %d: it should not have heard of event 1", h)
	}
	dctx, dcancel := context.WithTimeout(ctx, 10*time.Second)
	defer dcancel()
	c, _, err := websocket.Dial(dctx, s.url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	readFrame(t, c) // session
	_, msg, err := c.Read(dctx)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != `{"type":"ready","lastEventId":1}` {
		t.Fatalf("got %s, want ready at the database's watermark 1", msg)
	}
	s.publish(t, 1, `2`) // and wakes the hub, which reads 1 and 2
	if f := readFrame(t, c); f.Type != "event" || f.ID != 2 {
		t.Fatalf("got %s %d, want event 2 only", f.Type, f.ID)
	}
}
