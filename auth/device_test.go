package auth_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"
	"time"

	"tidings/auth"
	"tidings/data"
)

// deviceLogin signs in presenting a device cookie.
func (e *env) deviceLogin(name, password, addr string, device auth.Token) (auth.SignIn, error) {
	return e.m.Login(e.ctx, auth.Credentials{Name: name, Password: password, Addr: addr, Device: device})
}

// TestDeviceCookieExemptsFromTheNameLimit: strangers' 10 failures lock the name, even for the
// right password, but a user agent holding a device cookie of that user still signs in (and
// keeps its cookie, renewed). A device cookie of another user, or an expired one, exempts
// nothing. The device's own failures are limited to 10 per 15 minutes, and do not count
// against the name.
func TestDeviceCookieExemptsFromTheNameLimit(t *testing.T) {
	t.Parallel()
	const lifetime = 30 * 24 * time.Hour
	e := newEnv(t, auth.Config{DeviceLifetime: lifetime}, base)
	reg, err := e.m.Register(e.ctx, auth.Credentials{Name: "root", Password: "password-root"})
	if err != nil {
		t.Fatal(err)
	}
	if len(reg.Device) < 43 || reg.Device == reg.Token || !reg.DeviceExpires.Equal(base.Add(lifetime)) {
		t.Fatalf("register's device cookie: got %d characters until %v, want a token of its own until %v", len(reg.Device), reg.DeviceExpires, base.Add(lifetime))
	}
	bob, err := e.m.Register(e.ctx, auth.Credentials{Name: "bob", Password: "password-bob"})
	if err != nil {
		t.Fatal(err)
	}

	for i := range 10 {
		e.failLogins("root", fmt.Sprint("198.51.100.", i), 1)
	}
	e.wantLogin("right password without a device cookie", "root", "password-root", "203.0.113.1", auth.ErrRateLimited)
	if _, err := e.deviceLogin("root", "password-root", "203.0.113.1", bob.Device); !errors.Is(err, auth.ErrRateLimited) {
		t.Errorf("with another user's device cookie: got %v, want ErrRateLimited", err)
	}
	if _, err := e.deviceLogin("root", "password-root", "203.0.113.1", auth.NewToken()); !errors.Is(err, auth.ErrRateLimited) {
		t.Errorf("with an unknown device cookie: got %v, want ErrRateLimited", err)
	}

	e.clock.advance(time.Minute)
	in, err := e.deviceLogin("ROOT", "password-root", "203.0.113.1", reg.Device)
	if err != nil || in.Session == nil || in.Session.Account.ID != reg.Session.Account.ID {
		t.Fatalf("with root's device cookie: got %v, want a session of root", err)
	}
	if in.Device != reg.Device || !in.DeviceExpires.Equal(base.Add(time.Minute+lifetime)) {
		t.Errorf("the device cookie after its login: got the same %t, until %v; want the same, renewed until %v", in.Device == reg.Device, in.DeviceExpires, base.Add(time.Minute+lifetime))
	}

	// The device's own failures: 10, then even the right password is refused with it.
	for i := range 10 {
		if _, err := e.deviceLogin("root", "wrong-password", fmt.Sprint("192.0.2.", i), reg.Device); !errors.Is(err, auth.ErrBadLogin) {
			t.Fatalf("device failure %d: got %v, want ErrBadLogin", i+1, err)
		}
	}
	if _, err := e.deviceLogin("root", "password-root", "192.0.2.100", reg.Device); !errors.Is(err, auth.ErrRateLimited) {
		t.Errorf("11th attempt with the device cookie: got %v, want ErrRateLimited", err)
	}
	// They did not count against the name: once the strangers' failures are 15 minutes old,
	// the name is free again.
	e.clock.advance(15*time.Minute - time.Minute + time.Second)
	e.wantLogin("the strangers' failures aged out", "root", "password-root", "203.0.113.2", nil)

	// Past its lifetime, a device cookie exempts nothing.
	e.clock.advance(lifetime)
	for i := range 10 {
		e.failLogins("root", fmt.Sprint("198.51.100.", i), 1)
	}
	if _, err := e.deviceLogin("root", "password-root", "203.0.113.3", reg.Device); !errors.Is(err, auth.ErrRateLimited) {
		t.Errorf("with an expired device cookie: got %v, want ErrRateLimited", err)
	}
}

