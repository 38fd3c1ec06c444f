package data_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
	"tidings/data/datatest"
)

// reapAfter is the reap age the tests use: far longer than any test takes, so that only a beat
// set back by SQL makes a node stale.
const reapAfter = 9 * time.Second

// newPresence returns a Presence on a fresh database, and a pool on that database.
func newPresence(t *testing.T) (*data.Presence, *pgxpool.Pool) {
	t.Helper()
	pool := datatest.NewPool(t)
	p, err := data.NewPresence(testCtx(t), pool)
	if err != nil {
		t.Fatal(err)
	}
	return p, pool
}

// presenceReport is one call of Presence.Listen's report.
type presenceReport struct {
	state data.ListenerState
	msg   *data.PresenceMessage
}

// listenPresence runs p.Listen until the test ends and returns a function that returns its
// next report, failing the test when none comes within 10s.
func listenPresence(t *testing.T, p *data.Presence, cfg data.ListenerConfig) (next func() presenceReport) {
	t.Helper()
	reports := make(chan presenceReport, 1000)
	lctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	t.Cleanup(stop)
	wg.Go(func() {
		p.Listen(lctx, cfg, func(s data.ListenerState, m *data.PresenceMessage) {
			select {
			case reports <- presenceReport{s, m}:
			case <-lctx.Done():
			}
		})
	})
	return func() presenceReport {
		t.Helper()
		select {
		case r := <-reports:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no report from the presence listener within 10s")
			return presenceReport{}
		}
	}
}

// listenUp is listenPresence, once the listener has said it is up.
func listenUp(t *testing.T, p *data.Presence) (nextMessage func() *data.PresenceMessage) {
	t.Helper()
	next := listenPresence(t, p, data.ListenerConfig{})
	if r := next(); r.state != data.ListenerUp || r.msg != nil {
		t.Fatalf("first report: got %d %+v, want ListenerUp without a message", r.state, r.msg)
	}
	return func() *data.PresenceMessage {
		t.Helper()
		r := next()
		if r.state != data.ListenerNotified || r.msg == nil {
			t.Fatalf("report: got %d %+v, want a message", r.state, r.msg)
		}
		return r.msg
	}
}

// describe prints a message for comparisons.
func describe(m *data.PresenceMessage) string {
	if m == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%s node=%q seq=%d full=%v on=%v off=%v gone=%v body=%q",
		m.Channel, m.Node, m.Seq, m.Full, m.On, m.Off, m.Gone, m.Body)
}

// expectMessage fails the test unless got is want.
func expectMessage(t *testing.T, got *data.PresenceMessage, want data.PresenceMessage) {
	t.Helper()
	if describe(got) != describe(&want) {
		t.Fatalf("message:\n got %s\nwant %s", describe(got), describe(&want))
	}
}

// expectSignal sends a signal through p and checks that it is the next message: nothing was
// notified between the previous message and it (notifications arrive in commit order).
func expectSignal(t *testing.T, p *data.Presence, next func() *data.PresenceMessage, body string) {
	t.Helper()
	if err := p.Signal(testCtx(t), []byte(body)); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.SignalsChannel, Body: []byte(body)})
}

// expectNodes fails the test unless Nodes(reapAfter) is want, written "id seq [users]; ...".
func expectNodes(t *testing.T, p *data.Presence, want string) {
	t.Helper()
	nodes, err := p.Nodes(testCtx(t), reapAfter)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, n := range nodes {
		if n.Users == nil {
			t.Errorf("node %s: nil users, want a slice", n.ID)
		}
		got = append(got, fmt.Sprintf("%s %d %v", n.ID, n.Seq, n.Users))
	}
	if strings.Join(got, "; ") != want {
		t.Fatalf("nodes: got %q, want %q", strings.Join(got, "; "), want)
	}
}

// ageBeat sets node's beat back by age, as if it had not beaten for that long.
func ageBeat(t *testing.T, pool *pgxpool.Pool, node string, age string) {
	t.Helper()
	tag, err := pool.Exec(testCtx(t), "UPDATE presence_nodes SET beat = beat - $2::interval WHERE node = $1", node, age)
	if err != nil || tag.RowsAffected() != 1 {
		t.Fatalf("age the beat of %s: %v, %d rows", node, err, tag.RowsAffected())
	}
}

