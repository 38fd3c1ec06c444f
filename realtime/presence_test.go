package realtime

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
)

// presenceNode is one node of a presence test: a hub and its presence on a database shared with
// the other nodes. It serves the streams of user N (session 100+N) to ?user=N, anonymous ones
// without.
type presenceNode struct {
	*streamServer
	presence *Presence
}

// startPresenceNode starts a node; store wraps the node's presence store when set.
func startPresenceNode(t *testing.T, pool *pgxpool.Pool, pcfg PresenceConfig, wrap ...func(PresenceStore) PresenceStore) *presenceNode {
	t.Helper()
	if pcfg.FlushEvery == 0 {
		pcfg.FlushEvery = 20 * time.Millisecond
	}
	ps, err := data.NewPresence(context.Background(), pool)
	if err != nil {
		t.Fatal(err)
	}
	var store PresenceStore = ps
	for _, w := range wrap {
		store = w(store)
	}
	events := data.NewEvents(pool)
	n := &presenceNode{}
	n.streamServer = startNode(t, pool, events, HubConfig{Poll: 50 * time.Millisecond}, StreamConfig{}, func(r *http.Request) StreamOptions {
		opts := StreamOptions{LastEventID: lastEventIDOf(r)}
		if u, _ := strconv.ParseInt(r.URL.Query().Get("user"), 10, 64); u > 0 {
			w, err := events.Watermark(r.Context())
			if err != nil {
				panic(err)
			}
			opts.Viewer = Viewer{SessionID: 100 + u, UserID: u, Type: data.UserRegular}
			opts.Watermark = &w
			opts.SessionFrame = []byte(`{"type":"session","session":{}}`)
		}
		return opts
	}, func(h *Hub) func(context.Context) {
		n.presence = NewPresence(h, store, pcfg)
		return func(ctx context.Context) { n.presence.Run(ctx) }
	})
	select {
	case <-n.presence.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("presence never read the nodes")
	}
	return n
}

// ephConn is a stream a test reads presence and signal frames from.
type ephConn struct {
	*websocket.Conn
	t *testing.T
}

