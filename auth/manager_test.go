package auth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/auth"
	"tidings/data"
	"tidings/data/datatest"
)

func TestMain(m *testing.M) { datatest.Main(m) }

// base is the injected clock's start: far from the wall clock, so that anything that reads the
// database's clock instead of the injected one shows.
var base = time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)

// cheapPasswords keeps argon2id fast in tests.
var cheapPasswords = &auth.PasswordParams{Memory: 64, Iterations: 1, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// clock is the injected clock; tests move it forward with advance.
type clock struct {
	mu  sync.Mutex
	now time.Time // guarded by mu
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// env is a Manager over a fresh database with an injected clock.
type env struct {
	t     *testing.T
	ctx   context.Context
	m     *auth.Manager
	pool  *pgxpool.Pool
	clock *clock
}

// newEnv starts a Manager; cfg.Now and cfg.Password are set here. The clock starts at start.
func newEnv(t *testing.T, cfg auth.Config, start time.Time) *env {
	t.Helper()
	pool := datatest.NewPool(t)
	c := &clock{now: start}
	cfg.Now = c.Now
	cfg.Password = cheapPasswords
	return &env{t: t, ctx: t.Context(), m: auth.NewManager(pool, cfg), pool: pool, clock: c}
}

// register makes a regular user and returns its first session and token.
func (e *env) register(name string) (*auth.ServerSession, auth.Token) {
	e.t.Helper()
	// Each from an address of its own: a test registers more users than one address may.
	in, err := e.m.Register(e.ctx, auth.Credentials{Name: name, Password: "password-" + name, Addr: "register-" + name})
	if err != nil {
		e.t.Fatalf("register %q: got error %v, want nil", name, err)
	}
	return in.Session, in.Token
}

// createUser makes a user of a type without a session.
func (e *env) createUser(name string, typ data.UserType) data.User {
	e.t.Helper()
	u, err := e.m.CreateUser(e.ctx, name, "password-"+name, typ)
	if err != nil {
		e.t.Fatalf("create user %q: got error %v, want nil", name, err)
	}
	return u
}

func (e *env) resolve(tok auth.Token) auth.Resolution {
	e.t.Helper()
	res, err := e.m.Resolve(e.ctx, tok)
	if err != nil {
		e.t.Fatalf("resolve: got error %v, want nil", err)
	}
	return res
}

// rotate advances the clock by d and resolves tok, which must rotate: it returns the successor
// and its token.
func (e *env) rotate(tok auth.Token, d time.Duration) (*auth.ServerSession, auth.Token) {
	e.t.Helper()
	e.clock.advance(d)
	r := e.resolve(tok)
	if r.Session == nil || r.NewToken == "" {
		e.t.Fatalf("rotation: got %s, want a successor", describe(r))
	}
	return r.Session, r.NewToken
}

// row reads a stored session.
func (e *env) row(id int64) data.SessionRow {
	e.t.Helper()
	r, err := data.SessionByID(e.ctx, e.pool, id)
	if err != nil {
		e.t.Fatalf("session %d: got error %v, want nil", id, err)
	}
	return r
}

func (e *env) watermark() int64 {
	e.t.Helper()
	w, err := data.NewEvents(e.pool).Watermark(e.ctx)
	if err != nil {
		e.t.Fatalf("watermark: %v", err)
	}
	return w
}

// eventsAfter reads the rows of the events table after an id.
func (e *env) eventsAfter(after int64) []data.Event {
	e.t.Helper()
	evs, err := data.NewEvents(e.pool).After(e.ctx, after, 10000)
	if err != nil {
		e.t.Fatalf("read events: %v", err)
	}
	return evs
}

// ev is an event as the tests compare it: its type, its data compacted, its audience.
type ev struct {
	Type     string
	Data     string
	Audience data.Audience
}

func (e *env) evsAfter(after int64) []ev {
	e.t.Helper()
	var out []ev
	for _, x := range e.eventsAfter(after) {
		var b bytes.Buffer
		if err := json.Compact(&b, x.Data); err != nil {
			e.t.Fatalf("event %d data %q: %v", x.ID, x.Data, err)
		}
		out = append(out, ev{x.Type, b.String(), x.Audience})
	}
	return out
}

// closeEv is the control event that closes streams, as the events table holds it.
func closeEv(c data.CloseStreams) ev {
	b, _ := json.Marshal(c)
	return ev{data.ControlCloseStreams, canon(string(b)), data.Audience{}}
}

// canon compacts JSON as jsonb stores it (sorted keys): decode and re-encode through a map.
func canon(s string) string {
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		panic(err)
	}
	b, _ := json.Marshal(v)
	return string(b)
}

var signedIn = data.Audience{Kind: data.AudienceSignedIn}

func userUpdateEv(u data.User) ev {
	b, _ := json.Marshal(auth.NewApiUser(u))
	return ev{"user-update", canon(string(b)), signedIn}
}

// canonEvs puts the data of evs in the same form as the expectations.
func canonEvs(evs []ev) []ev {
	out := make([]ev, len(evs))
	for i, x := range evs {
		x.Data = canon(x.Data)
		out[i] = x
	}
	return out
}

func (e *env) wantEvents(what string, after int64, want ...ev) {
	e.t.Helper()
	got := canonEvs(e.evsAfter(after))
	if !slices.Equal(got, want) {
		e.t.Errorf("%s: events got %+v, want %+v", what, got, want)
	}
}

// describe shows a resolution in messages.
func describe(r auth.Resolution) string {
	s := "anonymous"
	if r.Session != nil {
		s = fmt.Sprintf("session %d of %q", r.Session.ID, r.Session.Account.Name)
	}
	return fmt.Sprintf("{%s newToken:%t clear:%t notice:%q rotated:%t}", s, r.NewToken != "", r.ClearCookie, r.Notice, r.Rotated)
}

// wantAnonymous checks a resolution to anonymous, with ClearCookie and a notice.
func wantAnonymous(t *testing.T, what string, r auth.Resolution, notice string) {
	t.Helper()
	if r.Session != nil || r.NewToken != "" || !r.ClearCookie || r.Notice != notice || r.Rotated {
		t.Errorf("%s: got %s, want anonymous, ClearCookie, notice %q", what, describe(r), notice)
	}
}

// wantSame checks a resolution to the session itself, without a new cookie.
func wantSame(t *testing.T, what string, r auth.Resolution, id int64, rotated bool) {
	t.Helper()
	if r.Session == nil || r.Session.ID != id || r.NewToken != "" || r.ClearCookie || r.Notice != "" || r.Rotated != rotated {
		t.Errorf("%s: got %s, want session %d, no new token, rotated %t", what, describe(r), id, rotated)
	}
}

func TestResolveUnknownAndEmptyToken(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	e.register("alice")
	for _, tok := range []auth.Token{auth.NewToken(), "not-a-token", auth.Token(strings.Repeat("x", 5000))} {
		wantAnonymous(t, "unknown token", e.resolve(tok), "")
	}
	if r := e.resolve(""); r != (auth.Resolution{}) {
		t.Errorf("no cookie: got %s, want the zero Resolution", describe(r))
	}
}

func TestResolveFreshSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{Rotate: time.Hour, Expire: 10 * time.Hour}, base)
	s, tok := e.register("alice")
	if !s.RotatesAt.Equal(base.Add(time.Hour)) || !s.ExpiresAt.Equal(base.Add(10*time.Hour)) {
		t.Errorf("new session: got rotatesAt %v, expiresAt %v; want %v, %v", s.RotatesAt, s.ExpiresAt, base.Add(time.Hour), base.Add(10*time.Hour))
	}
	if s.Account.Name != "alice" || s.Account.Type != data.UserRegular || s.UserID != s.Account.ID {
		t.Errorf("new session account: got %+v, want regular alice", s.Account)
	}
	if p := e.row(s.ID).PresentedAt; p != nil {
		t.Fatalf("presented_at before any request: got %v, want NULL", p)
	}
	e.clock.advance(time.Minute)
	w := e.watermark()
	r := e.resolve(tok)
	wantSame(t, "fresh", r, s.ID, false)
	if r.Session != nil && r.Session.Account.Name != "alice" {
		t.Errorf("fresh: account got %q, want alice", r.Session.Account.Name)
	}
	presented := base.Add(time.Minute)
	if p := e.row(s.ID).PresentedAt; p == nil || !p.Equal(presented) {
		t.Errorf("presented_at: got %v, want %v", p, presented)
	}
	// Presented again: the first time stays.
	e.clock.advance(time.Minute)
	wantSame(t, "fresh again", e.resolve(tok), s.ID, false)
	if p := e.row(s.ID).PresentedAt; p == nil || !p.Equal(presented) {
		t.Errorf("presented_at after a second request: got %v, want %v", p, presented)
	}
	e.wantEvents("fresh session", w)
}

