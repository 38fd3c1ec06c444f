package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/realtime/client"
)

// rawServer is a peer that speaks raw frames: serve runs once per connection, and returns
// when it is done with it (the socket is then closed). It counts the connections.
func rawServer(t *testing.T, serve func(ctx context.Context, ws *websocket.Conn)) (url string, connections *atomic.Int64) {
	t.Helper()
	connections = new(atomic.Int64)
	// Not the request's context, which a hijacked connection does not end.
	ctx, cancel := context.WithCancel(context.Background())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		connections.Add(1)
		defer ws.CloseNow()
		serve(ctx, ws)
	}))
	t.Cleanup(func() { cancel(); srv.Close() }) // Close waits for the handlers
	return srv.URL, connections
}

func writeFrames(ctx context.Context, ws *websocket.Conn, frames ...string) error {
	for _, f := range frames {
		if err := ws.Write(ctx, websocket.MessageText, []byte(f)); err != nil {
			return err
		}
	}
	return nil
}

// TestEphemeralFramesBetweenEvents: presence and signal frames, and frames of types the client
// does not know (with fields of any shape, a ref included), arrive between events. The client
// reports each ephemeral frame in order, delivers every event once and in order, and keeps
// the one connection it has (docs/protocol.md sections 2 and 8).
func TestEphemeralFramesBetweenEvents(t *testing.T) {
	t.Parallel()
	ev := func(id int) string {
		return fmt.Sprintf(`{"type":"event","id":%d,"event":{"type":"tick","data":{"n":%d},"time":"2026-11-26T01:02:03.000Z"}}`, id, id)
	}
	url, connections := rawServer(t, func(ctx context.Context, ws *websocket.Conn) {
		writeFrames(ctx, ws,
			`{"type":"session","session":{"id":1,"account":{"id":7,"name":"ada","type":"regular"}},"notice":null}`,
			`{"type":"ready","lastEventId":0}`,
			`{"type":"presence","online":[7,12]}`,
			ev(1),
			`{"type":"future-thing","id":"not a number","ref":5,"online":"maybe","event":[1,2],"userId":{"a":1}}`,
			`{"type":"presence-change","userId":3,"online":true}`,
			ev(2),
			`{"type":"signal","from":7,"signal":{"type":"typing","data":{}}}`,
			`{"type":"future-thing","ref":"q1"}`,
			`{"type":"presence-change","userId":12,"online":false,"node":"b"}`,
			`{"type":"signal","from":3,"signal":{"type":"cursor","data":{"x":1},"extra":true}}`,
			ev(3),
			`{"extra":"no type at all"}`,
			`{"type":"presence","online":[]}`,
			ev(4),
		)
		ws.Read(ctx) // hold the connection until the client goes
	})

	var mu sync.Mutex
	var got []string
	note := func(s string) { mu.Lock(); got = append(got, s); mu.Unlock() }
	var closes atomic.Int64
	c := runClient(t, client.Config{URL: url,
		OnPresence:       func(online []int64) { note(fmt.Sprint("presence ", online)) },
		OnPresenceChange: func(id int64, online bool) { note(fmt.Sprint("change ", id, " ", online)) },
		OnSignal:         func(s client.Signal) { note(fmt.Sprintf("signal %d %s %s", s.From, s.Type, s.Data)) },
		OnClose:          func(int, string) { closes.Add(1) },
	})
	collect(t, c, 0, 4)
	want := []string{
		"presence [7 12]", "change 3 true", "signal 7 typing {}", "change 12 false",
		`signal 3 cursor {"x":1}`, "presence []",
	}
	// The last event follows the last ephemeral frame on the same goroutine, but reaches the
	// channel after the callback ran: the log is complete once event 4 was received.
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if n, cl := connections.Load(), closes.Load(); n != 1 || cl != 0 {
		t.Fatalf("got %d connections and %d closes, want 1 and 0: a frame ended the connection", n, cl)
	}
}