// countRows returns the number of rows of presence_nodes and presence_users.
func countRows(t *testing.T, pool *pgxpool.Pool) string {
	t.Helper()
	var nodes, users int
	err := pool.QueryRow(testCtx(t), "SELECT (SELECT count(*) FROM presence_nodes), (SELECT count(*) FROM presence_users)").Scan(&nodes, &users)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d nodes, %d users", nodes, users)
}

func TestPresenceReplaceFlushNodes(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, _ := newPresence(t)
	next := listenUp(t, p)

	if err := p.Replace(ctx, "a", 1, []int64{3, 1, 2, 2}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 1, Full: true})
	if err := p.Replace(ctx, "b", 7, nil); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "b", Seq: 7, Full: true})
	expectNodes(t, p, "a 1 [1 2 3]; b 7 []")

	// A user that came, one already there, one that left, one that was not there.
	if err := p.Flush(ctx, "a", 2, []int64{4, 5, 3}, []int64{1, 99}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 2, On: []int64{4, 5, 3}, Off: []int64{1, 99}})
	expectNodes(t, p, "a 2 [2 3 4 5]; b 7 []")
	if err := p.Flush(ctx, "a", 3, nil, nil); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 3})
	expectNodes(t, p, "a 3 [2 3 4 5]; b 7 []")

	// Replace drops what is not in the new set.
	if err := p.Replace(ctx, "a", 4, []int64{5, 6}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 4, Full: true})
	expectNodes(t, p, "a 4 [5 6]; b 7 []")

	// Refused before anything is written or notified.
	for _, bad := range []struct {
		name    string
		node    string
		on, off []int64
	}{
		{"a user both on and off", "a", []int64{7, 8}, []int64{8}},
		{"an empty node id", "", []int64{7}, nil},
		{"a node id with a control character", "a\n", []int64{7}, nil},
		{"a node id too long", strings.Repeat("n", 129), []int64{7}, nil},
	} {
		if err := p.Flush(ctx, bad.node, 5, bad.on, bad.off); err == nil || errors.Is(err, data.ErrNodeGone) {
			t.Errorf("flush with %s: got %v, want an error", bad.name, err)
		}
	}
	if err := p.Replace(ctx, "", 5, []int64{1}); err == nil {
		t.Error("replace with an empty node id: got no error")
	}
	expectNodes(t, p, "a 4 [5 6]; b 7 []")
	expectSignal(t, p, next, "after the refusals")
}

// TestPresenceFlushGone checks that a flush of a node whose row is missing (never written,
// reaped, or emptied by a crash) returns ErrNodeGone and writes and notifies nothing.
func TestPresenceFlushGone(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, pool := newPresence(t)
	next := listenUp(t, p)

	if err := p.Flush(ctx, "ghost", 1, []int64{1, 2}, []int64{3}); !errors.Is(err, data.ErrNodeGone) {
		t.Fatalf("flush of a node never written: got %v, want ErrNodeGone", err)
	}
	if got := countRows(t, pool); got != "0 nodes, 0 users" {
		t.Fatalf("after the flush of a node never written: got %s, want none", got)
	}
	if err := p.Replace(ctx, "a", 1, []int64{1, 2}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 1, Full: true})
	// A crash empties the unlogged tables.
	if _, err := pool.Exec(ctx, "TRUNCATE presence_nodes, presence_users"); err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(ctx, "a", 2, []int64{3}, []int64{1}); !errors.Is(err, data.ErrNodeGone) {
		t.Fatalf("flush after a crash: got %v, want ErrNodeGone", err)
	}
	if got := countRows(t, pool); got != "0 nodes, 0 users" {
		t.Fatalf("after the flush of a node gone: got %s, want none", got)
	}
	if _, err := p.Beat(ctx, "a", reapAfter); !errors.Is(err, data.ErrNodeGone) {
		t.Fatalf("beat after a crash: got %v, want ErrNodeGone", err)
	}
	if err := p.Leave(ctx, "a", reapAfter, time.Second); !errors.Is(err, data.ErrNodeGone) {
		t.Fatalf("leave after a crash: got %v, want ErrNodeGone", err)
	}
	if got := countRows(t, pool); got != "0 nodes, 0 users" {
		t.Fatalf("after the beat and leave of a node gone: got %s, want none", got)
	}
	// None of them notified anything.
	expectSignal(t, p, next, "after the node went")
	// Replace repairs it.
	if err := p.Replace(ctx, "a", 3, []int64{2, 3}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 3, Full: true})
	expectNodes(t, p, "a 3 [2 3]")
}

