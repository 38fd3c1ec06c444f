package realtime

import (
	"context"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"tidings/data"
	"tidings/data/datatest"
)

// The frames a bearer stream sends beyond a cookie's (docs/protocol.md, "Bearer sessions"): the
// token frame right after the session frame when the upgrade rotated the session, and the one
// sent by the writer at CloseAt just before the close.

const tokenFrame = `{"type":"token","token":"successor"}`

// readText reads one message with a bound and returns it, or the close code as "close N".
func readText(t *testing.T, c *websocket.Conn) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, msg, err := c.Read(ctx)
	if code := websocket.CloseStatus(err); code != -1 {
		return fmt.Sprint("close ", int(code))
	}
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(msg)
}

// TestTokenFrameAfterSession: the token frame follows the session frame at once, before ready;
// and with OnProven, only the pong to a ping sent after it proves that the client received it:
// a frame the client sends proves nothing, since it may have crossed the token frame.
func TestTokenFrameAfterSession(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	var proven atomic.Int32
	s := startStreamServer(t, pool, data.NewEvents(pool), HubConfig{}, StreamConfig{}, func(r *http.Request) StreamOptions {
		opts := StreamOptions{OnProven: func() { proven.Add(1) }}
		if r.URL.Query().Get("token") != "" {
			opts.TokenFrame = []byte(tokenFrame)
		}
		return opts
	})
	dial := func(query string, pong bool, read *atomic.Int32, pingAfter *atomic.Int32) *websocket.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, _, err := websocket.Dial(ctx, s.url+"?"+query, &websocket.DialOptions{
			OnPingReceived: func(context.Context, []byte) bool {
				if pingAfter != nil && pingAfter.Load() < 0 {
					pingAfter.Store(read.Load()) // how many messages the client had read
				}
				return pong
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.CloseNow() })
		return c
	}
	served := func() {
		t.Helper()
		select {
		case <-s.served: // Serve joined the goroutine that proves: OnProven ran, or never will
		case <-time.After(10 * time.Second):
			t.Fatal("the stream did not end")
		}
	}

	// A frame from the client, no pong: proof of the upgrade, not of the token frame.
	c := dial("token=1", false, nil, nil)
	if got := readText(t, c); got != `{"type":"session","session":null}` {
		t.Fatalf("first frame: got %s", got)
	}
	if got := readText(t, c); got != tokenFrame {
		t.Fatalf("second frame: got %s, want the token frame", got)
	}
	c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping","ref":"p"}`))
	for got := ""; got != `{"type":"pong","ref":"p"}`; {
		got = readText(t, c)
	}
	c.Close(websocket.StatusNormalClosure, "")
	served()
	if n := proven.Load(); n != 0 {
		t.Fatalf("a client frame proved the token frame (OnProven called %d times)", n)
	}

	// The same without a token frame: the frame is proof of the upgrade.
	c = dial("", false, nil, nil)
	readText(t, c)
	c.Write(context.Background(), websocket.MessageText, []byte(`{"type":"ping","ref":"p"}`))
	readText(t, c)
	c.Close(websocket.StatusNormalClosure, "")
	served()
	if n := proven.Swap(0); n != 1 {
		t.Fatalf("without a token frame, a client frame: OnProven called %d times, want 1", n)
	}

	// A client that reads and answers pings: the ping came after the token frame, and its pong
	// proves it.
	var read, pingAfter atomic.Int32
	pingAfter.Store(-1)
	c = dial("token=1", true, &read, &pingAfter)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for {
			if _, _, err := c.Read(ctx); err != nil {
				return
			}
			read.Add(1)
		}
	}()
	waitUntil(t, "the pong to prove the token frame", func() bool { return proven.Load() == 1 })
	if n := pingAfter.Load(); n < 2 {
		t.Fatalf("the proving ping reached the client after %d messages, want it after the session and token frames", n)
	}
}

// TestFinalFrameBeforeTheClose: at CloseAt the writer asks FinalFrame and sends its frame just
// before the close, even when the close is asked meanwhile by a control event (that of the
// rotation FinalFrame makes) that the hub has already applied.
func TestFinalFrameBeforeTheClose(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	var hub atomic.Pointer[Hub]
	s := startStreamServer(t, pool, data.NewEvents(pool), HubConfig{}, StreamConfig{}, func(r *http.Request) StreamOptions {
		var w, session int64
		fmt.Sscan(r.URL.Query().Get("session"), &session)
		opts := StreamOptions{
			Viewer: Viewer{SessionID: session, UserID: session, Type: data.UserRegular}, Watermark: &w,
			CloseAt: time.Now().Add(200 * time.Millisecond), CloseAtReason: CloseSessionRotated,
		}
		switch r.URL.Query().Get("final") {
		case "token":
			opts.FinalFrame = func(ctx context.Context) []byte {
				// As a rotation does: the control event that closes the session's streams
				// commits first, and the hub applies it before the frame is handed over.
				ev := data.CloseStreams{SessionIDs: []int64{session}, Code: 4002, Reason: "session-rotated"}.Event()
				if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error { return data.AppendControl(ctx, tx, ev) }); err != nil {
					t.Errorf("append the control event: %v", err)
					return nil
				}
				for h := hub.Load(); h.Head() < 1; {
					if ctx.Err() != nil {
						return nil
					}
					time.Sleep(time.Millisecond)
				}
				return []byte(tokenFrame)
			}
		case "none":
			opts.FinalFrame = func(context.Context) []byte { return nil }
		}
		return opts
	})
	hub.Store(s.hub)
	c := s.dialQuery(t, "final=token&session=5")
	wantFrames(t, c, "ready 0")
	if got := readText(t, c); got != tokenFrame {
		t.Fatalf("at CloseAt: got %s, want the token frame first", got)
	}
	if got := readText(t, c); got != "close 4002" {
		t.Fatalf("after the token frame: got %s, want close 4002", got)
	}
	c = s.dialQuery(t, "final=none&session=6")
	wantFrames(t, c, "ready 0", "close 4002")
}
