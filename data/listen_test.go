package data_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"tidings/data"
	"tidings/data/datatest"
)

// listenStates runs Listen until the test ends and returns a function that waits, for at most
// within, for the state want, skipping notifications and repeated reports of ListenerDown (a
// listener that cannot reconnect says so at every attempt).
func listenStates(t *testing.T, ctx context.Context, events *data.Events, cfg data.ListenerConfig) (expect func(want data.ListenerState, within time.Duration)) {
	states := make(chan data.ListenerState, 1000)
	lctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(stop)
	wg.Go(func() {
		events.Listen(lctx, cfg, func(s data.ListenerState) { states <- s })
	})
	last := data.ListenerState(0)
	return func(want data.ListenerState, within time.Duration) {
		t.Helper()
		timeout := time.After(within)
		for {
			select {
			case got := <-states:
				skip := got == data.ListenerNotified || (got == data.ListenerDown && last == data.ListenerDown)
				last = got
				if got == want {
					return
				}
				if want == data.ListenerNotified || !skip {
					t.Fatalf("listener state: got %d, want %d", got, want)
				}
			case <-timeout:
				t.Fatalf("listener state %d did not come within %v", want, within)
			}
		}
	}
}

// TestListenSurvivesTerminatedBackend kills the listener's backend and checks that Listen says
// so, reconnects, says it is up again (so the caller catches up), and relays notifications.
func TestListenSurvivesTerminatedBackend(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	expectState := listenStates(t, ctx, data.NewEvents(pool), data.ListenerConfig{MaxBackoff: 50 * time.Millisecond})
	expect := func(want data.ListenerState) {
		t.Helper()
		expectState(want, 10*time.Second)
	}
	expect(data.ListenerUp)
	datatest.Append(t, pool, ev("a"))
	expect(data.ListenerNotified)

	var killed int
	err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate listener: got %d, %v; want 1", killed, err)
	}
	expect(data.ListenerDown)
	expect(data.ListenerUp)
	datatest.Append(t, pool, ev("b"))
	expect(data.ListenerNotified)
}

// TestListenSurvivesBlackHole black-holes the listener's connection (nothing answers and
// nothing closes, as after a failover) and checks that its idle check gives up within its
// timeout, that Listen says it is down, and that it is up again, relaying notifications, once
// the network heals. Without a deadline on the check, the listener waits for TCP to give up.
func TestListenSurvivesBlackHole(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	url := datatest.NewDatabase(t)
	direct := datatest.OpenPool(t, url)
	proxy := datatest.NewProxy(t, url)
	const check, timeout = 50 * time.Millisecond, 200 * time.Millisecond
	expect := listenStates(t, ctx, data.NewEvents(datatest.OpenPool(t, proxy.ConnString())),
		data.ListenerConfig{Check: check, Timeout: timeout, MaxBackoff: 50 * time.Millisecond})
	expect(data.ListenerUp, 10*time.Second)
	datatest.Append(t, direct, ev("a"))
	expect(data.ListenerNotified, 10*time.Second)

	proxy.Freeze()
	// The wait for a notification ends after check, the check after timeout: allow for a
	// loaded machine, far below what TCP takes to give up on a silent peer.
	expect(data.ListenerDown, check+timeout+3*time.Second)
	proxy.Thaw()
	expect(data.ListenerUp, 10*time.Second)
	datatest.Append(t, direct, ev("b"))
	expect(data.ListenerNotified, 10*time.Second)
}
