package data_test

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"testing"
	"time"

	"tidings/data"
	"tidings/data/datatest"
)

// TestPublisherGroupCommit holds the counter row so that the first batch cannot commit, lets
// the other callers queue behind it, and checks that they then share one transaction, that
// every call's ids are consecutive and in order, and that together they are 1..n with no hole.
func TestPublisherGroupCommit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pool := datatest.NewPool(t)
	p := data.NewPublisher(pool, data.PublisherConfig{})

	blocker, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer blocker.Rollback(ctx)
	if _, err := blocker.Exec(ctx, "SELECT last_id FROM event_log_state FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	const calls, perCall = 10, 3
	results := make([][]int64, calls)
	var wg sync.WaitGroup
	for i := range calls {
		wg.Go(func() {
			evs := make([]data.NewEvent, perCall)
			for j := range evs {
				evs[j] = data.NewEvent{Type: "t", Data: json.RawMessage(`1`)}
			}
			ids, err := p.Publish(ctx, evs)
			if err != nil {
				t.Errorf("publish %d: %v", i, err)
			}
			results[i] = ids
		})
	}
	// Poll, with a bound, until one batch is in flight and every other call waits.
	deadline := time.Now().Add(10 * time.Second)
	var first int
	for {
		batching, waiting := data.PublisherCalls(p)
		if batching > 0 && batching+waiting == calls {
			first = batching
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("got %d calls in flight and %d waiting, want %d in all", batching, waiting, calls)
		}
		time.Sleep(time.Millisecond)
	}
	blocker.Rollback(ctx)
	wg.Wait()

	var all []int64
	for i, ids := range results {
		if len(ids) != perCall {
			t.Fatalf("call %d: got ids %v", i, ids)
		}
		for j := 1; j < len(ids); j++ {
			if ids[j] != ids[j-1]+1 {
				t.Fatalf("call %d: ids %v are not consecutive", i, ids)
			}
		}
		all = append(all, ids...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	for i, id := range all {
		if id != int64(i+1) {
			t.Fatalf("ids: got %d at %d, want 1..%d", id, i, calls*perCall)
		}
	}
	var txns int
	if err := pool.QueryRow(ctx, "SELECT count(DISTINCT xmin::text) FROM events").Scan(&txns); err != nil {
		t.Fatal(err)
	}
	want := 2
	if first == calls {
		want = 1 // every call arrived before the first batch was taken
	}
	if txns != want {
		t.Fatalf("got %d transactions for %d calls, want %d (%d in flight, then the rest that waited)", txns, calls, want, first)
	}
}

func TestPublisherRefusesInvalidAlone(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := data.NewPublisher(datatest.NewPool(t), data.PublisherConfig{})
	if _, err := p.Publish(ctx, []data.NewEvent{{Type: "ok"}, {Type: ""}}); err == nil {
		t.Fatal("a call with an invalid event was accepted")
	}
	ids, err := p.Publish(ctx, []data.NewEvent{{Type: "ok"}})
	if err != nil || len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("next call: got %v, %v; want [1]", ids, err)
	}
}
