package web_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/data"
	"tidings/realtime"
	"tidings/web"
)

// cacheModes runs a test with replays served from the recent-events cache and from the table.
var cacheModes = []struct {
	name string
	size int
}{{"cache", 1 << 16}, {"table", 1}}

func TestReplayThenReadyThenLive(t *testing.T) {
	t.Parallel()
	for _, mode := range cacheModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, serverOptions{hub: realtime.HubConfig{CacheSize: mode.size, PageSize: 2}})
			s.publishN(t, 5, "note")
			waitFor(t, "hub at 5", func() bool { return s.hub.Head() == 5 })
			c := s.dial(t, "lastEventId=1", nil)
			if f := c.expect("session"); string(f.Session) != "null" || f.Notice != nil {
				t.Fatalf("session frame: got %+v", f)
			}
			c.expectEvents(2, 3, 4, 5)
			if f := c.expect("ready"); f.LastEventID != 5 {
				t.Fatalf("ready: got %d, want 5", f.LastEventID)
			}
			s.publishN(t, 2, "note")
			c.expectEvents(6, 7)
		})
	}
}

func TestEventFrameContent(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	c := s.dialLive(t)
	s.publish(t, data.NewEvent{Type: "note", Data: json.RawMessage(`{"text":"hé"}`)})
	f := c.expect("event")
	var e struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
		Time string          `json:"time"`
	}
	if err := json.Unmarshal(f.Event, &e); err != nil || e.Type != "note" || string(e.Data) != `{"text": "hé"}` || len(e.Time) != len("2026-01-02T03:04:05.678Z") || !strings.HasSuffix(e.Time, "Z") {
		t.Fatalf("event: got %s (%v)", f.Event, err)
	}
}

func TestNoLastEventIDStartsLive(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	s.publishN(t, 3, "old")
	waitFor(t, "hub at 3", func() bool { return s.hub.Head() == 3 })
	c := s.dial(t, "", nil)
	c.expect("session")
	if f := c.expect("ready"); f.LastEventID != 3 {
		t.Fatalf("ready: got %d, want 3", f.LastEventID)
	}
	s.publishN(t, 1, "new")
	c.expectEvents(4)
}

func TestResetWhenAheadOfTheLog(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	s.publishN(t, 3, "e")
	waitFor(t, "hub at 3", func() bool { return s.hub.Head() == 3 })
	c := s.dial(t, "lastEventId=10", nil)
	c.expect("session")
	if f := c.expect("reset"); f.LastEventID != 3 {
		t.Fatalf("reset: got %d, want 3", f.LastEventID)
	}
	if f := c.expect("ready"); f.LastEventID != 3 {
		t.Fatalf("ready: got %d, want 3", f.LastEventID)
	}
	s.publishN(t, 1, "e")
	c.expectEvents(4)
}

func TestResetWhenPruned(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{hub: realtime.HubConfig{CacheSize: 2}})
	s.publishN(t, 10, "e")
	if _, err := s.pool.Exec(context.Background(), "UPDATE events SET time = now() - interval '30 days' WHERE id <= 5"); err != nil {
		t.Fatal(err)
	}
	if n, err := s.events.PruneOlderThan(context.Background(), time.Now().Add(-24*time.Hour)); err != nil || n != 5 {
		t.Fatalf("prune: got %d, %v", n, err)
	}
	waitFor(t, "hub at 10", func() bool { return s.hub.Head() == 10 })

	c := s.dial(t, "lastEventId=2", nil)
	c.expect("session")
	if f := c.expect("reset"); f.LastEventID != 10 {
		t.Fatalf("reset: got %d, want 10", f.LastEventID)
	}
	if f := c.expect("ready"); f.LastEventID != 10 {
		t.Fatalf("ready: got %d, want 10", f.LastEventID)
	}
	s.publishN(t, 1, "e")
	c.expectEvents(11)

	// Resuming right at the pruned edge loses nothing, so it is a replay, not a reset.
	c2 := s.dial(t, "lastEventId=5", nil)
	c2.expect("session")
	c2.expectEvents(6, 7, 8, 9, 10, 11)
	c2.expect("ready")
}

func TestInvalidLastEventIDIs400(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	for _, q := range []string{"lastEventId=", "lastEventId=abc", "lastEventId=-1", "lastEventId=%2B1", "lastEventId=1.5",
		"lastEventId=0x10", "lastEventId=1e3", "lastEventId=9223372036854775808", "lastEventId=1&lastEventId=2"} {
		c, err := s.tryDial(t, q, nil)
		if err == nil {
			t.Errorf("?%s: upgraded, want 400", q)
			continue
		}
		if c.resp == nil || c.resp.StatusCode != http.StatusBadRequest {
			t.Errorf("?%s: got %v, want 400", q, err)
		}
	}
	// The same request without an upgrade shows the JSON body.
	resp, err := http.Get(s.URL + "/api/events?lastEventId=abc")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"code":"invalid-last-event-id"`) {
		t.Fatalf("got %d %s", resp.StatusCode, body)
	}
}

func TestOriginCheck(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	if c, err := s.tryDial(t, "", http.Header{"Origin": {"http://evil.example"}}); err == nil || c.resp == nil || c.resp.StatusCode != 403 {
		t.Fatalf("foreign origin: got %v, want 403", err)
	}
	c := s.dial(t, "", http.Header{"Origin": {s.URL}})
	c.expect("session")
	if c.conn.Subprotocol() != "tidings.v1" {
		t.Fatalf("subprotocol: got %q, want tidings.v1", c.conn.Subprotocol())
	}
	c = s.dial(t, "", nil) // no Origin: not a browser
	c.expect("session")

	other := newServer(t, serverOptions{web: web.Config{AllowedOrigins: []string{"https://app.example"}}})
	if c, err := other.tryDial(t, "", http.Header{"Origin": {other.URL}}); err == nil || c.resp.StatusCode != 403 {
		t.Fatalf("own origin when a list is configured: got %v, want 403", err)
	}
	other.dial(t, "", http.Header{"Origin": {"https://app.example"}}).expect("session")
}

func TestNoSubprotocolIsAccepted(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	ctx := context.Background()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(s.URL, "http")+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	_, msg, err := conn.Read(ctx)
	if err != nil || !strings.Contains(string(msg), `"type":"session"`) {
		t.Fatalf("got %s, %v", msg, err)
	}
}
