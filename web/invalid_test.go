package web_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/web"
)

// answer reads frames until the answer to a client frame (ack, error or pong), skipping
// events and presence.
func (c *client) answer() frame {
	c.t.Helper()
	for {
		f := c.next()
		switch f.Type {
		case "ack", "error", "pong":
			return f
		}
	}
}

// TestInvalidPublishesRefusedBeforeTheDatabase locks the users table, so that any read of a
// user waits, and publishes messages that break the message rules (U+0000, no text) from a
// socket: each is refused as invalid at once, without a read of the sender. POST /api/publish
// refuses U+0000 in data with 400 invalid-event, and nothing is stored.
func TestInvalidPublishesRefusedBeforeTheDatabase(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{APIKey: "secret"}})
	b := s.browser(t)
	b.register("nul")
	c := b.stream("")
	sessionOf(t, c.next())
	c.expect("ready")
	before := getWatermark(t, s)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lock, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Rollback(ctx)
	if _, err := lock.Exec(ctx, "LOCK TABLE users IN ACCESS EXCLUSIVE MODE"); err != nil {
		t.Fatal(err)
	}
	for i, text := range []string{`"a\u0000b"`, `"\u0000"`, `" "`, `1`} {
		c.send(`{"type":"publish","ref":"r","event":{"type":"message","data":{"text":` + text + `}}}`)
		if f := c.answer(); f.Type != "error" || f.Code != "invalid" {
			t.Fatalf("message %d (%s) while users are locked: got %+v, want invalid at once", i, text, f)
		}
	}
	lock.Rollback(ctx)

	for _, body := range []string{`{"type":"a","data":{"text":"\u0000"}}`, `[{"type":"a"},{"type":"b","data":{"\u0000":1}}]`, `{"type":"a","data":"\ud800"}`} {
		if code, answer, _ := postPublish(t, s, body); code != 400 || !strings.Contains(answer, `"invalid-event"`) {
			t.Fatalf("%s: got %d %s, want 400 invalid-event", body, code, answer)
		}
	}
	if w := getWatermark(t, s); w != before {
		t.Fatalf("refused publishes stored something: watermark %d, want %d", w, before)
	}
}

// TestRepeatedInvalidPublishesClose1008 checks that publishes refused as invalid count like
// invalid frames, although they are answered after the reader has gone on: nine in a row and
// an accepted publish leave the stream open, and so do nine more and a ping; ten in a row
// close it with 1008.
func TestRepeatedInvalidPublishesClose1008(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	b := s.browser(t)
	b.register("spam")
	c := b.stream("")
	sessionOf(t, c.next())
	c.expect("ready")
	const bad = `{"type":"publish","ref":"bad","event":{"type":"message","data":{"text":"\u0000"}}}`
	invalid := func(n int) {
		t.Helper()
		for range n {
			c.send(bad)
			if f := c.answer(); f.Code != "invalid" {
				t.Fatalf("got %+v, want invalid", f)
			}
		}
	}
	invalid(9)
	c.send(`{"type":"publish","ref":"ok","event":{"type":"message","data":{"text":"fine"}}}`)
	if f := c.answer(); f.Type != "ack" {
		t.Fatalf("a good publish after nine bad ones: got %+v, want ack", f)
	}
	invalid(9)
	c.send(`{"type":"ping","ref":"p"}`)
	if f := c.answer(); f.Type != "pong" {
		t.Fatalf("a ping after nine bad publishes: got %+v, want pong", f)
	}
	invalid(9)
	c.send(bad) // the tenth in a row: its answer may or may not come before the close
	c.expectClose(websocket.StatusPolicyViolation, "")
}
