package data_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
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

// TestPublisherSplitsBatchTooLarge makes PostgreSQL refuse, as it does a statement over one of
// its size limits, every insert of more than 4 events (SQLSTATE 54000 from a trigger), and sends
// one batch of 12 calls: the batch is split until each part fits, so every call of up to 4
// events is stored, and only the call of 5 fails, alone, with ErrTooLarge.
func TestPublisherSplitsBatchTooLarge(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	if _, err := pool.Exec(ctx, `
		CREATE FUNCTION test_size_limit() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN
			IF (SELECT count(*) FROM new_rows) > 4 THEN
				RAISE EXCEPTION 'statement too large' USING ERRCODE = '54000';
			END IF;
			RETURN NULL;
		END $$;
		CREATE TRIGGER test_size_limit AFTER INSERT ON events REFERENCING NEW TABLE AS new_rows
			FOR EACH STATEMENT EXECUTE FUNCTION test_size_limit()`); err != nil {
		t.Fatal(err)
	}
	p := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p.Close)
	release := holdCounter(t, pool)
	first := publishAsync(t, ctx, p, nil, ev("first"))
	waitCalls(t, p, "the first batch in flight", func(b, w int) bool { return b == 1 })
	var calls []<-chan published
	for i := range 12 {
		evs := []data.NewEvent{ev("s")}
		switch i {
		case 5:
			evs = slices.Repeat(evs, 5) // too large alone
		case 8:
			evs = slices.Repeat(evs, 4) // just fits
		}
		var k *data.IdempotencyKey
		if i%2 == 1 {
			kk := key(fmt.Sprint("split-", i), "s")
			k = &kk
		}
		calls = append(calls, publishAsync(t, ctx, p, k, evs...))
	}
	waitCalls(t, p, "every call waiting", func(b, w int) bool { return w == 12 })
	release()
	within(t, 10*time.Second, "first", first)
	var all []int64
	for i, c := range calls {
		r := within(t, 10*time.Second, "call", c)
		if i == 5 {
			if !errors.Is(r.err, data.ErrTooLarge) {
				t.Fatalf("call of 5 events: got %v, %v; want ErrTooLarge", r.ids, r.err)
			}
			continue
		}
		if r.err != nil {
			t.Fatalf("call %d: %v", i, r.err)
		}
		for j := 1; j < len(r.ids); j++ {
			if r.ids[j] != r.ids[j-1]+1 {
				t.Fatalf("call %d: ids %v are not consecutive", i, r.ids)
			}
		}
		all = append(all, r.ids...)
	}
	slices.Sort(all)
	if len(all) != 14 || all[0] != 2 || all[13] != 15 || len(slices.Compact(all)) != 14 {
		t.Fatalf("ids: got %v, want 2..15 once each", all)
	}
	if n := countEvents(t, pool, "s"); n != 14 {
		t.Fatalf("got %d events stored, want 14", n)
	}
}

// TestPublisherBatchBytes checks that MaxBatchBytes bounds a batch: six waiting calls of about
// 100 bytes each, with a limit of 200, commit in three transactions, not one.
func TestPublisherBatchBytes(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	p := data.NewPublisher(pool, data.PublisherConfig{MaxBatchBytes: 200})
	t.Cleanup(p.Close)
	release := holdCounter(t, pool)
	first := publishAsync(t, ctx, p, nil, ev("first"))
	waitCalls(t, p, "the first batch in flight", func(b, w int) bool { return b == 1 })
	payload := json.RawMessage(`"` + strings.Repeat("x", 58) + `"`) // with the type and overhead, 93 bytes
	var calls []<-chan published
	for range 6 {
		calls = append(calls, publishAsync(t, ctx, p, nil, data.NewEvent{Type: "b", Data: payload}))
	}
	waitCalls(t, p, "every call waiting", func(b, w int) bool { return w == 6 })
	release()
	within(t, 10*time.Second, "first", first)
	for _, c := range calls {
		if r := within(t, 10*time.Second, "call", c); r.err != nil {
			t.Fatal(r.err)
		}
	}
	var txns int
	if err := pool.QueryRow(ctx, "SELECT count(DISTINCT xmin::text) FROM events WHERE type = 'b'").Scan(&txns); err != nil {
		t.Fatal(err)
	}
	if txns != 3 {
		t.Fatalf("six calls of 93 bytes took %d transactions, want 3 (two per 200 bytes)", txns)
	}
}