func TestResolveExpiry(t *testing.T) {
	t.Parallel()
	const µs = time.Microsecond
	cases := []struct {
		name           string
		rotate, expire time.Duration
		at             time.Duration // after the session's creation
		want           string        // "same", "rotated", "expired"
	}{
		{"before expiry", 2 * time.Hour, time.Hour, time.Hour - µs, "same"},
		{"at expiry", 2 * time.Hour, time.Hour, time.Hour, "expired"},
		{"long after expiry", 2 * time.Hour, time.Hour, 30 * 24 * time.Hour, "expired"},
		// A lifetime shorter than the rotation period: the session expires before it rotates.
		{"lifetime shorter than rotation, at rotation", 2 * time.Hour, time.Hour, 2 * time.Hour, "expired"},
		{"lifetime equal to rotation", time.Hour, time.Hour, time.Hour, "expired"},
		// Expiry wins over a rotation that came due while the user was away.
		{"rotation due and expired", time.Hour, 2 * time.Hour, 2 * time.Hour, "expired"},
		{"rotation due, not expired", time.Hour, 2 * time.Hour, 2*time.Hour - µs, "rotated"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, auth.Config{Rotate: c.rotate, Expire: c.expire}, base)
			s, tok := e.register("alice")
			e.clock.advance(c.at)
			w := e.watermark()
			r := e.resolve(tok)
			switch c.want {
			case "same":
				wantSame(t, c.name, r, s.ID, false)
				e.wantEvents(c.name, w)
			case "expired":
				wantAnonymous(t, c.name, r, "")
				if row := e.row(s.ID); row.SuccessorID != nil || row.RevokedAt != nil {
					t.Errorf("%s: stored row got successor %v, revoked %v; want neither", c.name, row.SuccessorID, row.RevokedAt)
				}
				e.wantEvents(c.name, w)
				// Still expired later, and never rotated.
				e.clock.advance(time.Hour)
				wantAnonymous(t, c.name+", later", e.resolve(tok), "")
			case "rotated":
				if r.Session == nil || r.NewToken == "" || r.Session.ID == s.ID {
					t.Errorf("%s: got %s, want a successor and a new token", c.name, describe(r))
				}
			}
		})
	}
}

