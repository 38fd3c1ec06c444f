package realtime

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"tidings/data"
	"tidings/data/datatest"
)

// smallBuffers makes the kernel hold little for a socket, so that a peer that reads slowly
// backs the writer up at once instead of after megabytes.
func smallBuffers(network, address string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		if serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// smallListener gives the server's sockets small buffers.
type smallListener struct{ net.Listener }

func (l smallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(4096)
		tc.SetReadBuffer(4096)
	}
	return c, nil
}

// TestLiveStreamOutOfTheCacheIsTooSlow (issue 9 item 9): a live stream that falls so far behind
// that its next event has left the cache is held to the lag rule like any other: closed with
// 4004 once it has been there for SlowAfter, instead of reading the table to the end.
func TestLiveStreamOutOfTheCacheIsTooSlow(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	s := startStreamServer(t, pool, deafStore{data.NewEvents(pool)},
		HubConfig{CacheSize: 32, PageSize: 8},
		StreamConfig{MaxLag: 8, SlowAfter: 100 * time.Millisecond, WriteTimeout: time.Minute}, nil,
		func(srv *httptest.Server) { srv.Listener = smallListener{srv.Listener} })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{Control: smallBuffers}).DialContext}}
	c, _, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	c.SetReadLimit(1 << 20)
	wantFrames(t, c, "session 0", "ready 0")
	const total = 1000
	evs := make([]data.NewEvent, total)
	for i := range evs {
		evs[i] = data.NewEvent{Type: "test", Data: json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)}
	}
	datatest.Append(t, pool, evs...)
	s.hub.Wake()
	events, last := 0, int64(0)
	for {
		time.Sleep(5 * time.Millisecond) // the slow reader's pace: what is under test
		_, msg, err := c.Read(ctx)
		if err != nil {
			if code := websocket.CloseStatus(err); code != CloseTooSlow.Code {
				t.Fatalf("after %d events: got %v, want close 4004", events, err)
			}
			break
		}
		var f testFrame
		json.Unmarshal(msg, &f)
		if f.Type != "event" || f.ID <= last {
			t.Fatalf("got %s after event %d", msg, last)
		}
		events, last = events+1, f.ID
	}
	// Without the rule it reads the table until it is back within the cache: about 970 events.
	if events > total/2 {
		t.Fatalf("closed after %d of %d events: the stream read the table long past SlowAfter", events, total)
	}
}

// gatedStore holds every read of the table until gate is closed, and counts them.
type gatedStore struct {
	deafStore
	gate     chan struct{}
	inflight atomic.Int32
	peak     atomic.Int32
}

func (g *gatedStore) After(ctx context.Context, after int64, limit int) ([]data.Event, error) {
	n := g.inflight.Add(1)
	defer g.inflight.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.deafStore.After(ctx, after, limit)
}

// TestTableReplaysTakeTurns (item 9): the streams of a node that need the table read it a few
// at a time (TableReplays); the others wait their turn, and the metrics say how many wait.
func TestTableReplaysTakeTurns(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	store := &gatedStore{deafStore: deafStore{data.NewEvents(pool)}, gate: make(chan struct{})}
	reg := prometheus.NewRegistry()
	s := startStreamServer(t, pool, store, HubConfig{TableReplays: 1, Metrics: NewMetrics(reg)}, StreamConfig{}, nil)
	datatest.Append(t, pool, plain(5)...) // the hub does not hear of them: the streams need the table
	var conns []*websocket.Conn
	for range 3 {
		conns = append(conns, s.dialQuery(t, "lastEventId=0"))
	}
	waitUntil(t, "one stream reading the table and two waiting their turn", func() bool {
		return store.inflight.Load() == 1 && gauge(t, reg, "tidings_table_replays_waiting") == 2
	})
	close(store.gate)
	for _, c := range conns {
		wantFrames(t, c, "event 1", "event 2", "event 3", "event 4", "event 5", "ready 5")
	}
	if p := store.peak.Load(); p != 1 {
		t.Fatalf("table reads at once: got %d, want 1", p)
	}
	if w := gauge(t, reg, "tidings_table_replays_waiting"); w != 0 {
		t.Fatalf("waiting after the replays: got %v, want 0", w)
	}
}

// gauge reads a gauge's value from reg.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatalf("no gauge %s", name)
	return 0
}
