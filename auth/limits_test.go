package auth_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"tidings/auth"
	"tidings/data"
)

// parallel runs f(i) for i in [0, n) at once, each in its own goroutine, and returns their
// errors in order once all have returned.
func parallel(n int, f func(i int) error) []error {
	errs := make([]error, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			errs[i] = f(i)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// tally counts errors by the sentinel they wrap (nil for none); others are failures.
func tally(t *testing.T, errs []error, sentinels ...error) map[error]int {
	t.Helper()
	out := map[error]int{}
	for _, err := range errs {
		known := err == nil
		for _, s := range sentinels {
			if errors.Is(err, s) {
				out[s]++
				known = true
				break
			}
		}
		if err == nil {
			out[nil]++
		}
		if !known {
			t.Errorf("unexpected error %v", err)
		}
	}
	return out
}

// TestRegisterTakenNameHashesNothing: registrations of a taken name, in parallel and in any
// case, are all ErrNameTaken and run no argon2id at all (they used to hash first).
func TestRegisterTakenNameHashesNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	e.register("taken")
	before := e.m.HashStats()
	errs := parallel(50, func(i int) error {
		_, err := e.m.Register(e.ctx, auth.Credentials{Name: []string{"taken", "TAKEN", "Taken"}[i%3], Password: "password-x", Addr: "192.0.2.1"})
		return err
	})
	if got := tally(t, errs, auth.ErrNameTaken); got[auth.ErrNameTaken] != 50 {
		t.Errorf("50 registrations of a taken name: got %v, want 50 ErrNameTaken", got)
	}
	if after := e.m.HashStats(); after.Total != before.Total {
		t.Errorf("hashes run: got %d, want 0", after.Total-before.Total)
	}
	if _, err := e.m.CreateUser(e.ctx, "TAKEN", "password-x", data.UserAdmin); !errors.Is(err, auth.ErrNameTaken) {
		t.Errorf("create a taken name: got %v, want ErrNameTaken", err)
	}
	if after := e.m.HashStats(); after.Total != before.Total {
		t.Errorf("hashes run by user create: got %d, want 0", after.Total-before.Total)
	}
}

// hashHold holds every argon2id computation in its slot, from hold until release.
type hashHold struct {
	mu   sync.Mutex
	gate chan struct{} // guarded by mu: nil while not held
}

// limits returns l with its OnHash set to wait while held; the test's end releases.
func (h *hashHold) limits(t *testing.T, l auth.HashLimits) auth.HashLimits {
	t.Cleanup(h.release)
	l.OnHash = func() {
		h.mu.Lock()
		gate := h.gate
		h.mu.Unlock()
		if gate != nil {
			<-gate
		}
	}
	return l
}

func (h *hashHold) hold() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gate = make(chan struct{})
}

func (h *hashHold) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.gate != nil {
		close(h.gate)
		h.gate = nil
	}
}

