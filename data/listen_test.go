package data_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"tidings/data"
	"tidings/data/datatest"
)

// TestListenSurvivesTerminatedBackend kills the listener's backend and checks that Listen says
// so, reconnects, says it is up again (so the caller catches up), and relays notifications.
func TestListenSurvivesTerminatedBackend(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	events := data.NewEvents(pool)
	states := make(chan data.ListenerState, 100)
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() {
		events.Listen(lctx, data.ListenerConfig{MaxBackoff: 50 * time.Millisecond}, func(s data.ListenerState) { states <- s })
	})
	expect := func(want data.ListenerState) {
		t.Helper()
		for {
			select {
			case got := <-states:
				if got == want {
					return
				}
				if want == data.ListenerNotified || got != data.ListenerNotified {
					t.Fatalf("listener state: got %d, want %d", got, want)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("listener state %d never came", want)
			}
		}
	}
	expect(data.ListenerUp)
	appendTx(t, ctx, pool, ev("a"))
	expect(data.ListenerNotified)

	var killed int
	err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate listener: got %d, %v; want 1", killed, err)
	}
	expect(data.ListenerDown)
	expect(data.ListenerUp)
	appendTx(t, ctx, pool, ev("b"))
	expect(data.ListenerNotified)
}
