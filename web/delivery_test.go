package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5"

	"tidings/data"
	"tidings/realtime"
	"tidings/web/webtest"
)

// resumingReader follows the log like a real client: it reads a few frames, drops the socket,
// and reconnects with the last id it saw, until it has seen `until`. It returns every event id
// it received, in the order received, across all its connections.
func resumingReader(t *testing.T, s *testServer, rng *rand.Rand, until func() int64) []int64 {
	var got []int64
	var last int64
	for {
		c, err := s.tryDial(t, fmt.Sprintf("lastEventId=%d", last), nil)
		if err != nil {
			t.Errorf("dial: %v", err)
			return got
		}
		budget := 1 + rng.IntN(40)
		for budget > 0 {
			f, err := c.tryNext()
			if err != nil {
				t.Errorf("read: %v", err)
				return got
			}
			switch f.Type {
			case "event":
				got = append(got, f.ID)
				last = f.ID
				budget--
			case "reset":
				t.Errorf("unexpected reset at %d", f.LastEventID)
				return got
			}
			if target := until(); target > 0 && last >= target {
				c.conn.Close(websocket.StatusNormalClosure, "")
				return got
			}
		}
		c.conn.Close(websocket.StatusNormalClosure, "")
	}
}

// TestExactlyOnceUnderConcurrentWritersAndReconnects: 8 writers publish (alone, in batches,
// through publish_event, some rolling back) while readers keep dropping and resuming their
// streams; every reader must see 1..N exactly once, in order.
func TestExactlyOnceUnderConcurrentWritersAndReconnects(t *testing.T) {
	t.Parallel()
	for _, mode := range cacheModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, serverOptions{hub: realtime.HubConfig{CacheSize: mode.size * 64, PageSize: 50}})
			const writers, perWriter = 8, 60
			var final int64 // set when all writers are done: the watermark then
			var finalMu sync.Mutex
			until := func() int64 { finalMu.Lock(); defer finalMu.Unlock(); return final }

			var readers sync.WaitGroup
			results := make([][]int64, 6)
			for i := range results {
				readers.Go(func() { results[i] = resumingReader(t, s, rand.New(rand.NewPCG(uint64(i), 7)), until) })
			}

			var wg sync.WaitGroup
			pub := data.NewPublisher(s.pool, data.PublisherConfig{})
			for w := range writers {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(w), 1))
					ctx := context.Background()
					for i := 0; i < perWriter; {
						n := 1 + rng.IntN(4)
						switch rng.IntN(4) {
						case 0: // the group-committing publisher
							evs := make([]data.NewEvent, n)
							for j := range evs {
								evs[j] = data.NewEvent{Type: "w", Data: json.RawMessage(fmt.Sprint(w))}
							}
							if _, err := pub.Publish(ctx, evs); err != nil {
								t.Errorf("publish: %v", err)
								return
							}
							i += n
						case 1: // a transaction that rolls back: its ids are reused
							tx, err := s.pool.Begin(ctx)
							if err != nil {
								t.Error(err)
								return
							}
							tx.Exec(ctx, "SELECT publish_event('w', '0', NULL)")
							tx.Rollback(ctx)
						default: // another service's transaction
							err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
								for range n {
									if _, err := tx.Exec(ctx, "SELECT publish_event('w', $1::jsonb, NULL)", fmt.Sprint(w)); err != nil {
										return err
									}
								}
								return nil
							})
							if err != nil {
								t.Errorf("publish_event: %v", err)
								return
							}
							i += n
						}
					}
				})
			}
			wg.Wait()
			// A last event, published once final is known, ends every reader at final.
			wm, err := s.events.Watermark(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			wm++
			finalMu.Lock()
			final = wm
			finalMu.Unlock()
			if last := s.publishN(t, 1, "end"); last != wm {
				t.Fatalf("last event: got id %d, want %d", last, wm)
			}
			readers.Wait()
			if wm < writers*perWriter {
				t.Fatalf("watermark %d, want at least %d", wm, writers*perWriter)
			}
			for r, ids := range results {
				if int64(len(ids)) != wm {
					t.Errorf("reader %d: got %d events, want %d", r, len(ids), wm)
				}
				for i, id := range ids {
					if id != int64(i+1) {
						t.Fatalf("reader %d: event %d at position %d, want %d (duplicate, gap or disorder)", r, id, i, i+1)
					}
				}
			}
		})
	}
}

