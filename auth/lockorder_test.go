package auth_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/auth"
	"tidings/data"
)

// The tests of this file order transactions step by step: an admin transaction holds a lock,
// each side is started only once the previous one is seen waiting on a lock, and the hold is
// then released. They never rely on timing.

// newLockEnv is newEnv, but the Manager's connections wait 10 minutes before PostgreSQL looks
// for a deadlock: a cycle then stays in place, where the test sees it, and transactions that
// finish at all did not need the deadlock detector to break anything.
func newLockEnv(t *testing.T, cfg auth.Config, start time.Time) *env {
	t.Helper()
	e := newEnv(t, cfg, start)
	pcfg, err := pgxpool.ParseConfig(e.pool.Config().ConnString())
	if err != nil {
		t.Fatal(err)
	}
	pcfg.ConnConfig.RuntimeParams["deadlock_timeout"] = "10min"
	pcfg.ConnConfig.RuntimeParams["application_name"] = "tidings-auth-under-test"
	mpool, err := pgxpool.NewWithConfig(e.ctx, pcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mpool.Close)
	if err := mpool.Ping(e.ctx); err != nil {
		t.Fatalf("a pool with deadlock_timeout raised: %v (the test role must be allowed to set it)", err)
	}
	cfg.Now, cfg.Password = e.clock.Now, cheapPasswords
	e.m = auth.NewManager(mpool, cfg)
	return e
}

// hold starts an admin transaction that runs sql, and returns it; roll it back to release.
func (e *env) hold(sql string, args ...any) pgx.Tx {
	e.t.Helper()
	tx, err := e.pool.Begin(e.ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { tx.Rollback(context.Background()) })
	if _, err := tx.Exec(e.ctx, sql, args...); err != nil {
		e.t.Fatalf("hold %q: %v", sql, err)
	}
	return tx
}

// lockWaiters returns the backends of the Manager's pool that wait for a lock.
func (e *env) lockWaiters() []string {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `
		SELECT query FROM pg_stat_activity
		WHERE datname = current_database() AND application_name = 'tidings-auth-under-test'
		  AND wait_event_type = 'Lock'`)
	if err != nil {
		e.t.Fatal(err)
	}
	q, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		e.t.Fatal(err)
	}
	return q
}

// waitWaiters waits until n backends of the Manager wait for a lock. It fails the test if,
// first, one of the calls in done returns: that call did not wait where the lock order says
// it must.
func (e *env) waitWaiters(n int, what string, done ...<-chan error) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if w := e.lockWaiters(); len(w) == n {
			return
		}
		for _, d := range done {
			select {
			case err := <-d:
				e.t.Fatalf("%s: a call returned (err %v) instead of waiting for a lock", what, err)
			default:
			}
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: timed out waiting for %d backends waiting on a lock, got %q", what, n, e.lockWaiters())
		}
		time.Sleep(time.Millisecond)
	}
}

// deadlocked returns the backends of the Manager that wait for each other.
func (e *env) deadlocked() []int32 {
	e.t.Helper()
	rows, err := e.pool.Query(e.ctx, `
		SELECT a.pid FROM pg_stat_activity a
		WHERE a.datname = current_database() AND EXISTS (
			SELECT 1 FROM unnest(pg_blocking_pids(a.pid)) AS b(pid) WHERE a.pid = ANY(pg_blocking_pids(b.pid)))`)
	if err != nil {
		e.t.Fatal(err)
	}
	pids, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		e.t.Fatal(err)
	}
	return pids
}

