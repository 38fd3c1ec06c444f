package data_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/migrations"
)

func TestMain(m *testing.M) { datatest.Main(m) }

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func ev(typ string) data.NewEvent { return data.NewEvent{Type: typ, Data: json.RawMessage(`{"n":1}`)} }

func TestAppendReadWatermark(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	events := data.NewEvents(pool)

	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := data.AppendEvents(ctx, tx, []data.NewEvent{
		ev("a"),
		{Type: "b", Audience: data.Audience{Kind: data.AudienceUser, UserID: 7}},
		{Type: "c", Data: json.RawMessage(`"text"`), Audience: data.Audience{Kind: data.AudienceMinType, Type: data.UserCrew}},
	})
	if err != nil || fmt.Sprint(ids) != "[1 2 3]" {
		t.Fatalf("append: got %v, %v; want [1 2 3]", ids, err)
	}
	if w, err := events.Watermark(ctx); err != nil || w != 0 {
		t.Fatalf("watermark before commit: got %d, %v; want 0", w, err)
	}
	if got, _ := events.After(ctx, 0, 10); len(got) != 0 {
		t.Fatalf("read before commit: got %d events, want none", len(got))
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if w, err := events.Watermark(ctx); err != nil || w != 3 {
		t.Fatalf("watermark after commit: got %d, %v; want 3", w, err)
	}
	got, err := events.After(ctx, 0, 10)
	if err != nil || len(got) != 3 {
		t.Fatalf("read: got %d events, %v; want 3", len(got), err)
	}
	if got[0].Type != "a" || string(got[0].Data) != `{"n": 1}` && string(got[0].Data) != `{"n":1}` || !got[0].Audience.Everyone() {
		t.Errorf("event 1: got %+v", got[0])
	}
	if got[1].Type != "b" || string(got[1].Data) != "null" || got[1].Audience != (data.Audience{Kind: data.AudienceUser, UserID: 7}) {
		t.Errorf("event 2: got %+v (data %s)", got[1], got[1].Data)
	}
	if got[2].Audience != (data.Audience{Kind: data.AudienceMinType, Type: data.UserCrew}) || got[2].Time.IsZero() {
		t.Errorf("event 3: got %+v", got[2])
	}
	if page, err := events.After(ctx, 1, 1); err != nil || len(page) != 1 || page[0].ID != 2 {
		t.Fatalf("page after 1: got %+v, %v; want event 2 alone", page, err)
	}
}

func TestAppendRefusesInvalidEvents(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	for _, e := range []data.NewEvent{{Type: ""}, {Type: "a", Data: json.RawMessage(`{`)}, {Type: "a", Audience: data.Audience{Kind: "nobody"}}} {
		if _, err := data.AppendEvents(ctx, pool, []data.NewEvent{e}); !errors.Is(err, data.ErrInvalidEvent) {
			t.Errorf("append %+v: got %v, want ErrInvalidEvent", e, err)
		}
	}
	// The SQL function refuses what the Go side would: a caller that bypasses Go gets an error.
	for _, aud := range []string{`{"kind":"Everyone"}`, `{"kind":"user"}`, `{"kind":"min-type","type":"boss"}`, `{"kind":"signed-in","x":1}`, `[]`} {
		_, err := pool.Exec(ctx, "SELECT publish_event('x', '{}', $1::jsonb)", aud)
		if !data.IsInvalidInput(err) {
			t.Errorf("publish_event with audience %s: got %v, want an invalid-input error", aud, err)
		}
	}
	var id int64
	if err := pool.QueryRow(ctx, "SELECT publish_event('x', '1', NULL)").Scan(&id); err != nil || id != 1 {
		t.Fatalf("publish_event with SQL NULL audience: got %d, %v", id, err)
	}
	if err := pool.QueryRow(ctx, "SELECT publish_event('x', '1', 'null'::jsonb)").Scan(&id); err != nil || id != 2 {
		t.Fatalf("publish_event with JSON null audience: got %d, %v", id, err)
	}
}

// TestIdsVisibleInCommitOrder is invariant 2: two transactions publish; the later one cannot
// take an id, let alone commit, before the earlier one ends, so neither the watermark nor a
// reader ever sees id 2 without id 1. A rolled-back writer leaves no hole.
func TestIdsVisibleInCommitOrder(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	events := data.NewEvents(pool)

	t1, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t1.Rollback(ctx)
	if ids, err := data.AppendEvents(ctx, t1, []data.NewEvent{ev("first")}); err != nil || ids[0] != 1 {
		t.Fatalf("t1 append: got %v, %v", ids, err)
	}
	t2, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer t2.Rollback(ctx)
	var t2pid uint32
	if err := t2.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&t2pid); err != nil {
		t.Fatal(err)
	}
	t2ids := make(chan []int64, 1)
	go func() {
		ids, err := data.AppendEvents(ctx, t2, []data.NewEvent{ev("second")})
		if err != nil {
			t.Errorf("t2 append: %v", err)
		}
		t2ids <- ids
	}()
	waitForLockWait(t, ctx, pool, t2pid)
	select {
	case ids := <-t2ids:
		t.Fatalf("t2 took ids %v while t1 was open", ids)
	default:
	}
	// t2 cannot commit first: its publish has not even returned. Nothing is visible yet.
	if w, _ := events.Watermark(ctx); w != 0 {
		t.Fatalf("watermark with both open: got %d, want 0", w)
	}
	if err := t1.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	ids := <-t2ids
	if len(ids) != 1 || ids[0] != 2 {
		t.Fatalf("t2 ids after t1 committed: got %v, want [2]", ids)
	}
	if w, _ := events.Watermark(ctx); w != 1 {
		t.Fatalf("watermark with t2 open: got %d, want 1", w)
	}
	if got, _ := events.After(ctx, 0, 10); len(got) != 1 || got[0].ID != 1 {
		t.Fatalf("read with t2 open: got %+v, want event 1 alone", got)
	}
	if err := t2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if w, _ := events.Watermark(ctx); w != 2 {
		t.Fatalf("watermark after both: got %d, want 2", w)
	}

	// A writer that rolls back returns its id: the next writer takes it, so no hole.
	t3, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := data.AppendEvents(ctx, t3, []data.NewEvent{ev("third")}); err != nil || ids[0] != 3 {
		t.Fatalf("t3 append: got %v, %v", ids, err)
	}
	t3.Rollback(ctx)
	if ids := datatest.Append(t, pool, ev("fourth")); ids[0] != 3 {
		t.Fatalf("after a rollback: got id %d, want 3", ids[0])
	}
	got, _ := events.After(ctx, 0, 10)
	for i, e := range got {
		if e.ID != int64(i+1) {
			t.Fatalf("log ids: got %d at position %d; the log has a hole", e.ID, i)
		}
	}
}

