package data_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"tidings/data"
	"tidings/data/datatest"
)

func TestValidKey(t *testing.T) {
	t.Parallel()
	for _, k := range []string{"a", "0b9c1d2e-7f3a-4e5b-8c6d-1a2b3c4d5e6f", "order-7:try-2", "YWJj+/=", "x.y_z~", strings.Repeat("k", data.MaxKeyLen)} {
		if !data.ValidKey(k) {
			t.Errorf("%q: refused", k)
		}
	}
	for _, k := range []string{"", "a b", `"a"`, "a\\b", "é", "a\x00", "a,b", "a;b", strings.Repeat("k", data.MaxKeyLen+1)} {
		if data.ValidKey(k) {
			t.Errorf("%q: accepted", k)
		}
	}
}

// TestPublishKeyed checks what a key does: the same key and request returns the first ids and
// appends nothing, another request under the key is refused, scopes do not meet, and a key
// older than the window is forgotten, by publishes and by DiscardKeys.
func TestPublishKeyed(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	p := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p.Close)

	k := key("k1", "first")
	ids, replayed, err := p.PublishKeyed(ctx, k, []data.NewEvent{ev("a"), ev("a")})
	if err != nil || replayed || !slices.Equal(ids, []int64{1, 2}) {
		t.Fatalf("first: got %v, %v, %v; want [1 2]", ids, replayed, err)
	}
	if _, err := p.Publish(ctx, []data.NewEvent{ev("b")}); err != nil {
		t.Fatal(err)
	}
	ids, replayed, err = p.PublishKeyed(ctx, k, []data.NewEvent{ev("a"), ev("a")})
	if err != nil || !replayed || !slices.Equal(ids, []int64{1, 2}) {
		t.Fatalf("retry: got %v, %v, %v; want [1 2] replayed", ids, replayed, err)
	}
	if _, _, err := p.PublishKeyed(ctx, key("k1", "other"), []data.NewEvent{ev("a")}); !errors.Is(err, data.ErrKeyReused) {
		t.Fatalf("another request under the key: got %v, want ErrKeyReused", err)
	}
	other := k
	other.Scope = "elsewhere"
	if ids, replayed, err := p.PublishKeyed(ctx, other, []data.NewEvent{ev("a")}); err != nil || replayed || !slices.Equal(ids, []int64{4}) {
		t.Fatalf("same key, other scope: got %v, %v, %v; want [4]", ids, replayed, err)
	}
	if n := countEvents(t, pool, "a"); n != 3 {
		t.Fatalf("got %d events, want 3", n)
	}
	for _, bad := range []data.IdempotencyKey{key("", "x"), key("a b", "x"), {Key: "ok"}} {
		if _, _, err := p.PublishKeyed(ctx, bad, []data.NewEvent{ev("a")}); !errors.Is(err, data.ErrInvalidKey) {
			t.Fatalf("key %+v: got %v, want ErrInvalidKey", bad, err)
		}
	}

	// Past the window, a key is forgotten: the same call appends again.
	if _, err := pool.Exec(ctx, "UPDATE publish_keys SET created = now() - interval '25 hours' WHERE key = 'k1'"); err != nil {
		t.Fatal(err)
	}
	ids, replayed, err = p.PublishKeyed(ctx, k, []data.NewEvent{ev("a"), ev("a")})
	if err != nil || replayed || !slices.Equal(ids, []int64{5, 6}) {
		t.Fatalf("after the window: got %v, %v, %v; want [5 6]", ids, replayed, err)
	}
	if _, err := pool.Exec(ctx, "UPDATE publish_keys SET created = now() - interval '25 hours' WHERE scope = 'elsewhere'"); err != nil {
		t.Fatal(err)
	}
	if n, err := p.DiscardKeys(ctx); err != nil || n != 1 {
		t.Fatalf("discard: got %d, %v; want 1", n, err)
	}
	var left []string
	if err := pool.QueryRow(ctx, "SELECT array_agg(scope || '/' || key ORDER BY scope) FROM publish_keys").Scan(&left); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, []string{"test/k1"}) {
		t.Fatalf("keys left: got %v, want [test/k1]", left)
	}
}