func TestResolveRotation(t *testing.T) {
	t.Parallel()
	const rotate, expire, grace = time.Hour, 10 * time.Hour, 30 * time.Second
	e := newEnv(t, auth.Config{Rotate: rotate, Expire: expire, Grace: grace}, base)
	s0, tok0 := e.register("alice")
	wantSame(t, "fresh", e.resolve(tok0), s0.ID, false)

	e.clock.advance(rotate - time.Microsecond)
	wantSame(t, "just before rotatesAt", e.resolve(tok0), s0.ID, false)

	e.clock.advance(time.Microsecond)
	rotatedAt := e.clock.Now()
	w := e.watermark()
	r := e.resolve(tok0)
	if r.Session == nil || r.NewToken == "" || r.ClearCookie || r.Notice != "" || r.Rotated {
		t.Fatalf("at rotatesAt: got %s, want a successor with a new token", describe(r))
	}
	s1, tok1 := r.Session, r.NewToken
	if tok1 == tok0 {
		t.Errorf("new token: got the old token, want a fresh one")
	}
	if s1.ID == s0.ID {
		t.Errorf("successor id: got %d, the old session's id; want a new id", s1.ID)
	}
	if s1.Account.ID != s0.Account.ID || s1.Account.Name != "alice" {
		t.Errorf("successor account: got %+v, want %+v", s1.Account, s0.Account)
	}
	if want := rotatedAt.Add(rotate); !s1.RotatesAt.Equal(want) || !s1.RotatesAt.After(s0.RotatesAt) {
		t.Errorf("successor rotatesAt: got %v, want %v (after %v)", s1.RotatesAt, want, s0.RotatesAt)
	}
	if want := rotatedAt.Add(expire); !s1.ExpiresAt.Equal(want) || !s1.ExpiresAt.After(s0.ExpiresAt) {
		t.Errorf("successor expiresAt: got %v, want %v (after %v)", s1.ExpiresAt, want, s0.ExpiresAt)
	}
	if s1.PredecessorID == nil || *s1.PredecessorID != s0.ID {
		t.Errorf("successor predecessor: got %v, want %d", s1.PredecessorID, s0.ID)
	}
	old := e.row(s0.ID)
	if old.SuccessorID == nil || *old.SuccessorID != s1.ID || old.RotatedAt == nil || !old.RotatedAt.Equal(rotatedAt) || old.RevokedAt != nil {
		t.Errorf("old row: got successor %v, rotatedAt %v, revoked %v; want %d, %v, not revoked", old.SuccessorID, old.RotatedAt, old.RevokedAt, s1.ID, rotatedAt)
	}
	e.wantEvents("rotation", w, closeEv(data.CloseStreams{SessionIDs: []int64{s0.ID}, Code: 4002, Reason: "session-rotated"}))

	// Within grace, the old cookie is the same account, without rotating again.
	w = e.watermark()
	e.clock.advance(grace - time.Microsecond)
	r = e.resolve(tok0)
	wantSame(t, "old cookie within grace", r, s0.ID, true)
	if r.Session != nil && r.Session.Account.ID != s0.Account.ID {
		t.Errorf("old cookie within grace: account got %d, want %d", r.Session.Account.ID, s0.Account.ID)
	}
	if row := e.row(s0.ID); row.SuccessorID == nil || *row.SuccessorID != s1.ID {
		t.Errorf("old row after a request within grace: successor got %v, want %d", row.SuccessorID, s1.ID)
	}
	e.wantEvents("old cookie within grace", w)

	// The successor resolves to itself and rotates in its turn.
	wantSame(t, "successor", e.resolve(tok1), s1.ID, false)
	e.clock.advance(rotate)
	if r := e.resolve(tok1); r.NewToken == "" || r.Session == nil || r.Session.ID == s1.ID {
		t.Errorf("successor at its rotatesAt: got %s, want a new successor", describe(r))
	}
}

func TestResolveTheft(t *testing.T) {
	t.Parallel()
	const rotate, grace = time.Hour, 30 * time.Second
	e := newEnv(t, auth.Config{Rotate: rotate, Grace: grace}, base)
	s0, tok0 := e.register("alice")
	_, otherTok := e.register("bob")

	// tok0 -> tok1 -> tok2, each presented by the real user.
	s1, tok1 := e.rotate(tok0, rotate)
	wantSame(t, "first successor", e.resolve(tok1), s1.ID, false)
	s2, tok2 := e.rotate(tok1, rotate)
	wantSame(t, "second successor", e.resolve(tok2), s2.ID, false)

	// The thief's copy of tok0 comes back after its grace.
	e.clock.advance(grace)
	w := e.watermark()
	wantAnonymous(t, "old cookie after grace, successor presented", e.resolve(tok0), auth.NoticeSessionTaken)
	for _, id := range []int64{s0.ID, s1.ID, s2.ID} {
		if row := e.row(id); row.RevokedAt == nil || row.RevokedReason != data.RevokedTaken {
			t.Errorf("session %d after theft: got revoked %v reason %q, want revoked 'taken'", id, row.RevokedAt, row.RevokedReason)
		}
	}
	e.wantEvents("theft", w, closeEv(data.CloseStreams{SessionIDs: []int64{s1.ID, s2.ID}, Code: 4003, Reason: "session-taken"}))

	// Whoever holds a successor is told too; the old cookie again says the same, once recorded.
	w = e.watermark()
	wantAnonymous(t, "latest successor after theft", e.resolve(tok2), auth.NoticeSessionTaken)
	wantAnonymous(t, "first successor after theft", e.resolve(tok1), auth.NoticeSessionTaken)
	wantAnonymous(t, "old cookie again", e.resolve(tok0), auth.NoticeSessionTaken)
	e.wantEvents("after theft", w)
	if _, err := data.SessionByID(e.ctx, e.pool, s0.ID); err != nil {
		t.Errorf("old session after theft: got %v, want it kept on record", err)
	}

	// Another user's session is untouched.
	if r := e.resolve(otherTok); r.Session == nil || r.Session.Account.Name != "bob" || r.Notice != "" {
		t.Errorf("another user's session: got %s, want bob's session", describe(r))
	}
}