// waitForLockWait polls, with a bound, until backend pid waits on a lock.
func waitForLockWait(t *testing.T, ctx context.Context, pool *pgxpool.Pool, pid uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var waiting bool
		err := pool.QueryRow(ctx, "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1", pid).Scan(&waiting)
		if err != nil {
			t.Fatalf("read pg_stat_activity: %v", err)
		}
		if waiting {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the second writer never waited for the first")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPrune(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	events := data.NewEvents(pool)
	for range 10 {
		datatest.Append(t, pool, ev("e"))
	}
	// Events 1-5 and 7 are old; 6 is recent, so only the prefix 1-5 may go.
	if _, err := pool.Exec(ctx, "UPDATE events SET time = now() - interval '2 days' WHERE id <= 5 OR id = 7"); err != nil {
		t.Fatal(err)
	}
	n, err := events.PruneOlderThan(ctx, time.Now().Add(-24*time.Hour))
	if err != nil || n != 5 {
		t.Fatalf("prune: got %d, %v; want 5", n, err)
	}
	got, _ := events.After(ctx, 0, 100)
	if len(got) != 5 || got[0].ID != 6 {
		t.Fatalf("after prune: got %d events from %d, want 5 from 6", len(got), got[0].ID)
	}
	if w, _ := events.Watermark(ctx); w != 10 {
		t.Fatalf("watermark after prune: got %d, want 10", w)
	}
	if n, err := events.PruneOlderThan(ctx, time.Now().Add(-24*time.Hour)); err != nil || n != 0 {
		t.Fatalf("second prune: got %d, %v; want 0", n, err)
	}
}

func TestMigrateConcurrentlyAndTwice(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	admin, err := pgx.Connect(ctx, datatest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	name := fmt.Sprintf("migrate_%d", time.Now().UnixNano())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Exec(context.Background(), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)") })
	cfg, err := pgxpool.ParseConfig(datatest.AdminURL(t))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ConnConfig.Database = name
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() { errs <- data.Migrate(ctx, pool, migrations.FS, nil) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent migrate: %v", err)
		}
	}
	if err := data.Migrate(ctx, pool, migrations.FS, nil); err != nil {
		t.Fatalf("migrate again: %v", err)
	}
	var applied, distinct int
	if err := pool.QueryRow(ctx, "SELECT count(*), count(DISTINCT version) FROM tidings_migrations").Scan(&applied, &distinct); err != nil {
		t.Fatal(err)
	}
	if applied == 0 || applied != distinct {
		t.Fatalf("tidings_migrations: %d rows for %d versions", applied, distinct)
	}
}

// TestPruneOneNodeAtATime: while another session holds the prune lock (another node pruning),
// PruneOlderThan deletes nothing and returns at once; afterwards it prunes.
func TestPruneOneNodeAtATime(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	events := data.NewEvents(pool)
	datatest.Append(t, pool, ev("old"), ev("old"))
	if _, err := pool.Exec(ctx, "UPDATE events SET time = now() - interval '2 days'"); err != nil {
		t.Fatal(err)
	}
	other, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := other.Exec(ctx, "SELECT pg_advisory_lock($1)", int64(data.PruneLockKey)); err != nil {
		t.Fatal(err)
	}
	if n, err := events.PruneOlderThan(ctx, time.Now().Add(-time.Hour)); err != nil || n != 0 {
		t.Fatalf("while another node prunes: got %d, %v; want 0", n, err)
	}
	other.Exec(ctx, "SELECT pg_advisory_unlock($1)", int64(data.PruneLockKey))
	other.Release()
	if n, err := events.PruneOlderThan(ctx, time.Now().Add(-time.Hour)); err != nil || n != 2 {
		t.Fatalf("after: got %d, %v; want 2", n, err)
	}
}