// TestStreamNeverSkipsAnUncommittedId is invariant 2 seen from a stream and the watermark: a
// transaction holding id 1 open keeps id 2 from existing, so the stream and the watermark wait
// for it, and then see 1 before 2.
func TestStreamNeverSkipsAnUncommittedId(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	ctx := context.Background()
	c := s.dialLive(t)

	t1, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback(ctx)
	var id1 int64
	if err := t1.QueryRow(ctx, "SELECT publish_event('first', '1', NULL)").Scan(&id1); err != nil || id1 != 1 {
		t.Fatalf("t1: got %d, %v", id1, err)
	}
	t2, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Rollback(ctx)
	var t2pid uint32
	t2.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&t2pid)
	id2 := make(chan int64, 1)
	go func() {
		var id int64
		if err := t2.QueryRow(ctx, "SELECT publish_event('second', '2', NULL)").Scan(&id); err != nil {
			t.Errorf("t2: %v", err)
		}
		id2 <- id
	}()
	waitFor(t, "t2 waiting on t1", func() bool {
		var waiting bool
		s.pool.QueryRow(ctx, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", t2pid).Scan(&waiting)
		return waiting
	})
	if wm := getWatermark(t, s); wm != 0 {
		t.Fatalf("watermark with t1 open: got %d, want 0", wm)
	}
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if id := <-id2; id != 2 {
		t.Fatalf("t2: got id %d, want 2", id)
	}
	c.expectEvents(1)
	if wm := getWatermark(t, s); wm != 1 {
		t.Fatalf("watermark with t2 open: got %d, want 1", wm)
	}
	if err := t2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	c.expectEvents(2)
	if wm := getWatermark(t, s); wm != 2 {
		t.Fatalf("watermark after t2: got %d, want 2", wm)
	}
}

func getWatermark(t *testing.T, s *testServer) int64 {
	t.Helper()
	id, err := webtest.Watermark(s.Client(), s.URL)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestListenerKilledDuringPublishing terminates the hub's LISTEN backend while events are being
// published; with the safety-net poll off, the stream still gets every event, because the hub
// reads the table after it reconnects.
func TestListenerKilledDuringPublishing(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{hub: realtime.HubConfig{Listener: data.ListenerConfig{MaxBackoff: 20 * time.Millisecond}}})
	c := s.dialLive(t)
	const total = 300
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range total {
			s.publish(t, data.NewEvent{Type: "e", Data: json.RawMessage(fmt.Sprint(i))})
			if i == total/3 || i == 2*total/3 {
				// Kill the listener once it is there (after the first kill it is reconnecting).
				waitFor(t, "a listener to kill", func() bool {
					var killed int
					err := s.pool.QueryRow(context.Background(), `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
						WHERE datname = current_database() AND query LIKE 'LISTEN%' AND state = 'idle'`).Scan(&killed)
					return err == nil && killed == 1
				})
			}
		}
	}()
	for i := int64(1); i <= total; i++ {
		if f := c.expect("event"); f.ID != i {
			t.Fatalf("got event %d, want %d", f.ID, i)
		}
	}
	<-done
}

// TestSlowClientClosedAndResumes: a client that stops reading while large events pile up is
// closed with 4004, and resuming from its last id loses nothing.
func TestSlowClientClosedAndResumes(t *testing.T) {
	t.Parallel()
	const slowAfter = 50 * time.Millisecond
	// A write timeout far above how long publishing takes: this test is about the lag rule.
	s := newServer(t, serverOptions{web: webConfigStream(realtime.StreamConfig{MaxLag: 16, SlowAfter: slowAfter, WriteTimeout: time.Minute})})
	c := s.dialLive(t)
	big := json.RawMessage(`"` + strings.Repeat("x", 64<<10) + `"`)
	const total = 400
	for range total / 20 {
		evs := make([]data.NewEvent, 20)
		for i := range evs {
			evs[i] = data.NewEvent{Type: "big", Data: big}
		}
		s.publish(t, evs...)
	}
	waitFor(t, "hub at the last event", func() bool { return s.hub.Head() == total })
	// Every event the stream has not sent has now waited at least slowAfter: the stream is slow
	// by definition, and says so as soon as its blocked write returns.
	time.Sleep(slowAfter)
	var got []int64
	for {
		f, err := c.tryNext()
		if err != nil {
			var ce websocket.CloseError
			if !asCloseError(err, &ce) || ce.Code != 4004 || ce.Reason != "too-slow" {
				t.Fatalf("got %v after %d events, want close 4004 too-slow", err, len(got))
			}
			break
		}
		if f.Type == "event" {
			got = append(got, f.ID)
		}
	}
	if len(got) >= total {
		t.Fatalf("got all %d events before the close; the socket never fell behind", len(got))
	}
	var last int64
	if len(got) > 0 {
		last = got[len(got)-1]
	}
	t.Logf("closed as too slow after %d of %d events", len(got), total)
	c2 := s.dial(t, fmt.Sprintf("lastEventId=%d", last), nil)
	c2.expect("session")
	for {
		f := c2.next()
		if f.Type == "ready" {
			break
		}
		got = append(got, f.ID)
	}
	for i, id := range got {
		if id != int64(i+1) {
			t.Fatalf("event %d at position %d: lost or repeated across the close", id, i)
		}
	}
	if len(got) != total {
		t.Fatalf("got %d events, want %d", len(got), total)
	}
}