// TestPresenceBeatReaps checks that a beat renews its node's beat, removes the nodes whose beat
// is older than the reap age with their users, announces them, and leaves the others alone.
func TestPresenceBeatReaps(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, pool := newPresence(t)
	next := listenUp(t, p)
	for i, n := range []string{"a", "b", "c", "d"} {
		if err := p.Replace(ctx, n, 1, []int64{int64(i + 1), 10}); err != nil {
			t.Fatal(err)
		}
		next()
	}
	ageBeat(t, pool, "b", "1 hour")
	ageBeat(t, pool, "c", "10 seconds")
	ageBeat(t, pool, "d", "5 seconds") // within the reap age: alive
	// A node is not reaped by its own beat: a's, set back, is renewed instead.
	ageBeat(t, pool, "a", "1 hour")
	gone, err := p.Beat(ctx, "a", reapAfter)
	if err != nil || fmt.Sprint(gone) != "[b c]" {
		t.Fatalf("beat: got %v, %v; want [b c]", gone, err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Gone: []string{"b", "c"}})
	expectNodes(t, p, "a 1 [1 10]; d 1 [4 10]")
	if got := countRows(t, pool); got != "2 nodes, 4 users" {
		t.Fatalf("after the reap: got %s, want 2 nodes, 4 users", got)
	}

	// Nothing stale: nothing removed, nothing notified.
	if gone, err := p.Beat(ctx, "d", reapAfter); err != nil || len(gone) != 0 {
		t.Fatalf("beat with nothing stale: got %v, %v; want nothing", gone, err)
	}
	expectSignal(t, p, next, "after a quiet beat")

	// A beat brings a node that its readers saw as dead back.
	ageBeat(t, pool, "d", "8 seconds")
	nodes, err := p.Nodes(ctx, 5*time.Second)
	if err != nil || len(nodes) != 1 || nodes[0].ID != "a" {
		t.Fatalf("nodes alive within 5s before d's beat: got %+v, %v; want a", nodes, err)
	}
	// The marks say the same, without the users, beside the log's bounds.
	ids, err := data.AppendEvents(ctx, pool, []data.NewEvent{{Type: "note", Data: []byte(`{}`)}, {Type: "note", Data: []byte(`{}`)}})
	if err != nil {
		t.Fatal(err)
	}
	wm := ids[1]
	if b, marks, err := p.BoundsAndMarks(ctx, 5*time.Second); err != nil || fmt.Sprint(marks) != "[{a 1}]" || b.Watermark != wm {
		t.Fatalf("marks within 5s before d's beat: got %+v, %+v, %v; want [{a 1}] at watermark %d", b, marks, err, wm)
	}
	if _, marks, err := p.BoundsAndMarks(ctx, reapAfter); err != nil || fmt.Sprint(marks) != "[{a 1} {d 1}]" {
		t.Fatalf("marks within the reap age: got %+v, %v; want a and d at 1", marks, err)
	}
	if _, err := p.Beat(ctx, "d", reapAfter); err != nil {
		t.Fatal(err)
	}
	if nodes, err := p.Nodes(ctx, 5*time.Second); err != nil || len(nodes) != 2 {
		t.Fatalf("nodes alive within 5s after d's beat: got %+v, %v; want a and d", nodes, err)
	}
}

// TestPresenceGoneSplits reaps more nodes than one notification can name: they are announced
// in several, each under PostgreSQL's payload limit, together naming every node.
func TestPresenceGoneSplits(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, pool := newPresence(t)
	next := listenUp(t, p)
	if err := p.Replace(ctx, "a", 1, nil); err != nil {
		t.Fatal(err)
	}
	next()
	// 100 nodes with ids of 128 bytes: about 13,000 bytes of names.
	var want []string
	for i := range 100 {
		want = append(want, fmt.Sprintf("%03d%s", i, strings.Repeat("x", 125)))
	}
	_, err := pool.Exec(ctx, `INSERT INTO presence_nodes (node, seq, beat) SELECT x, 1, now() - interval '1 hour' FROM unnest($1::text[]) AS x`, want)
	if err != nil {
		t.Fatal(err)
	}
	gone, err := p.Beat(ctx, "a", reapAfter)
	if err != nil || !slices.Equal(gone, want) {
		t.Fatalf("beat: got %d nodes, %v; want the 100", len(gone), err)
	}
	var got []string
	notices := 0
	for len(got) < len(want) {
		m := next()
		if m.Channel != data.PresenceChannel || len(m.Gone) == 0 {
			t.Fatalf("message: got %s, want gone", describe(m))
		}
		notices++
		got = append(got, m.Gone...)
	}
	if !slices.Equal(got, want) || notices < 2 {
		t.Fatalf("gone: got %d nodes in %d notifications, want the 100 in 2 or more", len(got), notices)
	}
}

