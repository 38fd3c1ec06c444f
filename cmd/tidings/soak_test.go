package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/cookiejar"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
	"tidings/realtime"
	"tidings/web"
	"tidings/web/webtest"
)

// The soak test: three nodes on one database, one of them with a hub held behind on purpose,
// writers through every path, clients that reconnect at random with random lastEventId
// values, retention and listener kills, and a check of every frame of every stream against
// the log (docs/protocol.md sections 1 to 3). This file runs it; soak_stream_test.go holds the
// clients, soak_check_test.go the log's copy and the checks.

// defaultSoakDuration is how long writers, faults and reconnecting clients run, unless
// TIDINGS_SOAK_DURATION (a Go duration) says otherwise for a longer run by hand.
const defaultSoakDuration = 20 * time.Second

// soakNodes names the nodes; the last one's hub lags on purpose (webtest.LagStore).
var soakNodes = []string{"a", "b", "c"}

// TestSoak runs the soak and fails on any broken promise: per stream, session first, exactly
// one ready (after a reset, with its id), ids increasing, exactly the visible events of its
// range, once each, in order; ready never before the watermark read before the stream opened;
// reset only for a future or pruned lastEventId, carrying a watermark that the database had;
// no rolled-back event and no event the viewer may not see ever delivered. It logs what it
// checked. TIDINGS_SOAK_SEED replays a run's random choices (their timing is the machine's).
func TestSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("the soak test runs for 20 s: skipped with -short")
	}
	t.Parallel()
	seed, duration := soakSettings(t)
	t.Logf("soak seed %d (replay its choices with TIDINGS_SOAK_SEED=%d), %v", seed, seed, duration)
	s := startSoak(t, seed)
	s.duration = duration

	soakCtx, stopSoak := context.WithTimeout(context.Background(), duration)
	defer stopSoak()
	var writers, faults, clientsSoaked, clients sync.WaitGroup
	final := make(chan struct{}) // closed once the log is still and s.wEnd is set
	for i := range 2 {
		writers.Go(func() { s.httpWriter(soakCtx, i) })
		writers.Go(func() { s.sqlWriter(soakCtx, i) })
	}
	faults.Go(func() { s.holder(soakCtx) })
	faults.Go(func() { s.listenerKiller(soakCtx) })
	faults.Go(func() { s.pruner(soakCtx) })
	for i, c := range s.clients {
		clientsSoaked.Add(1)
		clients.Go(func() {
			c.soak(soakCtx, s, i, clientsSoaked.Done)
			<-final
			c.finalStream(s)
		})
	}

	<-soakCtx.Done()
	writers.Wait()
	faults.Wait()
	clientsSoaked.Wait() // every stream of the soak is closed: only late socket publishes remain
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wEnd, err := s.events.Watermark(ctx)
	if err == nil {
		_, err = s.mirror.catchUp(ctx)
	}
	s.wEnd = wEnd
	close(final) // even after a failure: the clients must end
	clients.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.mirror.catchUp(ctx); err != nil {
		t.Fatal(err)
	}
	s.verify(ctx)
}

// soakSettings returns TIDINGS_SOAK_SEED, or a fresh seed, and TIDINGS_SOAK_DURATION, or the
// default duration.
func soakSettings(t *testing.T) (seed uint64, duration time.Duration) {
	seed, duration = uint64(time.Now().UnixNano()), defaultSoakDuration
	var err error
	if v := os.Getenv("TIDINGS_SOAK_SEED"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("TIDINGS_SOAK_SEED=%q: %v", v, err)
		}
	}
	if v := os.Getenv("TIDINGS_SOAK_DURATION"); v != "" {
		if duration, err = time.ParseDuration(v); err != nil || duration <= 0 {
			t.Fatalf("TIDINGS_SOAK_DURATION=%q: want a positive Go duration (%v)", v, err)
		}
	}
	return seed, duration
}

// soak is the state that the goroutines of TestSoak share.
type soak struct {
	// Set by startSoak.
	t       *testing.T
	seed    uint64
	dbURL   string
	nodes   []*webtest.Node
	lag     *webtest.LagStore // the hub of the last node
	hc      *http.Client      // anonymous requests: watermarks, backend publishes
	events  *data.Events      // the test's own reads of the log
	pool    *pgxpool.Pool     // the test's own connections
	mirror  *mirror
	users   []soakUser
	clients []*soakClient
	wEnd    int64 // set before the final streams start: the watermark once writers stopped

	duration time.Duration // set once, before the soak starts

	// What the soak did, for the report.
	holds, kills, prunes, pruned                    atomic.Int64
	httpEvents, sqlEvents, sqlRolledBack, published atomic.Int64

	mu         sync.Mutex
	streams    []*streamRec // guarded by mu: every stream, once closed
	acked      []ackedEvent // guarded by mu: events whose publish was acknowledged, with their tag
	rolledBack int          // guarded by mu: events published in transactions rolled back
}