func TestResolveTheftOfOnlyPresentedSuccessor(t *testing.T) {
	t.Parallel()
	const rotate, grace = time.Hour, 30 * time.Second
	e := newEnv(t, auth.Config{Rotate: rotate, Grace: grace}, base)
	s0, tok0 := e.register("alice")
	s1, tok1 := e.rotate(tok0, rotate)
	wantSame(t, "successor", e.resolve(tok1), s1.ID, false)
	e.clock.advance(grace)
	w := e.watermark()
	wantAnonymous(t, "old cookie after grace", e.resolve(tok0), auth.NoticeSessionTaken)
	e.wantEvents("theft", w, closeEv(data.CloseStreams{SessionIDs: []int64{s1.ID}, Code: 4003, Reason: "session-taken"}))
	wantAnonymous(t, "successor after theft", e.resolve(tok1), auth.NoticeSessionTaken)
	if row := e.row(s0.ID); row.RevokedReason != data.RevokedTaken {
		t.Errorf("old session: got revoked reason %q, want %q", row.RevokedReason, data.RevokedTaken)
	}
}

func TestResolveLostResponse(t *testing.T) {
	t.Parallel()
	const rotate, expire, grace = time.Hour, 10 * time.Hour, 30 * time.Second
	e := newEnv(t, auth.Config{Rotate: rotate, Expire: expire, Grace: grace}, base)
	s0, tok0 := e.register("alice")
	s1, tok1 := e.rotate(tok0, rotate) // the response carrying tok1 is lost

	e.clock.advance(grace)
	replacedAt := e.clock.Now()
	w := e.watermark()
	r := e.resolve(tok0)
	if r.Session == nil || r.NewToken == "" || r.ClearCookie || r.Notice != "" || r.Rotated {
		t.Fatalf("old cookie after grace, successor never presented: got %s, want a new successor", describe(r))
	}
	s2, tok2 := r.Session, r.NewToken
	if s2.ID == s1.ID || s2.ID == s0.ID || tok2 == tok1 || tok2 == tok0 {
		t.Errorf("replacement: got session %d, want one other than %d and %d", s2.ID, s0.ID, s1.ID)
	}
	if s2.Account.Name != "alice" {
		t.Errorf("replacement account: got %q, want alice", s2.Account.Name)
	}
	if want := replacedAt.Add(expire); !s2.ExpiresAt.Equal(want) {
		t.Errorf("replacement expiresAt: got %v, want %v", s2.ExpiresAt, want)
	}
	if row := e.row(s1.ID); row.RevokedAt == nil || row.RevokedReason != data.RevokedReplaced {
		t.Errorf("lost successor: got revoked %v reason %q, want revoked 'replaced'", row.RevokedAt, row.RevokedReason)
	}
	if row := e.row(s0.ID); row.SuccessorID == nil || *row.SuccessorID != s2.ID || row.RevokedAt != nil {
		t.Errorf("old session: got successor %v, revoked %v; want successor %d, not revoked", row.SuccessorID, row.RevokedAt, s2.ID)
	}
	for _, x := range e.evsAfter(w) {
		if x.Type == data.ControlCloseStreams && strings.Contains(x.Data, "session-taken") {
			t.Errorf("replacement: got control event %s, want no session-taken", x.Data)
		}
	}

	// The user stays signed in with the replacement; the lost cookie is dead.
	wantSame(t, "replacement", e.resolve(tok2), s2.ID, false)
	wantAnonymous(t, "lost successor", e.resolve(tok1), "")
}

func TestLogout(t *testing.T) {
	t.Parallel()
	const rotate, grace = time.Hour, 30 * time.Second
	e := newEnv(t, auth.Config{Rotate: rotate, Grace: grace}, base)
	s0, tok0 := e.register("alice")
	_, bobTok := e.register("bob")
	s1, tok1 := e.rotate(tok0, rotate)

	w := e.watermark()
	if err := e.m.Logout(e.ctx, tok0); err != nil {
		t.Fatalf("logout: got %v, want nil", err)
	}
	for _, id := range []int64{s0.ID, s1.ID} {
		if row := e.row(id); row.RevokedAt == nil || row.RevokedReason != data.RevokedLogout {
			t.Errorf("session %d after logout: got revoked %v reason %q, want 'logout'", id, row.RevokedAt, row.RevokedReason)
		}
	}
	e.wantEvents("logout", w, closeEv(data.CloseStreams{SessionIDs: []int64{s0.ID, s1.ID}, Code: 4003, Reason: "logout"}))
	wantAnonymous(t, "logged-out cookie", e.resolve(tok0), "")
	wantAnonymous(t, "logged-out successor", e.resolve(tok1), "")
	e.clock.advance(grace)
	wantAnonymous(t, "logged-out cookie after grace", e.resolve(tok0), "")

	// Again, with no cookie, or with an unknown one: nothing happens.
	w = e.watermark()
	for _, tok := range []auth.Token{tok0, "", auth.NewToken()} {
		if err := e.m.Logout(e.ctx, tok); err != nil {
			t.Errorf("logout again: got %v, want nil", err)
		}
	}
	e.wantEvents("logout again", w)
	if r := e.resolve(bobTok); r.Session == nil || r.Session.Account.Name != "bob" {
		t.Errorf("another user's session after logout: got %s, want bob's", describe(r))
	}
}