// open opens a stream of user (0: anonymous) and reads it up to ready, and for a signed-in
// user its presence frame, which it returns.
func (n *presenceNode) open(t *testing.T, user int64) (*ephConn, []int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	url := n.url
	if user > 0 {
		url += "?user=" + strconv.FormatInt(user, 10)
	}
	c, _, err := websocket.Dial(ctx, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	ec := &ephConn{c, t}
	for _, want := range []string{"session", "ready"} {
		if f := ec.next(); f.Type != want {
			t.Fatalf("got %+v, want %s", f, want)
		}
	}
	if user == 0 {
		return ec, nil
	}
	f := ec.next()
	if f.Type != "presence" || f.Online == nil {
		t.Fatalf("got %+v after ready, want the presence frame", f)
	}
	return ec, f.Online
}

// ephFrameOf is what the tests read of a frame.
type ephFrameOf struct {
	Type   string  `json:"type"`
	ID     int64   `json:"id"`
	Online []int64 `json:"-"` // of a presence frame
	On     bool    `json:"-"` // of a presence-change frame
	UserID int64   `json:"userId"`
	From   int64   `json:"from"`
	Code   string  `json:"code"`
	Ref    *string `json:"ref"`
	Signal *struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"signal"`
	raw string
}

func (c *ephConn) next() ephFrameOf {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, msg, err := c.Read(ctx)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	var f ephFrameOf
	if err := json.Unmarshal(msg, &f); err != nil {
		c.t.Fatalf("frame %s: %v", msg, err)
	}
	var on struct {
		Online json.RawMessage `json:"online"`
	}
	json.Unmarshal(msg, &on)
	f.On = string(on.Online) == "true"
	json.Unmarshal(on.Online, &f.Online)
	f.raw = string(msg)
	return f
}

// change reads the next frame, which must be a presence change, and returns it as "7 on".
func (c *ephConn) change() string {
	c.t.Helper()
	f := c.next()
	if f.Type != "presence-change" {
		c.t.Fatalf("got %s, want a presence-change", f.raw)
	}
	if f.On {
		return fmt.Sprint(f.UserID, " on")
	}
	return fmt.Sprint(f.UserID, " off")
}

func (c *ephConn) wantChange(want string) {
	c.t.Helper()
	if got := c.change(); got != want {
		c.t.Fatalf("got change %q, want %q", got, want)
	}
}

func (c *ephConn) send(frame string) {
	c.t.Helper()
	if err := c.Write(context.Background(), websocket.MessageText, []byte(frame)); err != nil {
		c.t.Fatal(err)
	}
}

// TestPresenceAfterReady: a signed-in stream gets who is online right after ready, itself
// included, then every change; an anonymous stream gets neither.
func TestPresenceAfterReady(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	a := startPresenceNode(t, pool, PresenceConfig{Grace: 50 * time.Millisecond})
	one, online := a.open(t, 1)
	if !slices.Equal(online, []int64{1}) {
		t.Fatalf("user 1's first presence: got %v, want [1]", online)
	}
	anon, _ := a.open(t, 0)
	two, online := a.open(t, 2)
	if !slices.Equal(online, []int64{1, 2}) {
		t.Fatalf("user 2's presence: got %v, want [1 2]", online)
	}
	one.wantChange("2 on")
	two.Close(websocket.StatusNormalClosure, "")
	one.wantChange("2 off")
	// The anonymous stream heard none of it: the next frame it gets is the next event.
	a.publish(t, 1, `1`)
	if f := anon.next(); f.Type != "event" {
		t.Fatalf("anonymous stream: got %s, want the event", f.raw)
	}
}

// TestPresenceAcrossNodes: a user online on node A is seen on node B, and goes offline there
// only once the grace has passed after their last stream closed.
func TestPresenceAcrossNodes(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	grace := 300 * time.Millisecond
	a := startPresenceNode(t, pool, PresenceConfig{Grace: grace})
	b := startPresenceNode(t, pool, PresenceConfig{Grace: grace})
	watcher, _ := b.open(t, 2)
	one, _ := a.open(t, 1)
	watcher.wantChange("1 on")
	closed := time.Now()
	one.Close(websocket.StatusNormalClosure, "")
	watcher.wantChange("1 off")
	if waited := time.Since(closed); waited < grace {
		t.Fatalf("user 1 went offline %v after closing, before the grace of %v", waited, grace)
	}
}

// TestPresenceFrameFollowsTheTables: a stream's presence frame says what the tables say once it
// has opened, not what the node's view has heard: a node whose notification never arrived is in
// it, and a node dead by the database's clock, which nobody has reaped yet, is not. The view
// is read again on the way, so the streams already open hear the difference as changes.
func TestPresenceFrameFollowsTheTables(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	a := startPresenceNode(t, pool, PresenceConfig{Grace: time.Hour, Timeout: time.Hour})
	ctx := context.Background()
	// Another node's first write, whose notification was lost: in the tables, not in a's view.
	if _, err := pool.Exec(ctx, `
		WITH n AS (INSERT INTO presence_nodes (node, seq, beat) VALUES ('silent', 1, now()) RETURNING node)
		INSERT INTO presence_users (node, user_id) SELECT node, 501 FROM n`); err != nil {
		t.Fatal(err)
	}
	if a.presence.inView(501) {
		t.Fatal("the view heard of a write that notified nobody")
	}
	two, online := a.open(t, 2)
	if !slices.Equal(online, []int64{2, 501}) {
		t.Fatalf("presence with a notification lost: got %v, want [2 501]", online)
	}
	// That node stops beating: dead by the database's clock (its timeout is an hour), and no
	// node has reaped it (a's next beat is 12 minutes away).
	if _, err := pool.Exec(ctx, "UPDATE presence_nodes SET beat = now() - interval '2 hours' WHERE node = 'silent'"); err != nil {
		t.Fatal(err)
	}
	if _, online := a.open(t, 3); !slices.Equal(online, []int64{2, 3}) {
		t.Fatalf("presence with a dead node not reaped: got %v, want [2 3]", online)
	}
	two.wantChange("3 on")
	two.wantChange("501 off")
}

// countingStarts is a presence store that counts the start reads of streams.
type countingStarts struct {
	PresenceStore
	reads atomic.Int32
}

func (c *countingStarts) BoundsAndMarks(ctx context.Context, reapAfter time.Duration) (data.Bounds, []data.PresenceMark, error) {
	c.reads.Add(1)
	return c.PresenceStore.BoundsAndMarks(ctx, reapAfter)
}

// TestPresenceCostsAStartNoRead: a signed-in stream learns where the log stands and every
// node's mark in one read, shared with the streams that open with it: presence adds no
// statement to a stream's start (a reconnect storm's opens cost PostgreSQL what they did
// before presence).
func TestPresenceCostsAStartNoRead(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	store := &countingStarts{}
	a := startPresenceNode(t, pool, PresenceConfig{}, func(s PresenceStore) PresenceStore {
		store.PresenceStore = s
		return store
	})
	for i, user := range []int64{1, 2, 3} {
		before := store.reads.Load()
		if _, online := a.open(t, user); !slices.Equal(online, []int64{1, 2, 3}[:i+1]) {
			t.Fatalf("presence of stream %d: got %v", i+1, online)
		}
		if n := store.reads.Load() - before; n != 1 {
			t.Fatalf("stream %d's start: %d reads of bounds and marks, want 1", i+1, n)
		}
	}
}

// leftAtEmpty reports whether node n has no user in their grace.
func (n *presenceNode) graceOver() bool {
	n.presence.lmu.Lock()
	defer n.presence.lmu.Unlock()
	return len(n.presence.leftAt) == 0
}

// TestReloadWithinGraceChangesNothing: a user whose stream closes and opens again within the
// grace, on the same node or another one, changes nothing on any node.
func TestReloadWithinGraceChangesNothing(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	grace := time.Second
	a := startPresenceNode(t, pool, PresenceConfig{Grace: grace})
	b := startPresenceNode(t, pool, PresenceConfig{Grace: grace})
	onA, _ := a.open(t, 2)
	seenBy(t, 2, b)
	onB, _ := b.open(t, 3)
	seenBy(t, 3, a)
	onA.wantChange("3 on")
	one, _ := a.open(t, 1)
	onA.wantChange("1 on")
	onB.wantChange("1 on")
	// A reload on the same node, then a move to the other one.
	one.Close(websocket.StatusNormalClosure, "")
	one, online := a.open(t, 1)
	if !slices.Equal(online, []int64{1, 2, 3}) {
		t.Fatalf("user 1 back on A: got %v, want [1 2 3]", online)
	}
	one.Close(websocket.StatusNormalClosure, "")
	_, online = b.open(t, 1)
	if !slices.Equal(online, []int64{1, 2, 3}) {
		t.Fatalf("user 1 moved to B: got %v, want [1 2 3]", online)
	}
	// Once A's grace for user 1 is over (A has written whatever it would), a marker: the next
	// change each node's streams see must be the marker's.
	waitUntil(t, "A's grace to pass", a.graceOver)
	a.open(t, 4)
	onA.wantChange("4 on")
	onB.wantChange("4 on")
}

// noLeave is a presence store whose node leaves as a killed one would: without a word.
type noLeave struct{ PresenceStore }

func (noLeave) Leave(context.Context, string, time.Duration, time.Duration) error { return nil }

// TestDeadNodeIsReaped: the users of a node that stops beating without leaving go offline on
// the other nodes once its timeout has passed.
func TestDeadNodeIsReaped(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	cfg := PresenceConfig{Grace: time.Hour, Timeout: 500 * time.Millisecond}
	a := startPresenceNode(t, pool, cfg, func(s PresenceStore) PresenceStore { return noLeave{s} })
	b := startPresenceNode(t, pool, cfg)
	watcher, _ := b.open(t, 2)
	a.open(t, 1)
	watcher.wantChange("1 on")
	a.stop() // the node's streams end, and its presence stops beating
	watcher.wantChange("1 off")
}

// TestDeletedUserGoesOfflineAtOnce: the deletion of a user takes them offline on every node
// without waiting for the grace.
func TestDeletedUserGoesOfflineAtOnce(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	cfg := PresenceConfig{Grace: time.Hour}
	a := startPresenceNode(t, pool, cfg)
	b := startPresenceNode(t, pool, cfg)
	watcher, _ := b.open(t, 2)
	one, _ := a.open(t, 1)
	watcher.wantChange("1 on")
	appendControl(t, pool, data.CloseStreams{UserIDs: []int64{1}, Code: 4003, Reason: "user-deleted"})
	watcher.wantChange("1 off")
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, _, err := one.Read(ctx)
		cancel()
		if err == nil {
			continue // a presence change before the close
		}
		if websocket.CloseStatus(err) != 4003 {
			t.Fatalf("the deleted user's stream: got %v, want close 4003", err)
		}
		break
	}
}

// TestLogoutCountsLikeAClose: a logout closes the user's stream, and they go offline after the
// grace like after any close.
func TestLogoutCountsLikeAClose(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	grace := 200 * time.Millisecond
	a := startPresenceNode(t, pool, PresenceConfig{Grace: grace})
	watcher, _ := a.open(t, 2)
	a.open(t, 1)
	watcher.wantChange("1 on")
	loggedOut := time.Now()
	appendControl(t, pool, data.CloseStreams{SessionIDs: []int64{101}, Code: 4003, Reason: "logout"})
	watcher.wantChange("1 off")
	if waited := time.Since(loggedOut); waited < grace {
		t.Fatalf("offline %v after the logout, before the grace of %v", waited, grace)
	}
}

// TestSignals: a signal reaches every signed-in stream on every node, the sender's own
// included, and is refused with the codes of docs/protocol.md section 8.
func TestSignals(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	a := startPresenceNode(t, pool, PresenceConfig{})
	b := startPresenceNode(t, pool, PresenceConfig{})
	onB, _ := b.open(t, 2)
	seenBy(t, 2, a)
	one, _ := a.open(t, 1)
	onB.wantChange("1 on")
	one.send(`{"type":"signal","ref":"s1","signal":{"type":"typing","data":{}}}`)
	for _, c := range []*ephConn{one, onB} {
		f := c.next()
		if f.Type != "signal" || f.From != 1 || f.Signal == nil || f.Signal.Type != "typing" || string(f.Signal.Data) != "{}" {
			t.Fatalf("got %s, want user 1's typing signal", f.raw)
		}
	}
	anon, _ := a.open(t, 0)
	anon.send(`{"type":"signal","ref":"x","signal":{"type":"typing","data":{}}}`)
	if f := anon.next(); f.Type != "error" || f.Code != CodeUnauthenticated || f.Ref == nil || *f.Ref != "x" {
		t.Fatalf("anonymous signal: got %s, want unauthenticated", f.raw)
	}
	for _, tc := range []struct{ frame, code string }{
		{`{"type":"signal","ref":"r","signal":{"type":"wave","data":{}}}`, CodeForbidden},
		{`{"type":"signal","ref":"r","signal":{"type":"typing","data":[1]}}`, CodeInvalid},
		{`{"type":"signal","ref":"r","signal":{"type":"typing","data":"hi"}}`, CodeInvalid},
		{`{"type":"signal","ref":"r","signal":{"type":"typing","data":{"x":"` + strings.Repeat("a", MaxSignalData) + `"}}}`, CodeInvalid},
		{`{"type":"signal","ref":"r"}`, CodeInvalidFrame},
	} {
		one.send(tc.frame)
		if f := one.next(); f.Type != "error" || f.Code != tc.code {
			t.Fatalf("%s: got %s, want %s", tc.frame, f.raw, tc.code)
		}
	}
}

// TestSignalRateLimit: a socket sends 5 signals a second, bursts of 10; beyond, rate-limited.
func TestSignalRateLimit(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	a := startPresenceNode(t, pool, PresenceConfig{})
	one, _ := a.open(t, 1)
	start := time.Now()
	const n = 20
	for i := range n {
		one.send(fmt.Sprintf(`{"type":"signal","ref":"s%d","signal":{"type":"typing"}}`, i))
	}
	one.send(`{"type":"ping","ref":"end"}`)
	signals, limited := 0, 0
	for pong := false; !pong; {
		switch f := one.next(); f.Type {
		case "signal":
			signals++
		case "error":
			if f.Code != CodeRateLimited {
				t.Fatalf("got %s, want rate-limited", f.raw)
			}
			limited++
		case "pong":
			pong = true
		}
	}
	allowed := 10 + int(time.Since(start).Seconds()*5)
	if limited == 0 || limited < n-allowed {
		t.Fatalf("%d of %d signals refused in %v, want at least %d", limited, n, time.Since(start), n-allowed)
	}
	// Every accepted signal arrives (the pong may overtake the last of them).
	for signals < n-limited {
		if f := one.next(); f.Type == "signal" {
			signals++
		}
	}
}

// TestSignalsAreNeverReplayed: a stream that reconnects gets no signal sent while it was away,
// nor one sent before.
func TestSignalsAreNeverReplayed(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	a := startPresenceNode(t, pool, PresenceConfig{Grace: time.Hour})
	one, _ := a.open(t, 1)
	one.send(`{"type":"signal","ref":"s","signal":{"type":"typing","data":{}}}`)
	if f := one.next(); f.Type != "signal" {
		t.Fatalf("got %s, want the signal", f.raw)
	}
	again, _ := a.open(t, 1)
	a.publish(t, 1, `1`)
	if f := again.next(); f.Type != "event" {
		t.Fatalf("reconnected stream: got %s, want the event and no signal before it", f.raw)
	}
}

// TestReconnectStormChangesNothing: every stream of many users closes and opens again at
// once, half of them on the other node; nobody's presence changes anywhere.
func TestReconnectStormChangesNothing(t *testing.T) {
	t.Parallel()
	pool := datatest.NewPool(t)
	cfg := PresenceConfig{Grace: 2 * time.Second}
	a := startPresenceNode(t, pool, cfg)
	b := startPresenceNode(t, pool, cfg)
	const users, perUser = 40, 3
	nodes := []*presenceNode{a, b}
	conns := make([]*ephConn, 0, users*perUser)
	for u := int64(1); u <= users; u++ {
		for i := range perUser {
			c, _ := nodes[(int(u)+i)%2].open(t, u)
			conns = append(conns, c)
		}
	}
	everyone := make([]int64, users)
	for i := range everyone {
		everyone[i] = int64(i + 1)
	}
	// Each node's view holds everyone: what a stream opened now is told.
	for _, n := range nodes {
		waitUntil(t, "every user online in every view", func() bool {
			for _, u := range everyone {
				if !n.presence.inView(u) {
					return false
				}
			}
			return true
		})
	}
	var wg sync.WaitGroup
	reopened := make([]*ephConn, len(conns))
	for i, c := range conns {
		wg.Go(func() {
			c.Close(websocket.StatusGoingAway, "")
			n := nodes[(i+1)%2]
			rc, online := n.open(t, int64(i/perUser+1))
			if !slices.Equal(online, everyone) {
				t.Errorf("stream %d after the storm: got %v, want everyone", i, online)
			}
			reopened[i] = rc
		})
	}
	wg.Wait()
	// Watchers, each in the other node's view before the next step, then a marker once both
	// nodes' graces are over: whatever the storm changed would have come before it.
	watchB, _ := b.open(t, users+2)
	waitUntil(t, "user B's watcher on A", func() bool { return a.presence.inView(users + 2) })
	watchA, _ := a.open(t, users+1)
	waitUntil(t, "user A's watcher on B", func() bool { return b.presence.inView(users + 1) })
	waitUntil(t, "the graces to pass", func() bool { return a.graceOver() && b.graceOver() })
	a.open(t, users+3)
	watchA.wantChange(fmt.Sprint(users+3, " on"))
	watchB.wantChange(fmt.Sprint(users+1, " on"))
	watchB.wantChange(fmt.Sprint(users+3, " on"))
	for i, c := range reopened {
		// Streams from before the watchers saw only them and the marker.
		for _, want := range []int64{users + 2, users + 1, users + 3} {
			if got := c.change(); got != fmt.Sprint(want, " on") {
				t.Fatalf("stream %d: got change %q, want %d on", i, got, want)
			}
		}
	}
}

// seenBy waits until user is online in the view of every node given.
func seenBy(t *testing.T, user int64, nodes ...*presenceNode) {
	t.Helper()
	for _, n := range nodes {
		waitUntil(t, fmt.Sprint("user ", user, " in a node's view"), func() bool { return n.presence.inView(user) })
	}
}

// inView reports whether user is online in the node's view.
func (p *Presence) inView(user int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count[user] > 0
}

// TestEphRing: a stream behind the ring skips the signals it missed, but never a presence change.
func TestEphRing(t *testing.T) {
	t.Parallel()
	r := newEphRing()
	r.appendLocked(ephFrame{payload: []byte("p1"), presence: true})
	for range ephRingSize {
		r.appendLocked(ephFrame{payload: []byte("s")})
	}
	buf := make([]ephFrame, 8)
	if _, _, lost := r.readLocked(0, buf); !lost {
		t.Fatal("a stream that missed a presence change is not told")
	}
	n, next, lost := r.readLocked(1, buf)
	if lost || n != len(buf) || next != 1+int64(len(buf)) {
		t.Fatalf("after the presence change: got n=%d next=%d lost=%v; want the oldest signals held, from 2", n, next, lost)
	}
}
