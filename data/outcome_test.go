package data_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
)

// holdCounter locks the event counter row in a transaction of its own, so that every event
// writer waits, until the returned release is called (also in t.Cleanup).
func holdCounter(t *testing.T, pool *pgxpool.Pool) (release func()) {
	t.Helper()
	ctx := testCtx(t)
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "SELECT last_id FROM event_log_state FOR UPDATE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { tx.Rollback(context.Background()) }) }
	t.Cleanup(release)
	return release
}

// waitCalls polls, with a bound, until the publisher's calls satisfy cond.
func waitCalls(t *testing.T, p *data.Publisher, what string, cond func(batching, waiting int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		batching, waiting := data.PublisherCalls(p)
		if cond(batching, waiting) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: got %d calls in flight and %d waiting", what, batching, waiting)
		}
		time.Sleep(time.Millisecond)
	}
}

type published struct {
	ids      []int64
	replayed bool
	err      error
}

// publishAsync runs one publish in a goroutine that the test waits for in t.Cleanup.
func publishAsync(t *testing.T, ctx context.Context, p *data.Publisher, key *data.IdempotencyKey, evs ...data.NewEvent) <-chan published {
	t.Helper()
	out := make(chan published, 1)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	wg.Go(func() {
		var r published
		if key == nil {
			r.ids, r.err = p.Publish(ctx, evs)
		} else {
			r.ids, r.replayed, r.err = p.PublishKeyed(ctx, *key, evs)
		}
		out <- r
	})
	return out
}

// within waits, with a bound, for a publish's answer.
func within(t *testing.T, d time.Duration, what string, c <-chan published) published {
	t.Helper()
	select {
	case r := <-c:
		return r
	case <-time.After(d):
		t.Fatalf("%s: no answer within %v", what, d)
		return published{}
	}
}

// countEvents returns how many events of type typ the table holds.
func countEvents(t *testing.T, pool *pgxpool.Pool, typ string) int {
	t.Helper()
	var n int
	if err := pool.QueryRow(testCtx(t), "SELECT count(*) FROM events WHERE type = $1", typ).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func key(k, request string) data.IdempotencyKey {
	var r [32]byte
	copy(r[:], request)
	return data.IdempotencyKey{Scope: "test", Key: k, Request: r}
}

// TestPublishReturnsWhenItsContextEnds stalls the database (the counter row is held), lets one
// call join the batch that waits for it and another wait behind, and ends both callers'
// contexts: each returns at once, the waiting one with nothing stored, the sent one with
// ErrOutcomeUnknown; released, the sent batch does commit, which is why it was unknown.
func TestPublishReturnsWhenItsContextEnds(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	p := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p.Close)
	release := holdCounter(t, pool)

	ctxSent, cancelSent := context.WithCancel(context.Background())
	defer cancelSent()
	sent := publishAsync(t, ctxSent, p, nil, ev("sent"))
	waitCalls(t, p, "one call in flight", func(b, w int) bool { return b == 1 })
	ctxWaiting, cancelWaiting := context.WithCancel(context.Background())
	defer cancelWaiting()
	waiting := publishAsync(t, ctxWaiting, p, nil, ev("waiting"))
	waitCalls(t, p, "one call waiting", func(b, w int) bool { return w == 1 })

	cancelWaiting()
	r := within(t, 5*time.Second, "the waiting call", waiting)
	if r.err == nil || errors.Is(r.err, data.ErrOutcomeUnknown) || !errors.Is(r.err, context.Canceled) {
		t.Fatalf("waiting call: got %v, %v; want a plain failure (nothing stored)", r.ids, r.err)
	}
	waitCalls(t, p, "the waiting call gone", func(b, w int) bool { return w == 0 })
	cancelSent()
	r = within(t, 5*time.Second, "the sent call", sent)
	if !errors.Is(r.err, data.ErrOutcomeUnknown) {
		t.Fatalf("sent call: got %v, %v; want ErrOutcomeUnknown", r.ids, r.err)
	}

	release()
	p.Close() // waits for the batch in flight
	if n, m := countEvents(t, pool, "sent"), countEvents(t, pool, "waiting"); n != 1 || m != 0 {
		t.Fatalf("got %d sent and %d waiting events stored, want 1 and 0", n, m)
	}
}