// TestPresenceLeaveLinger checks that a node that leaves still counts for the linger, and is
// reaped once the linger has passed (its beat set back by SQL rather than waited for).
func TestPresenceLeaveLinger(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, pool := newPresence(t)
	users := createUsers(t, pool, 2)
	for i, n := range []string{"a", "b"} {
		if err := p.Replace(ctx, n, 1, users[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	const linger = 5 * time.Second
	if err := p.Leave(ctx, "a", reapAfter, linger); err != nil {
		t.Fatal(err)
	}
	// Its beat is reapAfter - linger = 4s in the past, by the database's clock.
	var age time.Duration
	if err := pool.QueryRow(ctx, "SELECT now() - beat FROM presence_nodes WHERE node = 'a'").Scan(&age); err != nil {
		t.Fatal(err)
	}
	if age < reapAfter-linger || age > reapAfter-linger+time.Second {
		t.Fatalf("beat after leave: %v old, want %v", age, reapAfter-linger)
	}
	// Lingering: still alive for readers and beats.
	if gone, err := p.Beat(ctx, "b", reapAfter); err != nil || len(gone) != 0 {
		t.Fatalf("beat while a lingers: got %v, %v; want nothing reaped", gone, err)
	}
	expectNodes(t, p, fmt.Sprintf("a 1 [%d]; b 1 [%d]", users[0], users[1]))
	if online, err := p.Online(ctx, reapAfter); err != nil || !slices.Equal(online, users) {
		t.Fatalf("online while a lingers: got %v, %v; want %v", online, err, users)
	}
	// The linger passes.
	ageBeat(t, pool, "a", "5.1 seconds")
	expectNodes(t, p, fmt.Sprintf("b 1 [%d]", users[1]))
	if online, err := p.Online(ctx, reapAfter); err != nil || !slices.Equal(online, users[1:]) {
		t.Fatalf("online after the linger: got %v, %v; want %v", online, err, users[1:])
	}
	if gone, err := p.Beat(ctx, "b", reapAfter); err != nil || fmt.Sprint(gone) != "[a]" {
		t.Fatalf("beat after the linger: got %v, %v; want [a]", gone, err)
	}
	if err := p.Leave(ctx, "b", reapAfter, -time.Second); err == nil {
		t.Fatal("leave with a negative linger: got no error")
	}
}

// createUsers creates n users and returns their ids, ascending.
func createUsers(t *testing.T, pool *pgxpool.Pool, n int) []int64 {
	t.Helper()
	var ids []int64
	for i := range n {
		u, err := data.CreateUser(testCtx(t), pool, fmt.Sprintf("user%d", i), data.UserRegular, "x")
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, u.ID)
	}
	return ids
}

// TestPresenceOnline checks that Online is the union of the live nodes' users, ascending,
// without duplicates, without deleted users and without the users of stale nodes.
func TestPresenceOnline(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, pool := newPresence(t)
	if online, err := p.Online(ctx, reapAfter); err != nil || online == nil || len(online) != 0 {
		t.Fatalf("online with no node: got %#v, %v; want an empty slice", online, err)
	}
	u := createUsers(t, pool, 4)
	const deleted = 987654321 // never a user
	for _, w := range []struct {
		node  string
		users []int64
	}{{"a", []int64{u[1], u[0]}}, {"b", []int64{u[2], deleted, u[0]}}, {"c", []int64{u[3]}}} {
		if err := p.Replace(ctx, w.node, 1, w.users); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(what string, want ...int64) {
		t.Helper()
		online, err := p.Online(ctx, reapAfter)
		if err != nil || !slices.Equal(online, want) {
			t.Fatalf("online %s: got %v, %v; want %v", what, online, err, want)
		}
	}
	expect("at first", u...)
	if err := data.DeleteUser(ctx, pool, u[1]); err != nil {
		t.Fatal(err)
	}
	expect("after a user was deleted", u[0], u[2], u[3])
	ageBeat(t, pool, "b", "10 seconds")
	expect("with b stale", u[0], u[3])
	ageBeat(t, pool, "a", "10 seconds")
	ageBeat(t, pool, "c", "10 seconds")
	expect("with every node stale")
}

// TestPresenceLargeDeltaComesFull finds the longest delta whose signed payload fits in the
// bound and checks that it is notified as a delta, one id more as full, and that both are
// written whole.
func TestPresenceLargeDeltaComesFull(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, _ := newPresence(t)
	next := listenUp(t, p)
	if err := p.Replace(ctx, "a", 1, nil); err != nil {
		t.Fatal(err)
	}
	next()
	// Ids of 16 digits; the signature's length does not depend on the key.
	ids := func(from, n int) []int64 {
		var s []int64
		for i := range n {
			s = append(s, 1_000_000_000_000_000+int64(from+i))
		}
		return s
	}
	fits := 0
	for n := 1; ; n++ {
		body := data.EncodePresence(&data.PresenceMessage{Node: "a", Seq: 2, On: ids(0, n)})
		if len(data.SignEphemeral(make([]byte, 32), data.PresenceChannel, body)) > data.MaxNotifyPayload {
			break
		}
		fits = n
	}
	if fits < 100 {
		t.Fatalf("%d ids fit in a delta, want more", fits)
	}
	if err := p.Flush(ctx, "a", 2, ids(0, fits), nil); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 2, On: ids(0, fits)})
	if err := p.Flush(ctx, "a", 3, ids(fits, fits+1), nil); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 3, Full: true})
	nodes, err := p.Nodes(ctx, reapAfter)
	if err != nil || len(nodes) != 1 || !slices.Equal(nodes[0].Users, ids(0, 2*fits+1)) {
		t.Fatalf("nodes after the large flushes: got %d nodes, %v; want a with %d users", len(nodes), err, 2*fits+1)
	}
	// Far too large, off this time: every user goes.
	if err := p.Flush(ctx, "a", 4, nil, ids(0, 5000)); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, next(), data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 4, Full: true})
	expectNodes(t, p, "a 4 []")
}

