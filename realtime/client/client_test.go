package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/realtime/client"
	"tidings/web"
	"tidings/web/webtest"
)

func TestMain(m *testing.M) { datatest.Main(m) }

// node is one tidings node on a fixed address, which can be stopped and started again.
type node struct {
	t    *testing.T
	pool *pgxpool.Pool
	addr string
	n    *webtest.Node
}

func newNode(t *testing.T) *node {
	n := &node{t: t, pool: datatest.NewPool(t)}
	n.start()
	t.Cleanup(func() { n.shutdown() })
	return n
}

// start starts the node, on the address it had if it ran before.
func (n *node) start() {
	wn, err := webtest.Start(n.pool, webtest.Options{Web: web.Config{Dev: true}, Addr: n.addr})
	if err != nil {
		n.t.Fatal(err)
	}
	n.n, n.addr = wn, wn.Addr
}

func (n *node) shutdown() {
	if n.n != nil {
		n.n.Stop()
		n.n = nil
	}
}

func (n *node) url() string { return "http://" + n.addr }

func (n *node) publish(t *testing.T, count int) {
	t.Helper()
	err := pgx.BeginFunc(context.Background(), n.pool, func(tx pgx.Tx) error {
		evs := make([]data.NewEvent, count)
		for i := range evs {
			evs[i] = data.NewEvent{Type: "tick"}
		}
		_, err := data.AppendEvents(context.Background(), tx, evs)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// collect reads n events with a bound and checks they are the next ids.
func collect(t *testing.T, c *client.Client, from int64, n int) {
	t.Helper()
	for i := range n {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatal("events closed")
			}
			if want := from + int64(i) + 1; ev.ID != want {
				t.Fatalf("got event %d, want %d", ev.ID, want)
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("timed out at event %d of %d", i, n)
		}
	}
}

func runClient(t *testing.T, cfg client.Config) *client.Client {
	c := client.New(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c
}

func TestResumeAcrossServerRestart(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	zero := int64(0)
	ready := make(chan int64, 10)
	c := runClient(t, client.Config{URL: n.url(), LastEventID: &zero, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		OnReady: func(id int64) { ready <- id }})
	n.publish(t, 5)
	collect(t, c, 0, 5)

	n.shutdown()
	n.publish(t, 7) // while no node runs
	n.start()
	n.publish(t, 3)
	collect(t, c, 5, 10)
	if got := c.LastEventID(); got != 15 {
		t.Fatalf("last event id: got %d, want 15", got)
	}
	select {
	case ev := <-c.Events():
		t.Fatalf("an extra event %d", ev.ID)
	default:
	}
}

func TestPublishAndPing(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	c := runClient(t, client.Config{URL: n.url()})
	waitConnected(t, c)
	if _, err := c.Publish(context.Background(), "message", map[string]string{"text": "hi"}); !isRefusal(err, "unauthenticated") {
		t.Fatalf("anonymous publish: got %v, want unauthenticated", err)
	}

	// A client whose jar holds a session publishes as that account.
	signedIn := client.Config{URL: n.url()}
	signedIn.HTTPClient = newJarClient()
	resp, err := signedIn.HTTPClient.Post(n.url()+"/api/auth/register", "application/json", strings.NewReader(`{"name":"zoe","password":"password-zoe"}`))
	if err != nil || resp.StatusCode != 201 {
		t.Fatalf("register: %v %v", resp, err)
	}
	resp.Body.Close()
	sessions := make(chan client.Session, 4)
	signedIn.OnSession = func(s client.Session) { sessions <- s }
	c2 := runClient(t, signedIn)
	s := <-sessions
	if !strings.Contains(string(s.Session), `"name":"zoe"`) {
		t.Fatalf("session frame: %s", s.Session)
	}
	waitConnected(t, c2)
	id, err := c2.Publish(context.Background(), "message", map[string]string{"text": "hello"})
	if err != nil || id <= 0 {
		t.Fatalf("publish: got %d, %v", id, err)
	}
	keyed, err := c2.Publish(context.Background(), "message", map[string]string{"text": "once"}, client.WithKey("k-1"))
	if err != nil {
		t.Fatalf("keyed publish: %v", err)
	}
	if again, err := c2.Publish(context.Background(), "message", map[string]string{"text": "once"}, client.WithKey("k-1")); err != nil || again != keyed {
		t.Fatalf("keyed retry: got %d, %v; want %d", again, err, keyed)
	}
	if _, err := c2.Publish(context.Background(), "message", map[string]string{"text": "other"}, client.WithKey("k-1")); !isRefusal(err, "idempotency-key-reused") {
		t.Fatalf("key reused: got %v", err)
	}
	if _, err := c2.Publish(context.Background(), "user-update", map[string]string{}); !isRefusal(err, "forbidden") {
		t.Fatalf("forbidden type: got %v", err)
	}
	if err := c2.Ping(context.Background()); err != nil {
		t.Fatalf("ping: %v", err)
	}
}

func isRefusal(err error, code string) bool {
	var pe *client.PublishError
	return errors.As(err, &pe) && pe.Code == code
}

// waitConnected polls, with a bound, until a ping goes through.
func waitConnected(t *testing.T, c *client.Client) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := c.Ping(ctx)
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("never connected: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestCloseCodes runs the client against a peer that closes each first connection with one
// code, and checks what the client does next: fetch the session or not, reconnect or stop.
func TestCloseCodes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		code         websocket.StatusCode
		fetchSession bool
		fatal        bool
	}{
		{4002, false, false},
		{4001, true, false},
		{4003, true, false},
		{4004, false, false},
		{1001, false, false},
		{1011, false, false},
		{1008, false, true},
		{1009, false, true},
	}
	for _, tc := range cases {
		t.Run(tc.code.String(), func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var log []string
			note := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/api/session" {
					note("session")
					w.Write([]byte(`{"session":null,"notice":null}`))
					return
				}
				ws, err := websocket.Accept(w, r, nil)
				if err != nil {
					return
				}
				note("connect " + r.URL.RawQuery)
				ws.Write(context.Background(), websocket.MessageText, []byte(`{"type":"session","session":null,"notice":null}`))
				ws.Write(context.Background(), websocket.MessageText, []byte(`{"type":"event","id":7,"event":{"type":"x","data":null,"time":"2026-01-01T00:00:00.000Z"}}`))
				ws.Close(tc.code, "bye")
			}))
			defer srv.Close()
			c := client.New(client.Config{URL: srv.URL, MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			runErr := make(chan error, 1)
			go func() { runErr <- c.Run(ctx) }()
			go func() {
				for range c.Events() {
				}
			}()
			if tc.fatal {
				var fe *client.FatalCloseError
				if err := <-runErr; !errors.As(err, &fe) || fe.Code != int(tc.code) {
					t.Fatalf("got %v, want a fatal close %d", err, tc.code)
				}
				mu.Lock()
				defer mu.Unlock()
				if len(log) != 1 {
					t.Fatalf("got %v, want one connection and nothing after", log)
				}
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				mu.Lock()
				n := len(log)
				snapshot := append([]string(nil), log...)
				mu.Unlock()
				if n >= 3 && strings.HasPrefix(snapshot[n-1], "connect") || n >= 2 && !tc.fetchSession && strings.HasPrefix(snapshot[1], "connect") {
					want := []string{"connect ", "connect lastEventId=7"}
					if tc.fetchSession {
						want = []string{"connect ", "session", "connect lastEventId=7"}
					}
					if strings.Join(snapshot[:len(want)], "|") != strings.Join(want, "|") {
						t.Fatalf("got %q, want %q", snapshot, want)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("got %q", snapshot)
				}
				time.Sleep(time.Millisecond)
			}
			cancel()
			<-runErr
		})
	}
}

func newJarClient() *http.Client {
	jar, _ := cookiejar.New(nil)
	return &http.Client{Jar: jar}
}