// A logout with the successor's cookie must not leave the rotated session able to sign the
// user back in (as a lost response) once its grace is over.
func TestLogoutOfSuccessorEndsRotatedSession(t *testing.T) {
	t.Parallel()
	const rotate, grace = time.Hour, 30 * time.Second
	e := newEnv(t, auth.Config{Rotate: rotate, Grace: grace}, base)
	_, tok0 := e.register("alice")
	e.clock.advance(rotate)
	tok1 := e.resolve(tok0).NewToken
	if err := e.m.Logout(e.ctx, tok1); err != nil {
		t.Fatalf("logout: got %v, want nil", err)
	}
	wantAnonymous(t, "successor after logout", e.resolve(tok1), "")
	e.clock.advance(grace)
	if r := e.resolve(tok0); r.Session != nil || r.NewToken != "" {
		t.Errorf("rotated cookie after logging out its successor: got %s, want anonymous", describe(r))
	}
}

func TestRegister(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	w := e.watermark()
	s, tok := e.register("Alice")
	if s.Account.Name != "Alice" || s.Account.Type != data.UserRegular || tok == "" {
		t.Fatalf("register: got account %+v, token set %t; want regular Alice and a token", s.Account, tok != "")
	}
	e.wantEvents("register", w, userUpdateEv(s.Account))
	wantSame(t, "registered session", e.resolve(tok), s.ID, false)

	cases := []struct {
		name, password string
		want           error
	}{
		{"alice", "password1", auth.ErrNameTaken},
		{"ALICE", "password1", auth.ErrNameTaken},
		{"", "password1", auth.ErrInvalid},
		{strings.Repeat("a", 65), "password1", auth.ErrInvalid},
		{"a b", "password1", auth.ErrInvalid},
		{"é", "password1", auth.ErrInvalid},
		{"a/b", "password1", auth.ErrInvalid},
		{"a\x00", "password1", auth.ErrInvalid},
		{"bob", "1234567", auth.ErrInvalid},
		{"bob", strings.Repeat("p", 1025), auth.ErrInvalid},
		{"bob", "", auth.ErrInvalid},
		{strings.Repeat("b", 64), "password1", nil},
		{"x", "12345678", nil},
		{"a-b_c.D9", strings.Repeat("p", 1024), nil},
		{"-._", "ééééé", nil}, // 10 bytes
	}
	for _, c := range cases {
		w := e.watermark()
		_, err := e.m.Register(e.ctx, auth.Credentials{Name: c.name, Password: c.password})
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("register %q with a %d-byte password: got %v, want %v", c.name, len(c.password), err, c.want)
		}
		if c.want != nil {
			e.wantEvents("refused registration", w)
		}
	}
	users, err := e.m.Users(e.ctx)
	if err != nil || len(users) != 5 {
		t.Errorf("users: got %d, %v; want 5", len(users), err)
	}
}

func TestLogin(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	alice, _ := e.register("Alice")
	e.register("bob")

	for _, name := range []string{"Alice", "alice", "ALICE"} {
		s, tok, err := e.login(name, "password-Alice", "192.0.2.1")
		if err != nil || s == nil || tok == "" {
			t.Fatalf("login as %q: got %v, want a session", name, err)
		}
		if s.Account.ID != alice.Account.ID {
			t.Errorf("login as %q: got account %d, want %d", name, s.Account.ID, alice.Account.ID)
		}
		wantSame(t, "logged-in session", e.resolve(tok), s.ID, false)
	}

	long := make([]byte, 5000)
	for i := range long {
		long[i] = "abcdefghijklmnopqrstuvwxyz0123456789"[rand.IntN(36)]
	}
	var msgs []string
	for _, c := range []struct{ what, name, password string }{
		{"wrong password", "Alice", "password-bob"},
		{"empty password", "Alice", ""},
		{"unknown name", "carol", "password-Alice"},
		{"invalid name", "a b", "password-Alice"},
		{"overlong name", string(long), "password-Alice"},
	} {
		s, tok, err := e.login(c.name, c.password, "192.0.2.2")
		if !errors.Is(err, auth.ErrBadLogin) || s != nil || tok != "" {
			t.Errorf("%s: got %v, %v, token set %t; want ErrBadLogin", c.what, s, err, tok != "")
		}
		if err != nil {
			msgs = append(msgs, err.Error())
		}
	}
	// One answer whether or not the user exists.
	for _, m := range msgs {
		if m != msgs[0] {
			t.Errorf("login error: got %q, want the same as %q", m, msgs[0])
		}
	}
}

// login signs in without a device cookie.
func (e *env) login(name, password, addr string) (*auth.ServerSession, auth.Token, error) {
	in, err := e.m.Login(e.ctx, auth.Credentials{Name: name, Password: password, Addr: addr})
	return in.Session, in.Token, err
}

// failLogins tries n wrong passwords for a name and wants ErrBadLogin each time.
func (e *env) failLogins(name, addr string, n int) {
	e.t.Helper()
	for i := range n {
		if _, _, err := e.login(name, "wrong-password", addr); !errors.Is(err, auth.ErrBadLogin) {
			e.t.Fatalf("failure %d of %q from %s: got %v, want ErrBadLogin", i+1, name, addr, err)
		}
	}
}