// TestUnaskedPresenceSkipped: a client without OnPresence reads past presence frames (a large
// one too) without keeping them, and still decodes every other frame, however short, or
// however much of the presence frame's start it shares; nothing is lost or repeated.
func TestUnaskedPresenceSkipped(t *testing.T) {
	t.Parallel()
	ev := func(id int) string {
		return fmt.Sprintf(`{"type":"event","id":%d,"event":{"type":"tick","data":{},"time":"2026-11-26T01:02:03.000Z"}}`, id)
	}
	big := []byte(`{"type":"presence","online":[1`)
	for u := 2; u <= 20000; u++ {
		big = fmt.Appendf(big, ",%d", u)
	}
	big = append(big, "]}"...)
	url, connections := rawServer(t, func(ctx context.Context, ws *websocket.Conn) {
		writeFrames(ctx, ws,
			`{"type":"session","session":null,"notice":null}`,
			`{"type":"ready","lastEventId":0}`,
			string(big),
			ev(1),
			`{}`,
			`{"type":"presence","online":[]}`,
			`{"type":"presence-change","userId":3,"online":true}`,
			ev(2),
			`{"type":"presence","onlin":1234}`, // as long as the start, not it
			`{"type":"presence","online":"x","a":[1]}`, // the start's length, not it
			`{"type":"signal","from":7,"signal":{"type":"typing","data":{}}}`,
			ev(3),
		)
		ws.Read(ctx)
	})
	var mu sync.Mutex
	var got []string
	note := func(s string) { mu.Lock(); got = append(got, s); mu.Unlock() }
	var closes atomic.Int64
	c := runClient(t, client.Config{URL: url,
		OnPresenceChange: func(id int64, online bool) { note(fmt.Sprint("change ", id, " ", online)) },
		OnSignal:         func(s client.Signal) { note(fmt.Sprintf("signal %d %s", s.From, s.Type)) },
		OnClose:          func(int, string) { closes.Add(1) },
	})
	collect(t, c, 0, 3)
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"change 3 true", "signal 7 typing"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	if n, cl := connections.Load(), closes.Load(); n != 1 || cl != 0 {
		t.Fatalf("got %d connections and %d closes, want 1 and 0: a frame ended the connection", n, cl)
	}
}

// signalPeer answers client frames as a tidings node does: a pong for each ping, nothing for a
// typing signal with data {}, an error with the ref for any other signal. The error is written
// only once the ping after it has been read, right before its pong, so that both reach the
// client together: the refusal must still win.
func signalPeer(ctx context.Context, ws *websocket.Conn) {
	writeFrames(ctx, ws, `{"type":"session","session":null,"notice":null}`, `{"type":"ready","lastEventId":0}`)
	var pending []string
	for {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			return
		}
		var f struct {
			Type   string `json:"type"`
			Ref    string `json:"ref"`
			Signal struct {
				Type string          `json:"type"`
				Data json.RawMessage `json:"data"`
			} `json:"signal"`
		}
		if json.Unmarshal(msg, &f) != nil {
			return
		}
		switch f.Type {
		case "signal":
			if f.Signal.Type != "typing" || string(f.Signal.Data) != "{}" {
				pending = append(pending, fmt.Sprintf(`{"type":"error","ref":%q,"code":"forbidden","message":"no such signal type"}`, f.Ref))
			}
		case "ping":
			pending = append(pending, fmt.Sprintf(`{"type":"pong","ref":%q}`, f.Ref))
			if writeFrames(ctx, ws, pending...) != nil {
				return
			}
			pending = pending[:0]
		}
	}
}

// TestSignalReportsRefusals: Signal returns nil for a signal the server accepts (no answer,
// then the pong of the ping after it) and a *SignalError for one it refuses, even when the
// refusal and the pong arrive together, every time.
func TestSignalReportsRefusals(t *testing.T) {
	t.Parallel()
	url, _ := rawServer(t, signalPeer)
	c := runClient(t, client.Config{URL: url})
	waitConnected(t, c)
	ctx := context.Background()
	for i := range 200 {
		if err := c.Signal(ctx, "typing", nil); err != nil {
			t.Fatalf("accepted signal %d: got %v, want nil", i, err)
		}
		err := c.Signal(ctx, "juggling", map[string]int{"balls": 3})
		var se *client.SignalError
		if !errors.As(err, &se) || se.Code != "forbidden" {
			t.Fatalf("refused signal %d: got %v, want a forbidden *SignalError", i, err)
		}
	}
	if err := c.Signal(ctx, "typing", func() {}); err == nil {
		t.Fatal("data that does not encode: got nil")
	}
}

// TestSignalWithoutAnAnswer: against a server that never answers, Signal returns ErrNoAnswer
// after Config.SignalTimeout, or ctx's error when ctx ends first; without a connection,
// ErrNotConnected at once.
func TestSignalWithoutAnAnswer(t *testing.T) {
	t.Parallel()
	url, _ := rawServer(t, func(ctx context.Context, ws *websocket.Conn) {
		writeFrames(ctx, ws, `{"type":"session","session":null,"notice":null}`, `{"type":"ready","lastEventId":0}`)
		for {
			if _, _, err := ws.Read(ctx); err != nil {
				return
			}
		}
	})
	ready := make(chan struct{}, 1)
	c := runClient(t, client.Config{URL: url, SignalTimeout: 50 * time.Millisecond,
		OnReady: func(int64) { ready <- struct{}{} }})
	<-ready
	start := time.Now()
	if err := c.Signal(context.Background(), "typing", nil); !errors.Is(err, client.ErrNoAnswer) {
		t.Fatalf("got %v, want ErrNoAnswer", err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Fatalf("returned after %v, before the timeout", waited)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := c.Signal(ctx, "typing", nil); !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, client.ErrNoAnswer) {
		t.Fatalf("ctx ended first: got %v, want its error", err)
	}

	idle := client.New(client.Config{URL: url})
	if err := idle.Signal(context.Background(), "typing", nil); !errors.Is(err, client.ErrNotConnected) {
		t.Fatalf("not running: got %v, want ErrNotConnected", err)
	}
}