// waitRunning waits until n hashes run.
func (e *env) waitRunning(n int64) {
	e.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for e.m.HashStats().Running != n {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %d hashes running; got %+v", n, e.m.HashStats())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHashingIsBounded: with 2 slots and a queue of 2, 10 registrations at once while every
// hash is held in its slot: 2 run, 2 wait, and the other 6 are refused at once with ErrBusy
// and a Retry-After, before any slot frees. Released, the 4 finish. At no moment did more than
// 2 run (they used to run all at once, without bound).
func TestHashingIsBounded(t *testing.T) {
	t.Parallel()
	var h hashHold
	e := newEnv(t, auth.Config{Hashing: h.limits(t, auth.HashLimits{Slots: 2, Queue: 2, Wait: time.Hour})}, base)
	h.hold()

	errs := make(chan error, 10)
	for i := range 10 {
		go func() {
			_, err := e.m.Register(e.ctx, auth.Credentials{Name: fmt.Sprint("user", i), Password: "password-x", Addr: fmt.Sprint("192.0.2.", i)})
			errs <- err
		}()
	}
	deadline := time.After(15 * time.Second)
	for range 6 {
		select {
		case err := <-errs:
			if !errors.Is(err, auth.ErrBusy) {
				t.Fatalf("while 2 hash and 2 wait: got %v, want ErrBusy", err)
			}
			if after, ok := auth.RetryAfter(err); !ok || after < time.Second {
				t.Errorf("ErrBusy's Retry-After: got %v, %t; want at least 1s", after, ok)
			}
		case <-deadline:
			t.Fatalf("timed out waiting for 6 refusals; hashing %+v", e.m.HashStats())
		}
	}
	e.waitRunning(2)
	if s := e.m.HashStats(); s.Refused != 6 {
		t.Errorf("while held: got %+v, want 6 refused", s)
	}
	h.release()
	for range 4 {
		select {
		case err := <-errs:
			if err != nil {
				t.Errorf("a registration that waited its turn: got %v, want nil", err)
			}
		case <-deadline:
			t.Fatal("timed out waiting for the registrations that waited")
		}
	}
	if s := e.m.HashStats(); s.Peak != 2 || s.Total != 4 || s.Slots != 2 {
		t.Errorf("after: got %+v, want a peak of 2 of 2 slots and 4 hashes", s)
	}
}

// TestHashingWaitIsBounded: a login that finds every slot taken waits at most Wait, then is
// refused with ErrBusy; so refused, it counts as a failure neither of the name nor of the
// address.
func TestHashingWaitIsBounded(t *testing.T) {
	t.Parallel()
	var h hashHold
	e := newEnv(t, auth.Config{Hashing: h.limits(t, auth.HashLimits{Slots: 1, Queue: 4, Wait: 50 * time.Millisecond})}, base)
	e.createUser("bob", data.UserRegular)
	h.hold()
	holder := async(func() error {
		_, err := e.m.Register(e.ctx, auth.Credentials{Name: "carol", Password: "password-carol"})
		return err
	})
	e.waitRunning(1)
	const addr = "192.0.2.9"
	login := async(func() error {
		_, _, err := e.login("bob", "password-bob", addr)
		return err
	})
	select {
	case err := <-login:
		if !errors.Is(err, auth.ErrBusy) {
			t.Fatalf("login while the only slot is held: got %v, want ErrBusy", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("a login waiting for a slot: not refused within 15 s, want ErrBusy after 50 ms")
	}
	h.release()
	if err := <-holder; err != nil {
		t.Fatalf("the registration holding the slot: %v", err)
	}
	// The refused login was given back: the name still has its 10 failures.
	e.failLogins("bob", addr, 10)
	e.wantLogin("11th", "bob", "password-bob", addr, auth.ErrRateLimited)
}

// TestRegisterRateLimitPerAddress: an address registers 20 users a minute, then is refused
// with ErrRegisterLimited and a Retry-After, before any hashing; other addresses are not
// held, a taken name is still ErrNameTaken, and the allowance comes back over the minute.
func TestRegisterRateLimitPerAddress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	const addr = "192.0.2.1"
	register := func(name, addr string) error {
		_, err := e.m.Register(e.ctx, auth.Credentials{Name: name, Password: "password-x", Addr: addr})
		return err
	}
	for i := range 20 {
		if err := register(fmt.Sprint("user", i), addr); err != nil {
			t.Fatalf("registration %d: got %v, want nil", i+1, err)
		}
	}
	before := e.m.HashStats()
	err := register("user20", addr)
	if after, ok := auth.RetryAfter(err); !errors.Is(err, auth.ErrRegisterLimited) || !ok || after < time.Second || after > 3*time.Second {
		t.Fatalf("21st registration: got %v, Retry-After %v; want ErrRegisterLimited after 1-3 s", err, after)
	}
	if s := e.m.HashStats(); s.Total != before.Total {
		t.Errorf("refused registration: ran %d hashes, want 0", s.Total-before.Total)
	}
	if err := register("USER1", addr); !errors.Is(err, auth.ErrNameTaken) {
		t.Errorf("taken name from a limited address: got %v, want ErrNameTaken", err)
	}
	if err := register("user20", "192.0.2.2"); err != nil {
		t.Errorf("another address: got %v, want nil", err)
	}
	e.clock.advance(3 * time.Second) // a minute's 20th
	if err := register("user21", addr); err != nil {
		t.Errorf("3 s later: got %v, want nil", err)
	}
	if err := register("user22", addr); !errors.Is(err, auth.ErrRegisterLimited) {
		t.Errorf("and again: got %v, want ErrRegisterLimited", err)
	}
}

// TestParallelGuessesForOneName: 60 wrong passwords for one name at once, each from its own
// address: at most 10 are evaluated (ErrBadLogin, one hash each), the rest are ErrRateLimited
// with a Retry-After and hash nothing; then the right password is refused too. Before, every
// guess was checked against the count and only then recorded, so all 60 were evaluated.
func TestParallelGuessesForOneName(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	e.register("bob")
	before := e.m.HashStats()
	errs := parallel(60, func(i int) error {
		_, _, err := e.login("bob", "wrong-password", fmt.Sprint("198.51.100.", i))
		return err
	})
	got := tally(t, errs, auth.ErrBadLogin, auth.ErrRateLimited)
	if got[auth.ErrBadLogin] != 10 || got[auth.ErrRateLimited] != 50 {
		t.Errorf("60 parallel guesses: got %d ErrBadLogin and %d ErrRateLimited, want 10 and 50", got[auth.ErrBadLogin], got[auth.ErrRateLimited])
	}
	if n := e.m.HashStats().Total - before.Total; n != 10 {
		t.Errorf("hashes run: got %d, want 10", n)
	}
	for _, err := range errs {
		if after, ok := auth.RetryAfter(err); errors.Is(err, auth.ErrRateLimited) && (!ok || after != 15*time.Minute) {
			t.Errorf("Retry-After: got %v, %t; want 15m (the failures were all just made)", after, ok)
			break
		}
	}
	e.wantLogin("right password", "bob", "password-bob", "203.0.113.1", auth.ErrRateLimited)
}

// TestLoginSuccessGivesBackItsAttempt: the attempt reserved by a right password is given back:
// 9 failures and any number of successes leave room for one more failure, not less.
func TestLoginSuccessGivesBackItsAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	e.register("bob")
	e.failLogins("bob", "192.0.2.1", 9)
	for i := range 5 {
		e.wantLogin(fmt.Sprint("success ", i+1), "bob", "password-bob", "192.0.2.1", nil)
	}
	e.failLogins("bob", "192.0.2.1", 1)
	e.wantLogin("after 10 failures", "bob", "password-bob", "192.0.2.1", auth.ErrRateLimited)
}

// TestAddressBurstIsFloored: 300 wrong passwords at once from one address, for 300 names:
// 100 are evaluated, 200 are refused without hashing, and the address's allowance is whole
// again 15 minutes later. Before, the bucket was checked before hashing and taken after, so a
// burst passed the limit and drove it far below zero, locking the address out for hours.
// Successful logins take nothing from it.
func TestAddressBurstIsFloored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	e.register("bob")
	const addr = "192.0.2.7"
	for i := range 150 {
		e.wantLogin(fmt.Sprint("success ", i+1), "bob", "password-bob", addr, nil)
	}
	before := e.m.HashStats()
	errs := parallel(300, func(i int) error {
		_, _, err := e.login(fmt.Sprint("user", i), "wrong-password", addr)
		return err
	})
	got := tally(t, errs, auth.ErrBadLogin, auth.ErrRateLimited)
	if got[auth.ErrBadLogin] != 100 || got[auth.ErrRateLimited] != 200 {
		t.Errorf("300 parallel failures from one address: got %d ErrBadLogin and %d ErrRateLimited, want 100 and 200", got[auth.ErrBadLogin], got[auth.ErrRateLimited])
	}
	if n := e.m.HashStats().Total - before.Total; n != 100 {
		t.Errorf("hashes run: got %d, want 100", n)
	}
	e.wantLogin("right after", "bob", "password-bob", addr, auth.ErrRateLimited)
	e.clock.advance(15 * time.Minute)
	e.failLogins("dave", addr, 5)
	for i := range 19 {
		e.failLogins(fmt.Sprint("again", i), addr, 5)
	}
	e.wantLogin("101st failure", "bob", "password-bob", addr, auth.ErrRateLimited)
}