func (e *env) wantLogin(what, name, password, addr string, want error) {
	e.t.Helper()
	s, _, err := e.login(name, password, addr)
	if !errors.Is(err, want) || (want == nil) != (err == nil) || (err == nil) != (s != nil) {
		e.t.Errorf("%s: login %q got %v, want %v", what, name, err, want)
	}
}

func TestLoginRateLimitPerName(t *testing.T) {
	t.Parallel()
	// The failures are stamped by the database's clock (see TestLoginFailuresFollowTheClock),
	// so this clock starts at the wall clock.
	e := newEnv(t, auth.Config{}, time.Now().Truncate(time.Second))
	e.register("bob")
	e.register("alice")

	// Each failure from its own address, so that only the per-name limit counts.
	for i := range 10 {
		e.failLogins("bob", fmt.Sprintf("198.51.100.%d", i), 1)
	}
	e.wantLogin("11th attempt, right password", "bob", "password-bob", "203.0.113.1", auth.ErrRateLimited)
	e.wantLogin("11th attempt, wrong password", "bob", "wrong-password", "203.0.113.1", auth.ErrRateLimited)
	e.wantLogin("name in another case", "BOB", "password-bob", "203.0.113.1", auth.ErrRateLimited)
	e.wantLogin("another name", "alice", "password-alice", "203.0.113.1", nil)

	e.clock.advance(15*time.Minute - time.Second)
	e.wantLogin("just within 15 minutes", "bob", "password-bob", "203.0.113.2", auth.ErrRateLimited)

	// Older than 15 minutes, the failures stop counting.
	e.clock.advance(time.Minute + time.Second)
	e.wantLogin("after 15 minutes", "bob", "password-bob", "203.0.113.3", nil)
	e.wantLogin("after 15 minutes, wrong password", "bob", "wrong-password", "203.0.113.3", auth.ErrBadLogin)
}

// The login window is measured with the Manager's clock, as everything else is: failures older
// than 15 minutes by that clock stop counting, and recent ones count.
func TestLoginFailuresFollowTheClock(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	e.register("bob")
	for i := range 10 {
		e.failLogins("bob", fmt.Sprintf("198.51.100.%d", i), 1)
	}
	e.wantLogin("after 10 failures", "bob", "password-bob", "203.0.113.1", auth.ErrRateLimited)
	e.clock.advance(15*time.Minute + time.Second)
	e.wantLogin("after 15 minutes", "bob", "password-bob", "203.0.113.1", nil)
}

func TestLoginRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	e.register("bob")
	const addr = "192.0.2.7"
	// 100 failures over 25 names (4 each, under the per-name limit).
	for i := range 25 {
		e.failLogins(fmt.Sprintf("user%d", i), addr, 4)
	}
	e.wantLogin("101st attempt from the address", "bob", "password-bob", addr, auth.ErrRateLimited)
	e.wantLogin("101st attempt, new name", "carol", "wrong-password", addr, auth.ErrRateLimited)
	e.wantLogin("another address", "bob", "password-bob", "192.0.2.8", nil)

	// The allowance comes back over 15 minutes.
	e.clock.advance(15 * time.Minute)
	e.wantLogin("15 minutes later", "bob", "password-bob", addr, nil)
	e.failLogins("dave", addr, 4)
}

