package client_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"tidings/data"
	"tidings/realtime/client"
)

// TestResetInItsPlace: a client has events 1 to 3 when its node stops; meanwhile 4 to 8 are
// published and 1 to 6 pruned, so the node it comes back to answers lastEventId=3 with reset 8.
// Events, read only now, hands over 1, 2, 3, then the reset at 8, then 9 and 10, published
// after it: the caller knows which events came before the reset. LastEventID says 8 once the
// reset is handed over, and the deprecated OnReset still hears of it.
func TestResetInItsPlace(t *testing.T) {
	t.Parallel()
	n := newNode(t)
	zero := int64(0)
	resets := make(chan int64, 4)
	c := runClient(t, client.Config{URL: n.url(), LastEventID: &zero, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		OnReset: func(id int64) { resets <- id }})
	n.publish(t, 3)
	poll(t, "the client has event 3", func() bool { return c.LastEventID() == 3 })

	n.shutdown()
	n.publish(t, 5)
	if _, err := n.pool.Exec(context.Background(), "UPDATE events SET time = now() - interval '30 days' WHERE id <= 6"); err != nil {
		t.Fatal(err)
	}
	if pruned, err := data.NewEvents(n.pool).PruneOlderThan(context.Background(), time.Now().Add(-24*time.Hour)); err != nil || pruned != 6 {
		t.Fatalf("prune: got %d, %v; want 6", pruned, err)
	}
	n.start()
	select {
	case id := <-resets:
		if id != 8 {
			t.Fatalf("OnReset: got %d, want 8", id)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no reset within 15s")
	}
	if got := c.LastEventID(); got != 8 {
		t.Fatalf("LastEventID after the reset: got %d, want 8", got)
	}
	n.publish(t, 2)

	var got []string
	for len(got) < 6 {
		select {
		case ev, ok := <-c.Events():
			if !ok {
				t.Fatalf("events closed after %v", got)
			}
			if ev.Reset {
				if ev.Type != "" || ev.Data != nil || !ev.Time.IsZero() {
					t.Fatalf("the reset carries an event: %+v", ev)
				}
				got = append(got, fmt.Sprint("reset ", ev.ID))
			} else {
				got = append(got, fmt.Sprint(ev.ID))
			}
		case <-time.After(15 * time.Second):
			t.Fatalf("got %v, then nothing within 15s", got)
		}
	}
	if want := "[1 2 3 reset 8 9 10]"; fmt.Sprint(got) != want {
		t.Fatalf("Events: got %v, want %s", got, want)
	}
	if got := c.LastEventID(); got != 10 {
		t.Fatalf("LastEventID: got %d, want 10", got)
	}
}

// poll checks cond until it holds, for at most 15 s.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