// finish waits for every call in done to return with no error, and fails at once if their
// backends wait for each other: a deadlock, which PostgreSQL would break only after
// deadlock_timeout (the waiting transactions are then cancelled, so that the test can end).
func (e *env) finish(what string, done ...<-chan error) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for i := 0; i < len(done); {
		select {
		case err := <-done[i]:
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "40P01" {
				e.t.Errorf("%s: got a deadlock error %v, want none", what, err)
			} else if err != nil {
				e.t.Errorf("%s: got error %v, want nil", what, err)
			}
			i++
			continue
		default:
		}
		if pids := e.deadlocked(); len(pids) > 0 {
			for _, pid := range pids {
				e.pool.Exec(e.ctx, "SELECT pg_cancel_backend($1)", pid)
			}
			for _, d := range done[i:] {
				<-d
			}
			e.t.Fatalf("%s: deadlock: backends %v wait for each other", what, pids)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: timed out; waiting on locks: %q", what, e.lockWaiters())
		}
		time.Sleep(time.Millisecond)
	}
}

// async runs f in a goroutine and returns a channel that receives its error.
func async(f func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	return done
}

// controlID returns the id of the one close-streams control event after an id whose reason is
// reason.
func (e *env) controlID(after int64, reason string) int64 {
	e.t.Helper()
	var ids []int64
	for _, x := range e.eventsAfter(after) {
		if x.Type == data.ControlCloseStreams && strings.Contains(string(x.Data), `"`+reason+`"`) {
			ids = append(ids, x.ID)
		}
	}
	if len(ids) != 1 {
		e.t.Fatalf("control events %q after %d: got ids %v, want one", reason, after, ids)
	}
	return ids[0]
}

// TestRotationAndUserUpdateDoNotDeadlock: a rotation and a type change of the same user, run
// into each other on purpose. The rotation is held at the event counter first (after every
// lock it takes before its append), then the update starts and is seen waiting too, then the
// counter is released. Taken in different orders (the rotation holding the counter and
// wanting the user row through its new session's foreign key, the update holding the user row
// and wanting the counter), the two wait for each other until the deadlock detector kills one.
func TestRotationAndUserUpdateDoNotDeadlock(t *testing.T) {
	t.Parallel()
	const rotate = time.Hour
	e := newLockEnv(t, auth.Config{Rotate: rotate}, base)
	root := e.createUser("root", data.UserAdmin)
	s0, tok := e.register("alice")
	e.clock.advance(rotate) // the next resolve rotates
	w := e.watermark()

	counter := e.hold("SELECT last_id FROM event_log_state FOR UPDATE")
	var res auth.Resolution
	rotation := async(func() (err error) {
		res, err = e.m.Resolve(e.ctx, tok)
		return err
	})
	e.waitWaiters(1, "rotation held at the counter", rotation)
	crew := data.UserCrew
	update := async(func() error {
		_, err := e.m.UpdateUser(e.ctx, root, s0.Account.ID, auth.UserPatch{Type: &crew})
		return err
	})
	e.waitWaiters(2, "update started behind the rotation", rotation, update)
	if err := counter.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.finish("rotation and update", rotation, update)

	if res.Session == nil || res.NewToken == "" || res.Session.ID == s0.ID {
		t.Fatalf("rotation: got %s, want a successor", describe(res))
	}
	// The rotation went first: its successor still shows the old type, and the change's
	// control event comes after its watermark, to close the successor's streams.
	if res.Session.Account.Type != data.UserRegular {
		t.Errorf("successor's account: got type %q, want %q", res.Session.Account.Type, data.UserRegular)
	}
	if id := e.controlID(w, "access-changed"); id <= res.Watermark {
		t.Errorf("access-changed event %d: want it above the rotation's watermark %d", id, res.Watermark)
	}
	if u, err := e.m.User(e.ctx, s0.Account.ID); err != nil || u.Type != data.UserCrew {
		t.Errorf("user after the update: got %+v, %v; want crew", u, err)
	}
}