// TestPublishKeyedConcurrently sends one key many times at once, mixed with unkeyed calls in
// one batch, then another key at once from two publishers (two nodes): every caller of a key
// gets the same ids, its events are stored once, and keyed and unkeyed calls share a
// transaction.
func TestPublishKeyedConcurrently(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	p1 := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p1.Close)
	p2 := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p2.Close)

	// sameIDs waits for every answer and checks that they carry one set of ids, all but one
	// replayed.
	sameIDs := func(what string, answers []<-chan published) {
		t.Helper()
		var want []int64
		replays := 0
		for i, c := range answers {
			r := within(t, 10*time.Second, what, c)
			if r.err != nil || len(r.ids) != 2 || (want != nil && !slices.Equal(r.ids, want)) {
				t.Fatalf("%s, call %d: got %v, %v; want two ids, the same for every call", what, i, r.ids, r.err)
			}
			want = r.ids
			if r.replayed {
				replays++
			}
		}
		if replays != len(answers)-1 {
			t.Fatalf("%s: got %d replayed answers of %d, want all but one", what, replays, len(answers))
		}
	}

	// One node: a first batch waits for the counter row; every call after it waits for the
	// next batch, which holds them all.
	release := holdCounter(t, pool)
	first := publishAsync(t, ctx, p1, nil, ev("first"))
	waitCalls(t, p1, "the first batch in flight", func(b, w int) bool { return b == 1 })
	k := key("same", "same")
	var answers, unkeyed []<-chan published
	for i := range 15 {
		if i%3 == 2 {
			unkeyed = append(unkeyed, publishAsync(t, ctx, p1, nil, ev("u")))
		} else {
			answers = append(answers, publishAsync(t, ctx, p1, &k, ev("k"), ev("k")))
		}
	}
	waitCalls(t, p1, "every call waiting", func(b, w int) bool { return w == 15 })
	release()
	within(t, 10*time.Second, "first", first)
	sameIDs("one node", answers)
	for _, c := range unkeyed {
		if r := within(t, 10*time.Second, "unkeyed call", c); r.err != nil || len(r.ids) != 1 {
			t.Fatalf("unkeyed call: got %v, %v", r.ids, r.err)
		}
	}
	if n := countEvents(t, pool, "k"); n != 2 {
		t.Fatalf("got %d keyed events stored, want 2", n)
	}
	var txns int
	if err := pool.QueryRow(ctx, "SELECT count(DISTINCT xmin::text) FROM events WHERE type IN ('k', 'u')").Scan(&txns); err != nil {
		t.Fatal(err)
	}
	if txns != 1 {
		t.Fatalf("the keyed and unkeyed calls took %d transactions, want 1", txns)
	}

	// Two nodes, one key: both batches wait for the counter row, one stores, one replays.
	release = holdCounter(t, pool)
	k = key("across", "across")
	answers = nil
	for range 4 {
		answers = append(answers, publishAsync(t, ctx, p1, &k, ev("n"), ev("n")))
		answers = append(answers, publishAsync(t, ctx, p2, &k, ev("n"), ev("n")))
	}
	waitCalls(t, p1, "node 1's calls queued", func(b, w int) bool { return b+w == 4 && b > 0 })
	waitCalls(t, p2, "node 2's calls queued", func(b, w int) bool { return b+w == 4 && b > 0 })
	release()
	sameIDs("two nodes", answers)
	if n := countEvents(t, pool, "n"); n != 2 {
		t.Fatalf("got %d events of the key sent by two nodes, want 2", n)
	}
}

// TestPublishKeyedRespectsContext checks that a keyed call waiting behind a stalled batch
// leaves with nothing stored when its ctx ends, so that its key stays free.
func TestPublishKeyedRespectsContext(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	p := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p.Close)
	release := holdCounter(t, pool)
	first := publishAsync(t, ctx, p, nil, ev("first"))
	waitCalls(t, p, "the first batch in flight", func(b, w int) bool { return b == 1 })
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	k := key("left", "x")
	if _, _, err := p.PublishKeyed(short, k, []data.NewEvent{ev("k")}); err == nil || errors.Is(err, data.ErrOutcomeUnknown) {
		t.Fatalf("waiting keyed call: got %v, want a plain failure", err)
	}
	release()
	within(t, 10*time.Second, "first", first)
	ids, replayed, err := p.PublishKeyed(ctx, k, []data.NewEvent{ev("k")})
	if err != nil || replayed || !slices.Equal(ids, []int64{2}) {
		t.Fatalf("retry: got %v, %v, %v; want [2], not replayed", ids, replayed, err)
	}
}