// lockedBuffer is a bytes.Buffer that a logger and a test may share.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestPresenceListenDropsForgeries sends, from a connection of its own, notifications on both
// channels that are unsigned, wrongly signed, signed for the other channel, or signed but
// malformed, then a good one, and checks that only the good one is reported and that the
// drops are logged.
func TestPresenceListenDropsForgeries(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, pool := newPresence(t)
	var logs lockedBuffer
	next := listenPresence(t, p, data.ListenerConfig{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if r := next(); r.state != data.ListenerUp || r.msg != nil {
		t.Fatalf("first report: got %d %+v, want ListenerUp without a message", r.state, r.msg)
	}
	var key []byte
	if err := pool.QueryRow(ctx, "SELECT key FROM ephemeral_key").Scan(&key); err != nil || len(key) != 32 {
		t.Fatalf("the key: got %d bytes, %v; want 32", len(key), err)
	}
	other := make([]byte, 32) // a key of another deployment
	conn, err := pgx.Connect(ctx, pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	notify := func(channel, payload string) {
		t.Helper()
		if _, err := conn.Exec(ctx, "SELECT pg_notify($1, $2)", channel, payload); err != nil {
			t.Fatal(err)
		}
	}
	gone := []byte(`{"gone":["a"]}`)
	for _, f := range []struct{ channel, payload string }{
		{data.PresenceChannel, string(gone)},
		{data.PresenceChannel, ""},
		{data.PresenceChannel, strings.Repeat("0", 32) + string(gone)},
		{data.PresenceChannel, data.SignEphemeral(other, data.PresenceChannel, gone)},
		{data.PresenceChannel, data.SignEphemeral(key, data.SignalsChannel, gone)},
		// The tag in upper case (or, once in millions of keys, when it has no letter, a wrong one).
		{data.PresenceChannel, upperTag(data.SignEphemeral(key, data.PresenceChannel, gone)[:32]) + string(gone)},
		{data.PresenceChannel, data.SignEphemeral(key, data.PresenceChannel, gone)[:31] + string(gone)},
		{data.PresenceChannel, data.SignEphemeral(key, data.PresenceChannel, gone) + " "},
		{data.PresenceChannel, data.SignEphemeral(key, data.PresenceChannel, []byte(`{"gone":[]}`))},
		{data.PresenceChannel, data.SignEphemeral(key, data.PresenceChannel, []byte(`{"node":"a","seq":1,"full":true,"on":[1]}`))},
		{data.PresenceChannel, data.SignEphemeral(key, data.PresenceChannel, []byte(`not json`))},
		{data.SignalsChannel, "forged"},
		{data.SignalsChannel, data.SignEphemeral(other, data.SignalsChannel, []byte("forged"))},
		{data.SignalsChannel, data.SignEphemeral(key, data.PresenceChannel, []byte("forged"))},
	} {
		notify(f.channel, f.payload)
	}
	// Signed with the key, from anywhere: believed.
	notify(data.PresenceChannel, data.SignEphemeral(key, data.PresenceChannel, gone))
	if r := next(); r.state != data.ListenerNotified {
		t.Fatalf("report: got state %d, want ListenerNotified", r.state)
	} else {
		expectMessage(t, r.msg, data.PresenceMessage{Channel: data.PresenceChannel, Gone: []string{"a"}})
	}
	if err := p.Signal(ctx, []byte(`{"from":7}`)); err != nil {
		t.Fatal(err)
	}
	if r := next(); r.state != data.ListenerNotified {
		t.Fatalf("report: got state %d, want ListenerNotified", r.state)
	} else {
		expectMessage(t, r.msg, data.PresenceMessage{Channel: data.SignalsChannel, Body: []byte(`{"from":7}`)})
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "dropped an ephemeral notification") {
		t.Fatalf("logs: got %q, want a warning about the drops", l)
	}
}

// upperTag returns tag in upper case, or a wrong tag when that changes nothing.
func upperTag(tag string) string {
	if u := strings.ToUpper(tag); u != tag {
		return u
	}
	return strings.Repeat("f", len(tag))
}

// TestSignal checks that a signal arrives with its body, and that an over-long body, or one a
// notification cannot carry, is refused and sends nothing.
func TestSignal(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, _ := newPresence(t)
	next := listenUp(t, p)
	for _, bad := range [][]byte{
		bytes.Repeat([]byte("a"), data.MaxSignalPayload+1),
		[]byte("a\x00b"),
		[]byte("\xff"),
	} {
		if err := p.Signal(ctx, bad); err == nil {
			t.Errorf("signal of %d bytes %q...: got no error", len(bad), bad[:min(len(bad), 8)])
		}
	}
	longest := bytes.Repeat([]byte("é"), data.MaxSignalPayload/2)
	expectSignal(t, p, next, string(longest))
	expectSignal(t, p, next, "")
}

// TestPresenceKeyShared starts nodes at once on a fresh database: they all end up with the one
// stored key, so that each believes the others.
func TestPresenceKeyShared(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	pool := datatest.NewPool(t)
	nodes := make([]*data.Presence, 4)
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Go(func() { nodes[i], errs[i] = data.NewPresence(ctx, pool) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	next := listenUp(t, nodes[0])
	for i, n := range nodes {
		expectSignal(t, n, next, fmt.Sprintf("from node %d", i))
	}
	var keys int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM ephemeral_key").Scan(&keys); err != nil || keys != 1 {
		t.Fatalf("stored keys: got %d, %v; want 1", keys, err)
	}
}

// TestPresenceListenReconnects kills the presence listener's backend: it says it is down, then
// up again (the caller re-reads), and carries on relaying messages.
func TestPresenceListenReconnects(t *testing.T) {
	t.Parallel()
	ctx := testCtx(t)
	p, pool := newPresence(t)
	next := listenPresence(t, p, data.ListenerConfig{MaxBackoff: 50 * time.Millisecond})
	expectState := func(want data.ListenerState) presenceReport {
		t.Helper()
		r := next()
		if r.state != want || (r.msg == nil) != (want != data.ListenerNotified) {
			t.Fatalf("report: got %d %s, want state %d", r.state, describe(r.msg), want)
		}
		return r
	}
	expectState(data.ListenerUp)
	var killed int
	err := pool.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()`).Scan(&killed)
	if err != nil || killed != 1 {
		t.Fatalf("terminate listener: got %d, %v; want 1", killed, err)
	}
	expectState(data.ListenerDown)
	for {
		// Each failed attempt says so again; the backoff is short.
		if r := next(); r.state == data.ListenerUp {
			break
		} else if r.state != data.ListenerDown {
			t.Fatalf("report while reconnecting: got %d, want ListenerDown or ListenerUp", r.state)
		}
	}
	if err := p.Replace(ctx, "a", 1, []int64{1}); err != nil {
		t.Fatal(err)
	}
	expectMessage(t, expectState(data.ListenerNotified).msg, data.PresenceMessage{Channel: data.PresenceChannel, Node: "a", Seq: 1, Full: true})
}