// waitForPublishBackend polls, with a bound, until a backend runs a statement matching pattern
// and waits on a lock, and returns its pid.
func waitForPublishBackend(t *testing.T, pool *pgxpool.Pool, pattern string) int32 {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var pid int32
		err := pool.QueryRow(testCtx(t), `SELECT pid FROM pg_stat_activity
			WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE $1`, pattern).Scan(&pid)
		if err == nil {
			return pid
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no backend running %s waits on a lock", pattern)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestPublishTerminatedBackendIsOutcomeUnknown terminates the publisher's backend while its
// statement waits for the counter row: the caller is told the outcome is unknown (a FATAL
// answer may follow a commit), not that the publish failed; a retry with the same key stores
// the events once, and a second retry appends nothing.
func TestPublishTerminatedBackendIsOutcomeUnknown(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	p := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p.Close)
	ctx := testCtx(t)
	release := holdCounter(t, pool)

	k := key("retry-1", "r")
	first := publishAsync(t, ctx, p, &k, ev("kept"))
	pid := waitForPublishBackend(t, pool, "%tidings_publish_keyed%")
	if _, err := pool.Exec(ctx, "SELECT pg_terminate_backend($1)", pid); err != nil {
		t.Fatal(err)
	}
	if r := within(t, 5*time.Second, "the terminated publish", first); !errors.Is(r.err, data.ErrOutcomeUnknown) {
		t.Fatalf("terminated during publish: got %v, %v; want ErrOutcomeUnknown", r.ids, r.err)
	}
	release()

	ids, replayed, err := p.PublishKeyed(ctx, k, []data.NewEvent{ev("kept")})
	if err != nil || len(ids) != 1 || replayed {
		t.Fatalf("retry: got %v, %v, %v; want one new id (the first never committed)", ids, replayed, err)
	}
	again, replayed, err := p.PublishKeyed(ctx, k, []data.NewEvent{ev("kept")})
	if err != nil || len(again) != 1 || again[0] != ids[0] || !replayed {
		t.Fatalf("second retry: got %v, %v, %v; want %v replayed", again, replayed, err, ids)
	}
	if n := countEvents(t, pool, "kept"); n != 1 {
		t.Fatalf("got %d events stored, want 1", n)
	}
}

// gate is a database connection whose answers can be held back and then cut, so that a
// statement commits on the server while its answer never reaches the client.
type gate struct {
	net.Conn
	hold chan struct{} // closed: reads block until cut
	cut  chan struct{} // closed: reads fail
}

func (g *gate) Read(b []byte) (int, error) {
	select {
	case <-g.hold:
		<-g.cut
		return 0, io.ErrUnexpectedEOF
	default:
	}
	return g.Conn.Read(b)
}

// TestPublishCommittedButAnswerLost commits a keyed publish on the server while its answer is
// held back, then cuts the connection: the caller is told the outcome is unknown, and a retry
// with the same key returns the same ids and appends nothing.
func TestPublishCommittedButAnswerLost(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	connString := datatest.NewDatabase(t)
	check, err := pgxpool.New(ctx, connString)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(check.Close)
	cfg, err := pgxpool.ParseConfig(connString)
	if err != nil {
		t.Fatal(err)
	}
	cfg.MaxConns = 1
	g := &gate{hold: make(chan struct{}), cut: make(chan struct{})}
	var gated sync.Once
	dial := cfg.ConnConfig.DialFunc
	cfg.ConnConfig.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		gated.Do(func() { g.Conn, c = c, g }) // only the first connection is gated
		return c, nil
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	p := data.NewPublisher(pool, data.PublisherConfig{})
	t.Cleanup(p.Close)
	// Warm the gated connection: the next publish is one round trip.
	if _, _, err := p.PublishKeyed(ctx, key("warm", "w"), []data.NewEvent{ev("warm")}); err != nil {
		t.Fatal(err)
	}

	close(g.hold)
	k := key("lost-answer", "l")
	first := publishAsync(t, ctx, p, &k, ev("kept"), ev("kept"))
	deadline := time.Now().Add(10 * time.Second)
	for countEvents(t, check, "kept") != 2 { // committed: visible to another session
		if time.Now().After(deadline) {
			t.Fatal("the publish never committed")
		}
		time.Sleep(2 * time.Millisecond)
	}
	close(g.cut)
	if r := within(t, 5*time.Second, "the cut publish", first); !errors.Is(r.err, data.ErrOutcomeUnknown) {
		t.Fatalf("answer lost after commit: got %v, %v; want ErrOutcomeUnknown", r.ids, r.err)
	}

	var want []int64
	if err := check.QueryRow(ctx, "SELECT array_agg(id ORDER BY id) FROM events WHERE type = 'kept'").Scan(&want); err != nil {
		t.Fatal(err)
	}
	ids, replayed, err := p.PublishKeyed(ctx, k, []data.NewEvent{ev("kept"), ev("kept")})
	if err != nil || !replayed || len(ids) != 2 || ids[0] != want[0] || ids[1] != want[1] {
		t.Fatalf("retry: got %v, %v, %v; want %v replayed", ids, replayed, err, want)
	}
	if n := countEvents(t, check, "kept"); n != 2 {
		t.Fatalf("got %d events after the retry, want 2", n)
	}
}
