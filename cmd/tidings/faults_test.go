package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"tidings/data"
	"tidings/data/datatest"
)

// TestNodeKilledClientsMoveOn runs node A in this process and node B as the compiled binary on
// one database, with streams on both. B is killed with SIGKILL while writers publish on both:
// the streams that were on B move to A and resume from their last id, and every stream sees
// every stored event (the watermark after the writers are done: a publish cut off by the kill
// may or may not have been stored) exactly once, in order.
func TestNodeKilledClientsMoveOn(t *testing.T) {
	t.Parallel()
	bin := buildTidings(t, t.TempDir())
	env := map[string]string{"DATABASE_URL": datatest.NewDatabase(t)}
	a := startNode(t, "A", env)
	b := startProcess(t, bin, env)

	var onB, onA []*follower
	for i := range 4 {
		onB = append(onB, follow(t, fmt.Sprint("b", i), b.url, a.url))
	}
	for i := range 2 {
		onA = append(onA, follow(t, fmt.Sprint("a", i), a.url, b.url))
	}
	all := append(slices.Clone(onB), onA...)
	for _, f := range all {
		f.waitReady(t)
	}

	hc := newHTTPClient(t)
	const writers, perPhase = 4, 40 // writers 0 and 1 on A, 2 and 3 on B
	var killed atomic.Bool
	var movedWriters atomic.Int32 // writers on B that had to move to A
	var acked ackedIDs
	var firstAck sync.Once
	firstOfPhase2 := make(chan struct{})
	write := func(phase int) {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				url, name := a.url, fmt.Sprintf("A/w%d", w)
				if w >= 2 {
					url, name = b.url, fmt.Sprintf("B/w%d", w)
				}
				for i := range perPhase {
					status, ids, err := publishEvents(hc, url, eventBody(name, phase*perPhase+i, 1))
					if (err != nil || status != 200) && url == b.url && killed.Load() {
						url = a.url // B is gone: publish on A from now on
						movedWriters.Add(1)
						status, ids, err = publishEvents(hc, url, eventBody(name, phase*perPhase+i, 1))
					}
					if err != nil || status != 200 {
						t.Errorf("%s publish %d on %s: got %d, %v", name, i, url, status, err)
						return
					}
					if !acked.add(ids) {
						t.Errorf("%s publish %d: ids %v were already given to another publish", name, i, ids)
					}
					if phase == 1 {
						firstAck.Do(func() { close(firstOfPhase2) })
					}
				}
			})
		}
		wg.Wait()
	}

	write(0)
	for _, f := range all {
		f.waitFor(t, writers*perPhase) // every stream is live on its first node
	}
	phase2 := make(chan struct{})
	go func() {
		defer close(phase2)
		write(1)
	}()
	select {
	case <-firstOfPhase2:
	case <-phase2:
	}
	killed.Store(true)
	b.kill(t)
	<-phase2
	if t.Failed() {
		return
	}
	if !b.waitErrIsKill() {
		t.Errorf("node B: got exit %v, want killed by SIGKILL", b.waitErr)
	}

	total := watermark(t, hc, a.url)
	if total < writers*perPhase*2 {
		t.Fatalf("watermark %d, want at least the %d acknowledged events", total, writers*perPhase*2)
	}
	for _, f := range all {
		f.waitFor(t, int(total))
	}
	for _, f := range all {
		f.stop()
		f.check(t, int(total))
	}
	for _, f := range onB {
		if moves, _ := f.movesAndCloses(); moves < 1 {
			t.Errorf("follower %s never moved off node B", f.name)
		}
	}
	for _, f := range onA {
		if moves, closes := f.movesAndCloses(); moves != 0 {
			t.Errorf("follower %s on node A moved %d times (closes %v)", f.name, moves, closes)
		}
	}
	t.Logf("%d events, %d acknowledged; %d of B's writers moved to A", total, acked.len(), movedWriters.Load())
}

// TestPostgresRestart stops a node's PostgreSQL while streams are open and starts it again on
// the same directory. During the outage /readyz and every publish answer 503 and nothing is
// stored; afterwards the node reconnects by itself, publishing works again, and every stream
// sees each committed event exactly once, in order (it may close with 1011 and resume), a
// stream opened during the outage too.
func TestPostgresRestart(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	if os.Geteuid() == 0 { // the cluster runs as the postgres user, which must traverse these
		for _, d := range []string{filepath.Dir(tmp), tmp} {
			if err := os.Chmod(d, 0o711); err != nil {
				t.Fatal(err)
			}
		}
	}
	cfg := data.ManagedConfig{Dir: filepath.Join(tmp, "pg"), Ephemeral: true}
	var cluster *data.Managed // the running one; stopped when the test ends
	t.Cleanup(func() {
		if cluster != nil {
			stopCluster(t, cluster)
		}
	})
	cluster = startCluster(t, cfg)
	n := startNode(t, "n", map[string]string{"DATABASE_URL": cluster.URL()})
	hc := newHTTPClient(t)
	waitUntil(t, "/readyz 200", 15*time.Second, func() bool { return getStatus(hc, n.url+"/readyz") == 200 })

	var followers []*follower
	for i := range 3 {
		followers = append(followers, follow(t, fmt.Sprint("f", i), n.url))
	}
	for _, f := range followers {
		f.waitReady(t)
	}
	var acked ackedIDs
	publishAll := func(round, writers, each int) {
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					status, ids, err := publishEvents(hc, n.url, eventBody(fmt.Sprintf("r%d/w%d", round, w), i, 1))
					if err != nil || status != 200 {
						t.Errorf("round %d publish: got %d, %v; want 200", round, status, err)
						return
					}
					acked.add(ids)
				}
			})
		}
		wg.Wait()
	}
	publishAll(0, 2, 10)
	for _, f := range followers {
		f.waitFor(t, 20)
	}

	stopCluster(t, cluster)
	cluster = nil
	waitUntil(t, "/readyz 503 during the outage", 10*time.Second, func() bool { return getStatus(hc, n.url+"/readyz") == 503 })
	for i := range 5 {
		status, ids, err := publishEvents(hc, n.url, eventBody("outage", i, 1+i%2))
		if err != nil || status != 503 {
			t.Errorf("publish during the outage: got %d %v, %v; want 503", status, ids, err)
		}
	}
	// A stream opened during the outage: it may replay from the node's cache or be closed
	// with 1011 and retry; either way it ends up with everything.
	during := follow(t, "during", n.url)
	waitUntil(t, "the stream opened during the outage to be answered", 10*time.Second, func() bool {
		_, closes := during.movesAndCloses()
		return during.count() > 0 || len(closes) > 0
	})
	followers = append(followers, during)
	if got := getStatus(hc, n.url+"/readyz"); got != 503 {
		t.Errorf("/readyz during the outage: got %d, want 503", got)
	}

	cluster = startCluster(t, cfg)
	waitUntil(t, "/readyz 200 after the restart", 15*time.Second, func() bool { return getStatus(hc, n.url+"/readyz") == 200 })
	publishAll(1, 2, 10)
	if t.Failed() {
		return
	}
	total := watermark(t, hc, n.url)
	if total != 40 {
		t.Errorf("watermark: got %d, want 40 (the events acknowledged with 200)", total)
	}
	acked.checkExactly(t, total)
	for _, f := range followers {
		f.waitFor(t, int(total))
	}
	for _, f := range followers {
		f.stop()
		f.check(t, int(total))
		_, closes := f.movesAndCloses()
		t.Logf("follower %s: close codes %v", f.name, closes)
	}
}