// TestParallelGuessesWithADeviceCookie: the device's limit holds under parallel attempts as
// the name's does.
func TestParallelGuessesWithADeviceCookie(t *testing.T) {
	t.Parallel()
	e := newEnv(t, auth.Config{}, base)
	reg, err := e.m.Register(e.ctx, auth.Credentials{Name: "root", Password: "password-root"})
	if err != nil {
		t.Fatal(err)
	}
	errs := parallel(40, func(i int) error {
		_, err := e.deviceLogin("root", "wrong-password", fmt.Sprint("198.51.100.", i), reg.Device)
		return err
	})
	if got := tally(t, errs, auth.ErrBadLogin, auth.ErrRateLimited); got[auth.ErrBadLogin] != 10 || got[auth.ErrRateLimited] != 30 {
		t.Errorf("40 parallel guesses with a device cookie: got %v, want 10 ErrBadLogin and 30 ErrRateLimited", got)
	}
	e.wantLogin("without the device cookie", "root", "password-root", "203.0.113.1", nil)
}

// TestDevicesStoredHashedAndDiscarded: a device cookie is stored only as its SHA-256, with
// its user; a new one is made at each sign-in without one; expired devices and those past a
// user's newest 32 are discarded, and deleting the user deletes its devices.
func TestDevicesStoredHashedAndDiscarded(t *testing.T) {
	t.Parallel()
	const lifetime = time.Hour
	e := newEnv(t, auth.Config{DeviceLifetime: lifetime}, base)
	reg, err := e.m.Register(e.ctx, auth.Credentials{Name: "alice", Password: "password-alice"})
	if err != nil {
		t.Fatal(err)
	}
	devices := func() map[string]int64 {
		t.Helper()
		rows, err := e.pool.Query(e.ctx, "SELECT token_hash, user_id FROM devices")
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for rows.Next() {
			var hash []byte
			var user int64
			if err := rows.Scan(&hash, &user); err != nil {
				t.Fatal(err)
			}
			out[string(hash)] = user
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	want := sha256.Sum256([]byte(reg.Device))
	if got := devices(); len(got) != 1 || got[string(want[:])] != reg.Session.Account.ID {
		t.Fatalf("devices after register: got %d rows, want the SHA-256 of the cookie with alice's id", len(got))
	}
	var text string
	if err := e.pool.QueryRow(e.ctx, "SELECT string_agg(d::text, ',') FROM devices d").Scan(&text); err != nil || bytes.Contains([]byte(text), []byte(reg.Device)) {
		t.Fatalf("devices table holds the token (%v)", err)
	}

	for i := range 40 {
		if _, _, err := e.login("alice", "password-alice", fmt.Sprint("192.0.2.", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.m.Discard(e.ctx); err != nil || n != 0 {
		t.Fatalf("discard: got %d, %v", n, err)
	}
	if got := devices(); len(got) != 32 {
		t.Errorf("devices after 41 sign-ins and a discard: got %d, want the newest 32", len(got))
	}
	e.clock.advance(lifetime)
	if _, err := e.m.Discard(e.ctx); err != nil {
		t.Fatal(err)
	}
	if got := devices(); len(got) != 0 {
		t.Errorf("devices after their lifetime and a discard: got %d, want 0", len(got))
	}
	var limits int
	if err := e.pool.QueryRow(e.ctx, "SELECT count(*) FROM login_limits").Scan(&limits); err != nil || limits != 0 {
		t.Errorf("login limits after the window and a discard: got %d rows, %v; want 0", limits, err)
	}

	in, err := e.m.Login(e.ctx, auth.Credentials{Name: "alice", Password: "password-alice", Device: reg.Device})
	if err != nil || in.Device == reg.Device {
		t.Fatalf("login with a discarded device cookie: got %v, same cookie %t; want a new cookie", err, in.Device == reg.Device)
	}
	root := e.createUser("root", data.UserAdmin)
	if err := e.m.DeleteUser(e.ctx, root, reg.Session.Account.ID); err != nil {
		t.Fatal(err)
	}
	if got := devices(); len(got) != 0 {
		t.Errorf("devices of a deleted user: got %d, want 0", len(got))
	}
}