// TestLogoutAndResolveOfOneChainDoNotDeadlock: a logout with the successor's cookie locks the
// whole chain, older sessions included, while a resolve of the old cookie locks it and then
// its successor. Both take session rows in id order, so they queue instead of crossing: held
// at the old row, the resolve waits first, then the logout; released, the resolve goes first.
// A logout that locked its own row first would hold the successor the resolve needs next.
func TestLogoutAndResolveOfOneChainDoNotDeadlock(t *testing.T) {
	t.Parallel()
	const rotate, grace = time.Hour, 30 * time.Second
	e := newLockEnv(t, auth.Config{Rotate: rotate, Grace: grace}, base)
	s0, tok0 := e.register("alice")
	s1, tok1 := e.rotate(tok0, rotate)
	e.resolve(tok1) // the successor was presented: the old cookie is now a theft
	e.clock.advance(grace)

	old := e.hold("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", s0.ID)
	var res auth.Resolution
	theft := async(func() (err error) {
		res, err = e.m.Resolve(e.ctx, tok0)
		return err
	})
	e.waitWaiters(1, "resolve of the old cookie held at its row", theft)
	logout := async(func() error { return e.m.Logout(e.ctx, tok1) })
	e.waitWaiters(2, "logout started behind it", theft, logout)
	if err := old.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.finish("theft and logout", theft, logout)
	wantAnonymous(t, "old cookie after grace", res, auth.NoticeSessionTaken)
	for _, id := range []int64{s0.ID, s1.ID} {
		if row := e.row(id); row.RevokedAt == nil {
			t.Errorf("session %d: got not revoked, want revoked", id)
		}
	}
}

// TestResolveWatermarkReflectsChangeCommittedBefore: a type change that holds the user when
// the resolve starts commits first; the resolve reflects it, and its watermark covers the
// change's control event, so that the stream is not closed for a change it already shows.
func TestResolveWatermarkReflectsChangeCommittedBefore(t *testing.T) {
	t.Parallel()
	e := newLockEnv(t, auth.Config{}, base)
	root := e.createUser("root", data.UserAdmin)
	s0, tok := e.register("alice")
	w := e.watermark()

	counter := e.hold("SELECT last_id FROM event_log_state FOR UPDATE")
	crew := data.UserCrew
	update := async(func() error {
		_, err := e.m.UpdateUser(e.ctx, root, s0.Account.ID, auth.UserPatch{Type: &crew})
		return err
	})
	e.waitWaiters(1, "update held at the counter, holding the user", update)
	var res auth.Resolution
	resolve := async(func() (err error) {
		res, err = e.m.Resolve(e.ctx, tok)
		return err
	})
	e.waitWaiters(2, "resolve waiting for the user", update, resolve)
	if err := counter.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.finish("update, then resolve", update, resolve)

	if res.Session == nil || res.Session.ID != s0.ID {
		t.Fatalf("resolve: got %s, want session %d", describe(res), s0.ID)
	}
	if res.Session.Account.Type != data.UserCrew {
		t.Errorf("account: got type %q, want the change committed before: %q", res.Session.Account.Type, data.UserCrew)
	}
	if id := e.controlID(w, "access-changed"); id > res.Watermark {
		t.Errorf("access-changed event %d: above the watermark %d of a resolve that reflects it", id, res.Watermark)
	}
}

// TestResolveWatermarkPrecedesChangeCommittedAfter: a type change that starts while the resolve
// holds the user commits after it; the resolve does not reflect it, and the change's control
// event is above its watermark, so that it closes the stream.
func TestResolveWatermarkPrecedesChangeCommittedAfter(t *testing.T) {
	t.Parallel()
	e := newLockEnv(t, auth.Config{}, base)
	root := e.createUser("root", data.UserAdmin)
	s0, tok := e.register("alice")
	w := e.watermark()

	// Held at the session row: the resolve has locked the user and waits for it.
	session := e.hold("SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE", s0.ID)
	var res auth.Resolution
	resolve := async(func() (err error) {
		res, err = e.m.Resolve(e.ctx, tok)
		return err
	})
	e.waitWaiters(1, "resolve held at its session", resolve)
	crew := data.UserCrew
	update := async(func() error {
		_, err := e.m.UpdateUser(e.ctx, root, s0.Account.ID, auth.UserPatch{Type: &crew})
		return err
	})
	e.waitWaiters(2, "update waiting for the resolve's user lock", resolve, update)
	if err := session.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.finish("resolve, then update", resolve, update)

	if res.Session == nil || res.Session.ID != s0.ID {
		t.Fatalf("resolve: got %s, want session %d", describe(res), s0.ID)
	}
	if res.Session.Account.Type != data.UserRegular {
		t.Errorf("account: got type %q, want %q (the change came after)", res.Session.Account.Type, data.UserRegular)
	}
	if id := e.controlID(w, "access-changed"); id <= res.Watermark {
		t.Errorf("access-changed event %d: at or below the watermark %d of a resolve that does not reflect it", id, res.Watermark)
	}
	if res.Watermark < w {
		t.Errorf("watermark: got %d, want at least %d, read before the resolve", res.Watermark, w)
	}
}