func startCluster(t *testing.T, cfg data.ManagedConfig) *data.Managed {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := data.StartManaged(ctx, cfg)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	return m
}

func stopCluster(t *testing.T, m *data.Managed) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Stop(ctx); err != nil {
		t.Errorf("stop PostgreSQL: %v", err)
	}
}

// TestListenerTerminated terminates the node's LISTEN backend twice while writers publish, and
// once more just before a last few events are published through publish_event, with nothing
// published after them: their NOTIFY reaches no listener, so only the node's catch-up after it
// reconnects can deliver them. No stream misses an event.
func TestListenerTerminated(t *testing.T) {
	t.Parallel()
	dbURL := datatest.NewDatabase(t)
	n := startNode(t, "n", map[string]string{"DATABASE_URL": dbURL})
	var followers []*follower
	for i := range 2 {
		followers = append(followers, follow(t, fmt.Sprint("f", i), n.url))
	}
	for _, f := range followers {
		f.waitReady(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	var adminMu sync.Mutex // a pgx.Conn is not for concurrent use

	hc := newHTTPClient(t)
	const writers, each, tail = 3, 100, 5
	var acked ackedIDs
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				status, ids, err := publishEvents(hc, n.url, eventBody(fmt.Sprint("w", w), i, 1))
				if err != nil || status != 200 {
					t.Errorf("publish: got %d, %v", status, err)
					return
				}
				acked.add(ids)
				if w == 0 && (i == each/3 || i == 2*each/3) {
					adminMu.Lock()
					err := terminateListener(ctx, admin)
					adminMu.Unlock()
					if err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		return
	}

	if err := terminateListener(ctx, admin); err != nil {
		t.Fatal(err)
	}
	for i := range tail {
		var id int64
		if err := admin.QueryRow(ctx, `SELECT publish_event('tail', $1, NULL)`, fmt.Sprint(i)).Scan(&id); err != nil {
			t.Fatalf("publish_event: %v", err)
		}
		acked.add([]int64{id})
	}
	var listeners int
	if err := admin.QueryRow(ctx, listenersQuery("count(*)")).Scan(&listeners); err != nil {
		t.Fatal(err)
	}
	if listeners != 0 {
		t.Logf("the listener was back before the last events were published; their NOTIFY may have woken it")
	}

	const total = writers*each + tail
	acked.checkExactly(t, total)
	for _, f := range followers {
		f.waitFor(t, total)
	}
	for _, f := range followers {
		f.stop()
		f.check(t, total)
	}
}

// listenersQuery selects what from the event log's LISTEN backends of the current database (not
// the presence listener's).
func listenersQuery(what string) string {
	return `SELECT ` + what + ` FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN "events"%' AND state = 'idle'`
}

// terminateListener waits, with a bound, for the node's LISTEN backend (after a termination
// the node reconnects it), terminates it, and waits until it is gone.
func terminateListener(ctx context.Context, admin *pgx.Conn) error {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	var pids []int32
	for {
		rows, err := admin.Query(ctx, listenersQuery("pid"))
		if err == nil {
			pids, err = pgx.CollectRows(rows, pgx.RowTo[int32])
		}
		if err != nil {
			return fmt.Errorf("find the listener: %w", err)
		}
		if len(pids) == 1 {
			break
		}
		if len(pids) > 1 || time.Now().After(deadline) {
			return fmt.Errorf("listener backends: got %v, want one", pids)
		}
		<-tick.C
	}
	var ok bool
	if err := admin.QueryRow(ctx, `SELECT pg_terminate_backend($1)`, pids[0]).Scan(&ok); err != nil || !ok {
		return fmt.Errorf("terminate the listener %d: got %v, %v", pids[0], ok, err)
	}
	for {
		var alive int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pids[0]).Scan(&alive); err != nil {
			return fmt.Errorf("wait for the listener to end: %w", err)
		}
		if alive == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("listener backend %d still there after pg_terminate_backend", pids[0])
		}
		<-tick.C
	}
}