func TestUpdateUser(t *testing.T) {
	t.Parallel()
	str := func(s string) *string { return &s }
	typ := func(t data.UserType) *data.UserType { return &t }
	cases := []struct {
		name   string
		by     string // regular "alice", crew "carl", admin "ada"
		target string // a name, or "nobody"
		patch  auth.UserPatch
		want   error
		after  string        // the target's name afterwards, when it succeeds
		typ    data.UserType // the target's type afterwards, when it succeeds
		close  bool          // a control event access-changed
	}{
		{"regular renames self", "alice", "alice", auth.UserPatch{Name: str("alicia")}, nil, "alicia", data.UserRegular, false},
		{"regular renames self in another case", "alice", "alice", auth.UserPatch{Name: str("ALICE")}, nil, "ALICE", data.UserRegular, false},
		{"regular empty patch on self", "alice", "alice", auth.UserPatch{}, nil, "alice", data.UserRegular, false},
		{"regular renames self to the same name", "alice", "alice", auth.UserPatch{Name: str("alice")}, nil, "alice", data.UserRegular, false},
		{"admin sets the same name and type", "ada", "carl", auth.UserPatch{Name: str("carl"), Type: typ(data.UserCrew)}, nil, "carl", data.UserCrew, false},
		{"admin empty patch on nobody", "ada", "nobody", auth.UserPatch{}, auth.ErrNotFound, "", "", false},
		{"crew renames self", "carl", "carl", auth.UserPatch{Name: str("carlos")}, nil, "carlos", data.UserCrew, false},
		{"admin renames other", "ada", "bob", auth.UserPatch{Name: str("robert")}, nil, "robert", data.UserRegular, false},
		{"admin changes type", "ada", "bob", auth.UserPatch{Type: typ(data.UserCrew)}, nil, "bob", data.UserCrew, true},
		{"admin renames and changes type", "ada", "alice", auth.UserPatch{Name: str("al"), Type: typ(data.UserAdmin)}, nil, "al", data.UserAdmin, true},
		{"admin demotes crew", "ada", "carl", auth.UserPatch{Type: typ(data.UserRegular)}, nil, "carl", data.UserRegular, true},
		{"admin sets the same type", "ada", "bob", auth.UserPatch{Type: typ(data.UserRegular)}, nil, "bob", data.UserRegular, false},
		{"admin changes own type", "ada", "ada", auth.UserPatch{Type: typ(data.UserCrew)}, nil, "ada", data.UserCrew, true},
		{"regular renames other", "alice", "bob", auth.UserPatch{Name: str("robert")}, auth.ErrForbidden, "", "", false},
		{"regular changes own type", "alice", "alice", auth.UserPatch{Type: typ(data.UserAdmin)}, auth.ErrForbidden, "", "", false},
		{"regular sets own type unchanged", "alice", "alice", auth.UserPatch{Type: typ(data.UserRegular)}, auth.ErrForbidden, "", "", false},
		{"regular changes other's type", "alice", "bob", auth.UserPatch{Type: typ(data.UserCrew)}, auth.ErrForbidden, "", "", false},
		{"crew renames other", "carl", "bob", auth.UserPatch{Name: str("robert")}, auth.ErrForbidden, "", "", false},
		{"crew changes other's type", "carl", "bob", auth.UserPatch{Type: typ(data.UserCrew)}, auth.ErrForbidden, "", "", false},
		{"crew changes own type", "carl", "carl", auth.UserPatch{Type: typ(data.UserAdmin)}, auth.ErrForbidden, "", "", false},
		{"regular on nobody", "alice", "nobody", auth.UserPatch{Name: str("x")}, auth.ErrForbidden, "", "", false},
		{"admin on nobody", "ada", "nobody", auth.UserPatch{Name: str("x")}, auth.ErrNotFound, "", "", false},
		{"rename to a taken name", "alice", "alice", auth.UserPatch{Name: str("BOB")}, auth.ErrNameTaken, "", "", false},
		{"admin renames to a taken name", "ada", "bob", auth.UserPatch{Name: str("Alice")}, auth.ErrNameTaken, "", "", false},
		{"invalid name", "alice", "alice", auth.UserPatch{Name: str("a b")}, auth.ErrInvalid, "", "", false},
		{"empty name", "alice", "alice", auth.UserPatch{Name: str("")}, auth.ErrInvalid, "", "", false},
		{"invalid type", "ada", "bob", auth.UserPatch{Type: typ("boss")}, auth.ErrInvalid, "", "", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, auth.Config{}, base)
			users := map[string]data.User{
				"alice": e.createUser("alice", data.UserRegular),
				"bob":   e.createUser("bob", data.UserRegular),
				"carl":  e.createUser("carl", data.UserCrew),
				"ada":   e.createUser("ada", data.UserAdmin),
			}
			before := users[c.target]
			id := before.ID
			if c.target == "nobody" {
				id = 1000
			}
			w := e.watermark()
			got, err := e.m.UpdateUser(e.ctx, users[c.by], id, c.patch)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want != nil {
				e.wantEvents("refused", w)
				if c.target != "nobody" {
					if u, err := e.m.User(e.ctx, id); err != nil || u.Name != before.Name || u.Type != before.Type {
						t.Errorf("user after a refusal: got %+v, %v; want %+v", u, err, before)
					}
				}
				return
			}
			if got.ID != id || got.Name != c.after || got.Type != c.typ {
				t.Errorf("updated user: got %+v, want id %d, %q, %q", got, id, c.after, c.typ)
			}
			if u, err := e.m.User(e.ctx, id); err != nil || u.Name != c.after || u.Type != c.typ {
				t.Errorf("stored user: got %+v, %v; want %q, %q", u, err, c.after, c.typ)
			}
			var want []ev // a patch that changes nothing emits nothing
			if c.after != before.Name || c.typ != before.Type {
				want = append(want, userUpdateEv(data.User{ID: id, Name: c.after, Type: c.typ}))
			}
			if c.close {
				want = append(want, closeEv(data.CloseStreams{UserIDs: []int64{id}, Code: 4003, Reason: "access-changed"}))
			}
			e.wantEvents("update", w, want...)
		})
	}
}

func TestDeleteUser(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		by, target string
		want       error
	}{
		{"admin deletes other", "ada", "bob", nil},
		{"admin deletes self", "ada", "ada", nil},
		{"admin deletes nobody", "ada", "nobody", auth.ErrNotFound},
		{"regular deletes other", "alice", "bob", auth.ErrForbidden},
		{"regular deletes self", "alice", "alice", auth.ErrForbidden},
		{"crew deletes other", "carl", "bob", auth.ErrForbidden},
		{"regular deletes nobody", "alice", "nobody", auth.ErrForbidden},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, auth.Config{}, base)
			users := map[string]data.User{
				"alice": e.createUser("alice", data.UserRegular),
				"carl":  e.createUser("carl", data.UserCrew),
				"ada":   e.createUser("ada", data.UserAdmin),
			}
			bob, bobTok := e.register("bob")
			users["bob"] = bob.Account
			id := users[c.target].ID
			if c.target == "nobody" {
				id = 1000
			}
			w := e.watermark()
			err := e.m.DeleteUser(e.ctx, users[c.by], id)
			if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.want != nil {
				e.wantEvents("refused", w)
				if c.target != "nobody" {
					if _, err := e.m.User(e.ctx, id); err != nil {
						t.Errorf("user after a refusal: got %v, want it still there", err)
					}
				}
				if r := e.resolve(bobTok); r.Session == nil {
					t.Errorf("bob's session after a refusal: got %s, want bob's session", describe(r))
				}
				return
			}
			if _, err := e.m.User(e.ctx, id); !errors.Is(err, auth.ErrNotFound) {
				t.Errorf("deleted user: got %v, want ErrNotFound", err)
			}
			e.wantEvents("delete", w,
				ev{"user-delete", fmt.Sprintf(`{"id":%d}`, id), signedIn},
				closeEv(data.CloseStreams{UserIDs: []int64{id}, Code: 4003, Reason: "user-deleted"}))
			if c.target == "bob" {
				wantAnonymous(t, "deleted user's session", e.resolve(bobTok), "")
			}
		})
	}
}

