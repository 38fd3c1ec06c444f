package webtest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"tidings/data/datatest"
	"tidings/web"
	"tidings/web/webtest"
)

func TestMain(m *testing.M) { datatest.Main(m) }

// TestLagStore holds a node's hub: a committed event, whose notification reaches the listener,
// does not move the hub's head, nor does a wake-up of the hub, while the node's reads of the log (the watermark, a stream)
// still work. After Release the hub catches up. A listener that reconnects while held is
// reported up again by Release.
func TestLagStore(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	n, err := webtest.Start(pool, webtest.Options{Lag: true, Web: web.Config{Dev: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	if n.Lag == nil {
		t.Fatal("Node.Lag is nil with Options.Lag set")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	publish := func() int64 {
		t.Helper()
		var id int64
		if err := pool.QueryRow(ctx, `SELECT publish_event('lag', '{}', NULL)`).Scan(&id); err != nil {
			t.Fatalf("publish_event: %v", err)
		}
		return id
	}
	first := publish()
	waitUntil(t, "the hub to read the first event", func() bool { return n.Hub.Head() == first })

	n.Lag.Hold()
	swallowed := n.Lag.Swallowed()
	second := publish()
	// The notification of the commit reached the listener and went no further.
	waitUntil(t, "the held store to swallow the notification", func() bool { return n.Lag.Swallowed() > swallowed })
	if got := n.Hub.Head(); got != first {
		t.Fatalf("head while held: got %d, want %d", got, first)
	}
	// A wake-up that reaches the hub anyway (one pending since before Hold) finds nothing.
	swallowed = n.Lag.Swallowed()
	n.Hub.Wake()
	waitUntil(t, "the hub's read after a wake-up to find nothing", func() bool { return n.Lag.Swallowed() > swallowed })
	if got := n.Hub.Head(); got != first {
		t.Fatalf("head while held, after a wake-up: got %d, want %d", got, first)
	}
	// Reads of the log are not held: the watermark and a stream that replays from 0.
	hc := &http.Client{Timeout: 10 * time.Second}
	if got, err := webtest.Watermark(hc, n.URL); err != nil || got != second {
		t.Fatalf("watermark while held: got %d, %v; want %d", got, err, second)
	}
	ws, _, err := websocket.Dial(ctx, "ws"+n.URL[len("http"):]+"/api/events?lastEventId=0", nil)
	if err != nil {
		t.Fatalf("dial while held: %v", err)
	}
	defer ws.CloseNow()
	if typ := readFrame(ctx, t, ws).Type; typ != "session" {
		t.Fatalf("first frame while held: got %q, want session", typ)
	}
	// The stream replays, then says ready; wherever it puts ready, it gets the second event
	// once the hub is released, if not before.
	var got []int64
	ready := false
	for !ready {
		f := readFrame(ctx, t, ws)
		switch f.Type {
		case "event":
			got = append(got, f.ID)
		case "ready":
			ready = true
		default:
			t.Fatalf("frame while held: got %q, want event or ready", f.Type)
		}
	}
	if got := n.Hub.Head(); got != first {
		t.Fatalf("head while held, after a stream opened: got %d, want %d", got, first)
	}

	// A listener that reconnects while held is not reported up until Release.
	admin, err := pgx.Connect(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	swallowed = n.Lag.Swallowed()
	var pid int32
	if err := admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
		AND query LIKE 'LISTEN%' AND state = 'idle'`).Scan(&pid); err != nil {
		t.Fatalf("find the listener: %v", err)
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the listener to reconnect while held", func() bool { return n.Lag.Swallowed() > swallowed })
	if n.Hub.Listening() {
		t.Fatal("the hub says it listens although its listener's reconnect was held back")
	}
	if got := n.Hub.Head(); got != first {
		t.Fatalf("head after the listener reconnected while held: got %d, want %d", got, first)
	}

	n.Lag.Release()
	waitUntil(t, "the hub to catch up after Release", func() bool { return n.Hub.Head() == second })
	waitUntil(t, "the hub to listen again after Release", n.Hub.Listening)
	for len(got) == 0 || got[len(got)-1] < second {
		f := readFrame(ctx, t, ws)
		if f.Type == "event" {
			got = append(got, f.ID)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint([]int64{first, second}) {
		t.Fatalf("stream opened while held: got events %v, want [%d %d]", got, first, second)
	}
	third := publish() // released: notifications pass again
	waitUntil(t, "the hub to read an event published after Release", func() bool { return n.Hub.Head() == third })
	ws.Close(websocket.StatusNormalClosure, "")
}

type frame struct {
	Type        string `json:"type"`
	ID          int64  `json:"id"`
	LastEventID int64  `json:"lastEventId"`
}

func readFrame(ctx context.Context, t *testing.T, ws *websocket.Conn) frame {
	t.Helper()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, b, err := ws.Read(rctx)
	if err != nil {
		t.Fatalf("read frame: %v", err)
	}
	var f frame
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("frame %s: %v", b, err)
	}
	return f
}

// waitUntil polls cond every millisecond until it holds, failing the test after 10 s.
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