// TestResolveWatermarkOnlyWithSession: anonymous resolutions carry no watermark.
func TestResolveWatermarkOnlyWithSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	_, tok := e.register("alice")
	if r := e.resolve(tok); r.Session == nil || r.Watermark != e.watermark() {
		t.Errorf("resolved session: got %s watermark %d, want the session and %d", describe(r), r.Watermark, e.watermark())
	}
	if err := e.m.Logout(e.ctx, tok); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []auth.Token{tok, auth.NewToken(), ""} {
		if r := e.resolve(tok); r.Session != nil || r.Watermark != 0 {
			t.Errorf("anonymous: got %s watermark %d, want 0", describe(r), r.Watermark)
		}
	}
}

// TestResolveOfAPresentedSessionTakesNoLock: a session already presented and not due for
// rotation resolves from one snapshot, without a lock: it waits neither for a transaction that
// holds its rows nor for a change in flight, and its watermark still splits that change's
// control event from what it reflects.
func TestResolveOfAPresentedSessionTakesNoLock(t *testing.T) {
	t.Parallel()
	e := newLockEnv(t, auth.Config{}, base)
	root := e.createUser("root", data.UserAdmin)
	s0, tok := e.register("alice")
	e.resolve(tok) // presented: from now on nothing changes when it is resolved
	w := e.watermark()

	rows := e.hold("SELECT 1 FROM users u, sessions s WHERE u.id = $1 AND s.id = $2 FOR UPDATE OF u, s", s0.Account.ID, s0.ID)
	ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
	res, err := e.m.Resolve(ctx, tok)
	cancel()
	if err != nil || res.Session == nil || res.Session.ID != s0.ID || res.Watermark != w {
		t.Fatalf("resolve while its rows are locked: got %s watermark %d, %v; want session %d at %d, at once", describe(res), res.Watermark, err, s0.ID, w)
	}
	if err := rows.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}

	// A type change in flight, held at the event counter with its user locked.
	counter := e.hold("SELECT last_id FROM event_log_state FOR UPDATE")
	crew := data.UserCrew
	update := async(func() error {
		_, err := e.m.UpdateUser(e.ctx, root, s0.Account.ID, auth.UserPatch{Type: &crew})
		return err
	})
	e.waitWaiters(1, "update held at the counter, holding the user", update)
	before := e.resolve(tok)
	if err := counter.Rollback(e.ctx); err != nil {
		t.Fatal(err)
	}
	e.finish("update", update)
	after := e.resolve(tok)
	id := e.controlID(w, "access-changed")
	if before.Session == nil || before.Session.Account.Type != data.UserRegular || id <= before.Watermark {
		t.Errorf("resolved during the change: got %s watermark %d; want the regular account below the change's event %d", describe(before), before.Watermark, id)
	}
	if after.Session == nil || after.Session.Account.Type != data.UserCrew || id > after.Watermark {
		t.Errorf("resolved after the change: got %s watermark %d; want the crew account at or above the change's event %d", describe(after), after.Watermark, id)
	}
}