// soakUser is an account the clients sign in as.
type soakUser struct {
	id   int64
	name string
	typ  data.UserType
	hc   *http.Client // its cookie jar holds the session
}

// ackedEvent is an id that a publish got back, and the tag (or message text) it stored.
type ackedEvent struct {
	id  int64
	tag string
}

// startSoak starts the nodes (each on a pool of its own, named so that its listener can be
// found), the accounts and the clients.
func startSoak(t *testing.T, seed uint64) *soak {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := &soak{t: t, seed: seed, dbURL: datatest.NewDatabase(t), hc: newHTTPClient(t)}
	pool, err := pgxpool.New(ctx, s.dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	s.pool, s.events = pool, data.NewEvents(pool)
	s.mirror = &mirror{events: s.events}
	for i, name := range soakNodes {
		cfg, err := pgxpool.ParseConfig(s.dbURL)
		if err != nil {
			t.Fatal(err)
		}
		cfg.ConnConfig.RuntimeParams["application_name"] = "soak-" + name
		pool, err := pgxpool.NewWithConfig(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		n, err := webtest.Start(pool, webtest.Options{
			// The listener never runs its idle check, so that its backend's query stays LISTEN.
			Hub: realtime.HubConfig{Listener: data.ListenerConfig{Check: time.Hour}},
			Web: web.Config{Dev: true, APIKey: testAPIKey},
			Lag: i == len(soakNodes)-1,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(n.Stop)
		s.nodes = append(s.nodes, n)
	}
	s.lag = s.nodes[len(s.nodes)-1].Lag

	// Accounts: regular ones registered over HTTP, crew and admin made as `tidings user create`
	// does and signed in over HTTP.
	for i, typ := range []data.UserType{data.UserRegular, data.UserRegular, data.UserRegular, data.UserCrew, data.UserCrew, data.UserAdmin, data.UserAdmin} {
		u := soakUser{name: fmt.Sprintf("soak%d-%s", i, typ), typ: typ, hc: s.jarClient(t)}
		path, status := "/api/auth/register", http.StatusCreated
		if typ != data.UserRegular {
			if _, err := s.nodes[0].Auth.CreateUser(ctx, u.name, "password-"+u.name, typ); err != nil {
				t.Fatal(err)
			}
			path, status = "/api/auth/login", http.StatusOK
		}
		body := fmt.Sprintf(`{"name":%q,"password":%q}`, u.name, "password-"+u.name)
		resp, err := u.hc.Post(s.nodes[i%len(s.nodes)].URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var session struct {
			Account struct {
				ID   int64         `json:"id"`
				Type data.UserType `json:"type"`
			} `json:"account"`
		}
		err = json.NewDecoder(resp.Body).Decode(&session)
		resp.Body.Close()
		if err != nil || resp.StatusCode != status || session.Account.Type != typ {
			t.Fatalf("%s %s: got %d %+v, %v; want %d", path, u.name, resp.StatusCode, session, err, status)
		}
		u.id = session.Account.ID
		s.users = append(s.users, u)
	}
	for i := range 4 {
		s.clients = append(s.clients, &soakClient{name: fmt.Sprint("anon", i), hc: s.jarClient(t)})
	}
	for _, u := range s.users {
		s.clients = append(s.clients, &soakClient{name: u.name, hc: u.hc, viewer: soakViewer{id: u.id, typ: u.typ}})
	}
	return s
}

// jarClient is an HTTP client with a cookie jar of its own (cookies ignore ports: one session
// is good on every node) on the test's transport.
func (s *soak) jarClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Transport: s.hc.Transport, Timeout: s.hc.Timeout}
}

// rng returns the random source of one goroutine of the soak, derived from the seed.
func (s *soak) rng(stream uint64) *rand.Rand { return rand.New(rand.NewPCG(s.seed, stream)) }

// Streams of the random sources, one per goroutine.
const (
	rngHTTPWriter = 1 << 8
	rngSQLWriter  = 2 << 8
	rngHolder     = 3 << 8
	rngKiller     = 4 << 8
	rngPruner     = 5 << 8
	rngClient     = 1 << 16 // + client index << 8
	rngPublisher  = 1 << 32 // + client index << 20 + stream number
)

// pause waits d, or until ctx ends; it reports whether ctx is still going.
func pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// between returns a random duration in [lo, hi).
func between(rng *rand.Rand, lo, hi time.Duration) time.Duration {
	return lo + time.Duration(rng.Int64N(int64(hi-lo)))
}

// audience returns a random audience as JSON ("" for none at all), of every kind of
// docs/protocol.md section 3: everyone, signed-in, each min-type, one of the accounts, nobody.
func (s *soak) audience(rng *rand.Rand) string {
	switch rng.IntN(9) {
	case 0:
		return ""
	case 1:
		return "null"
	case 2:
		return `{"kind":"everyone"}`
	case 3:
		return `{"kind":"signed-in"}`
	case 4, 5:
		return fmt.Sprintf(`{"kind":"min-type","type":%q}`, []data.UserType{data.UserRegular, data.UserCrew, data.UserAdmin}[rng.IntN(3)])
	case 6, 7:
		return fmt.Sprintf(`{"kind":"user","userId":%d}`, s.users[rng.IntN(len(s.users))].id)
	}
	return `{"kind":"user","userId":999999}` // no such user: reaches nobody
}

// httpWriter publishes through POST /api/publish on random nodes, one to three events a call.
func (s *soak) httpWriter(ctx context.Context, w int) {
	rng := s.rng(rngHTTPWriter + uint64(w))
	for seq := 0; pause(ctx, between(rng, 5*time.Millisecond, 40*time.Millisecond)); seq++ {
		n := s.nodes[rng.IntN(len(s.nodes))]
		var evs, tags []string
		for j := range 1 + rng.IntN(3) {
			tag := fmt.Sprintf("h%d-%d-%d", w, seq, j)
			ev := fmt.Sprintf(`{"type":"soak","data":{"tag":%q,"via":"http"}`, tag)
			if a := s.audience(rng); a != "" {
				ev += `,"audience":` + a
			}
			evs, tags = append(evs, ev+"}"), append(tags, tag)
		}
		status, ids, err := publishEvents(s.hc, n.URL, "["+strings.Join(evs, ",")+"]")
		if err != nil || status != http.StatusOK || len(ids) != len(tags) {
			s.t.Errorf("http writer %d: publish on %s: got %d %v, %v; want 200 and %d ids", w, n.URL, status, ids, err, len(tags))
			return
		}
		s.ack(ids, tags)
		s.httpEvents.Add(int64(len(ids)))
	}
}

// sqlWriter publishes with publish_event in transactions of its own connection, one to three
// events each; one transaction in four rolls back after publishing, and marks its events so.
func (s *soak) sqlWriter(ctx context.Context, w int) {
	rng := s.rng(rngSQLWriter + uint64(w))
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(cctx, s.dbURL)
	if err != nil {
		s.t.Errorf("sql writer %d: %v", w, err)
		return
	}
	defer conn.Close(context.Background())
	for seq := 0; pause(ctx, between(rng, 5*time.Millisecond, 40*time.Millisecond)); seq++ {
		rollback := rng.IntN(4) == 0
		var ids []int64
		var tags []string
		// Each transaction runs to its end, whatever ctx does: a commit cut off would leave
		// its outcome unknown.
		err := func() error {
			tctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tx, err := conn.Begin(tctx)
			if err != nil {
				return err
			}
			defer tx.Rollback(tctx)
			for j := range 1 + rng.IntN(3) {
				tag := fmt.Sprintf("q%d-%d-%d", w, seq, j)
				d := fmt.Sprintf(`{"tag":%q,"via":"sql","rolledBack":%t}`, tag, rollback)
				var aud *string
				if a := s.audience(rng); a != "" {
					aud = &a
				}
				var id int64
				if err := tx.QueryRow(tctx, `SELECT publish_event('soak', $1::jsonb, $2::jsonb)`, d, aud).Scan(&id); err != nil {
					return err
				}
				ids, tags = append(ids, id), append(tags, tag)
			}
			if rollback {
				return tx.Rollback(tctx)
			}
			return tx.Commit(tctx)
		}()
		if err != nil {
			s.t.Errorf("sql writer %d: %v", w, err)
			return
		}
		if rollback {
			s.mu.Lock()
			s.rolledBack += len(ids)
			s.mu.Unlock()
			s.sqlRolledBack.Add(int64(len(ids)))
			continue
		}
		s.ack(ids, tags)
		s.sqlEvents.Add(int64(len(ids)))
	}
}

func (s *soak) ack(ids []int64, tags []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, id := range ids {
		s.acked = append(s.acked, ackedEvent{id, tags[i]})
	}
}

// holder holds the lagging node's hub and releases it at random times.
func (s *soak) holder(ctx context.Context) {
	rng := s.rng(rngHolder)
	defer s.lag.Release()
	for pause(ctx, between(rng, 200*time.Millisecond, 2*time.Second)) {
		s.lag.Hold()
		s.holds.Add(1)
		held := pause(ctx, between(rng, 200*time.Millisecond, 2500*time.Millisecond))
		s.lag.Release()
		if !held {
			return
		}
	}
}

// listenerKiller terminates the LISTEN backend of a random node at random times.
func (s *soak) listenerKiller(ctx context.Context) {
	rng := s.rng(rngKiller)
	cctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin, err := pgx.Connect(cctx, s.dbURL)
	if err != nil {
		s.t.Errorf("listener killer: %v", err)
		return
	}
	defer admin.Close(context.Background())
	for pause(ctx, between(rng, 300*time.Millisecond, 2500*time.Millisecond)) {
		name := soakNodes[rng.IntN(len(soakNodes))]
		if err := terminateListenerOf(cctx, admin, "soak-"+name); err != nil {
			s.t.Errorf("listener killer: node %s: %v", name, err)
			return
		}
		s.kills.Add(1)
	}
}

// terminateListenerOf terminates the LISTEN backend of the node whose connections carry
// application_name app, waiting for it (with a bound) if it is reconnecting, and then until
// it is gone.
func terminateListenerOf(ctx context.Context, admin *pgx.Conn, app string) error {
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	var pid int32
	for {
		err := admin.QueryRow(ctx, `SELECT pid FROM pg_stat_activity WHERE datname = current_database()
			AND application_name = $1 AND query LIKE 'LISTEN%' AND state = 'idle'`, app).Scan(&pid)
		if err == nil {
			break
		}
		if err != pgx.ErrNoRows || time.Now().After(deadline) {
			return fmt.Errorf("find the listener: %w", err)
		}
		<-tick.C
	}
	if _, err := admin.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		return fmt.Errorf("terminate the listener %d: %w", pid, err)
	}
	for {
		var alive int
		if err := admin.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE pid = $1`, pid).Scan(&alive); err != nil {
			return fmt.Errorf("wait for the listener to end: %w", err)
		}
		if alive == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("listener backend %d still there after pg_terminate_backend", pid)
		}
		<-tick.C
	}
}

// pruner runs retention at random times, as a node's pruner does, with a cutoff taken from an
// event some hundreds of ids back: resumes from before it then find their events pruned. The
// log's copy reads every event before it can be pruned (the cutoff's event is in the copy,
// and only events before it are deleted).
func (s *soak) pruner(ctx context.Context) {
	rng := s.rng(rngPruner)
	for pause(ctx, between(rng, 500*time.Millisecond, 2500*time.Millisecond)) {
		head, err := s.mirror.catchUp(ctx)
		if err != nil {
			if ctx.Err() == nil {
				s.t.Errorf("pruner: %v", err)
			}
			return
		}
		cut := head - int64(50+rng.IntN(300))
		if cut < 1 {
			continue
		}
		cutoff := s.mirror.get(cut).time
		n, err := s.nodes[rng.IntN(len(s.nodes))].Events.PruneOlderThan(ctx, cutoff)
		if err != nil {
			if ctx.Err() == nil {
				s.t.Errorf("pruner: %v", err)
			}
			return
		}
		s.prunes.Add(1)
		s.pruned.Add(n)
	}
}

// floor returns the largest id retention has deleted (0 when none): every id at or below it
// is gone, every committed one above it is still there.
func (s *soak) floor(ctx context.Context) (int64, error) {
	var f int64
	err := s.pool.QueryRow(ctx, `SELECT coalesce((SELECT min(id) FROM events),
		(SELECT last_id + 1 FROM event_log_state)) - 1`).Scan(&f)
	if err != nil {
		return 0, fmt.Errorf("read the pruned floor: %w", err)
	}
	return f, nil
}