func TestDiscard(t *testing.T) {
	t.Parallel()
	const rotate, expire, grace = time.Hour, 2 * time.Hour, 30 * time.Second
	e := newEnv(t, auth.Config{Rotate: rotate, Expire: expire, Grace: grace}, base)
	s0, tok0 := e.register("alice")
	if want := base.Add(expire + grace); !s0.DiscardAt.Equal(want) {
		t.Errorf("discardAt: got %v, want %v", s0.DiscardAt, want)
	}
	discard := func(want int64) {
		t.Helper()
		n, err := e.m.Discard(e.ctx)
		if err != nil || n != want {
			t.Errorf("discard at %v: got %d, %v; want %d", e.clock.Now().Sub(base), n, err, want)
		}
	}
	discard(0)
	e.clock.advance(rotate)
	s1 := e.resolve(tok0).Session // rotated: discardAt base+1h+2h+30s
	if s1 == nil {
		t.Fatal("rotation: got no successor")
	}

	e.clock.advance(expire + grace - rotate) // at s0's discardAt
	discard(0)
	e.clock.advance(time.Microsecond)
	discard(1)
	if _, err := data.SessionByID(e.ctx, e.pool, s0.ID); !errors.Is(err, data.ErrNotFound) {
		t.Errorf("discarded session: got %v, want ErrNotFound", err)
	}
	wantAnonymous(t, "discarded session's cookie", e.resolve(tok0), "")
	if row := e.row(s1.ID); row.PredecessorID != nil {
		t.Errorf("successor of a discarded session: predecessor got %v, want NULL", *row.PredecessorID)
	}
	discard(0)
	e.clock.advance(rotate)
	discard(1)
	if _, err := data.SessionByID(e.ctx, e.pool, s1.ID); !errors.Is(err, data.ErrNotFound) {
		t.Errorf("discarded successor: got %v, want ErrNotFound", err)
	}
}

func TestTokensAreNeverStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{Rotate: time.Hour}, base)
	s0, tok0 := e.register("alice")
	s1, tok1, err := e.login("alice", "password-alice", "192.0.2.1")
	if err != nil {
		t.Fatalf("login: %v", err)
	}
	e.clock.advance(time.Hour)
	r := e.resolve(tok0)
	if r.Session == nil {
		t.Fatalf("rotation: got %s, want a successor", describe(r))
	}
	tokens := map[int64]auth.Token{s0.ID: tok0, s1.ID: tok1, r.Session.ID: r.NewToken}
	for id, tok := range tokens {
		if len(tok) < 43 {
			t.Errorf("token of session %d: got %d characters, want at least 43 (256 bits)", id, len(tok))
		}
	}

	rows, err := e.pool.Query(e.ctx, "SELECT id, token_hash, s::text FROM sessions s ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	type stored struct {
		id   int64
		hash []byte
		text string
	}
	var all []stored
	for rows.Next() {
		var s stored
		if err := rows.Scan(&s.id, &s.hash, &s.text); err != nil {
			t.Fatal(err)
		}
		all = append(all, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(all) != len(tokens) {
		t.Fatalf("sessions: got %d rows, want %d", len(all), len(tokens))
	}
	var events strings.Builder
	for _, x := range e.eventsAfter(0) {
		events.Write(x.Data)
	}
	for _, s := range all {
		tok := tokens[s.id]
		want := sha256.Sum256([]byte(tok))
		if len(s.hash) != 32 || !bytes.Equal(s.hash, want[:]) {
			t.Errorf("session %d: token_hash got %x, want the 32-byte SHA-256 %x", s.id, s.hash, want)
		}
		if !bytes.Equal(s.hash, tok.Hash()) {
			t.Errorf("session %d: token_hash got %x, want Token.Hash %x", s.id, s.hash, tok.Hash())
		}
		for _, other := range tokens {
			if strings.Contains(s.text, string(other)) || bytes.Contains(s.hash, []byte(other)) {
				t.Errorf("session %d: row %s holds a token", s.id, s.text)
			}
			if strings.Contains(events.String(), string(other)) {
				t.Errorf("events hold a token")
			}
		}
	}
}

func TestTokenRedacted(t *testing.T) {
	t.Parallel()
	tok := auth.NewToken()
	if tok == auth.NewToken() {
		t.Fatal("NewToken: got the same token twice, want random tokens")
	}
	for _, f := range []string{"%v", "%s", "%+v", "%q", "%x"} {
		if got, want := fmt.Sprintf(f, tok), fmt.Sprintf(f, "[redacted]"); got != want {
			t.Errorf("Sprintf(%q, token): got %q, want %q", f, got, want)
		}
	}
	if got := tok.String(); got != "[redacted]" {
		t.Errorf("String: got %q, want [redacted]", got)
	}
	if got := tok.LogValue(); got.Kind() != slog.KindString || got.String() != "[redacted]" {
		t.Errorf("LogValue: got %v, want the string [redacted]", got)
	}
	for _, newHandler := range []func(*bytes.Buffer) slog.Handler{
		func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		slog.New(newHandler(&b)).Info("x", "token", tok, slog.Any("any", tok), slog.Group("g", "t", tok))
		if strings.Contains(b.String(), string(tok)) || strings.Count(b.String(), "[redacted]") != 3 {
			t.Errorf("log line: got %q, want three [redacted] and no token", b.String())
		}
	}
}
