package auth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"tidings/data"
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidName reports whether name is 1-64 ASCII letters, digits, '-', '_' or '.'.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ValidPassword reports whether a password is 8 to 1,024 bytes.
func ValidPassword(p string) bool { return len(p) >= 8 && len(p) <= 1024 }

// Credentials are what a register or login presents.
type Credentials struct {
	Name, Password string
	// Addr is the client's address: the key of the per-address limits.
	Addr string
	// Device is the device cookie the user agent holds, or "" (read by Login only).
	Device Token
}

// SignIn is a session that a register or login opened, with the cookies to send.
type SignIn struct {
	Session *ServerSession
	// Token is the session's cookie.
	Token Token
	// Device is the device cookie (docs/protocol.md section 4.1), valid until DeviceExpires: the one
	// presented, renewed, when it names this user; a new one otherwise.
	Device        Token
	DeviceExpires time.Time
}

// Register creates a regular user and signs it in. It emits user-update in the same
// transaction. A taken name is ErrNameTaken before any password is hashed; past the
// registrations of its address it is ErrRegisterLimited, and when the node hashes too many
// passwords already ErrBusy (both with a RetryAfter).
func (m *Manager) Register(ctx context.Context, c Credentials) (SignIn, error) {
	if !ValidName(c.Name) || !ValidPassword(c.Password) {
		return SignIn{}, fmt.Errorf("%w: a name is 1-64 ASCII letters, digits, '-', '_' or '.', a password 8-1024 bytes", ErrInvalid)
	}
	if err := m.nameFree(ctx, "register", c.Name); err != nil {
		return SignIn{}, err
	}
	now := m.cfg.Now()
	if ok, wait := m.registers.take(c.Addr, now); !ok {
		return SignIn{}, limited(ErrRegisterLimited, wait)
	}
	hash, err := m.hasher.hash(ctx, c.Password)
	if err != nil {
		m.registers.giveBack(c.Addr, now) // nothing was hashed
		return SignIn{}, err
	}
	var in SignIn
	_, err = m.createUser(ctx, "register", c.Name, hash, data.UserRegular, func(tx pgx.Tx, u data.User) (err error) {
		in, err = m.signIn(ctx, tx, u.ID, nil, now)
		return err
	})
	if err != nil {
		return SignIn{}, err
	}
	return in, nil
}

// Login checks a name and password and starts a session. Wrong name and wrong password are
// the same ErrBadLogin. Once a name has 10 failures within 15 minutes, or an address 100,
// every attempt is ErrRateLimited, even with the right password; a user agent that presents
// a device cookie of the user is held by that device's own 10 failures instead of the name's.
// Each limit reserves the attempt before the password is hashed and gives it back when the
// password is right (or was not checked), so parallel attempts never pass a limit.
func (m *Manager) Login(ctx context.Context, c Credentials) (SignIn, error) {
	// As the database stores it: the reserved attempt is given back by this time.
	now := m.cfg.Now().Truncate(time.Microsecond)
	if ok, wait := m.addrs.take(c.Addr, now); !ok {
		return SignIn{}, limited(ErrRateLimited, wait)
	}
	in, err := m.login(ctx, c, now)
	if !errors.Is(err, ErrBadLogin) {
		m.addrs.giveBack(c.Addr, now) // only a wrong password counts against the address
	}
	return in, err
}

func (m *Manager) login(ctx context.Context, c Credentials, now time.Time) (SignIn, error) {
	if !ValidName(c.Name) {
		// No such user can exist; answer as for one, without touching the database.
		if _, err := m.hasher.check(ctx, c.Password, ""); err != nil {
			return SignIn{}, err
		}
		return SignIn{}, ErrBadLogin
	}
	u, err := data.UserByName(ctx, m.pool, c.Name)
	if err != nil && !errors.Is(err, data.ErrNotFound) {
		return SignIn{}, fmt.Errorf("login: %w", err)
	}
	dev, err := m.presentedDevice(ctx, c.Device, u, now)
	if err != nil {
		return SignIn{}, fmt.Errorf("login: %w", err)
	}
	key, limit := "name:"+strings.ToLower(c.Name), maxFailuresPerName
	if dev != nil {
		key, limit = fmt.Sprintf("device:%d", dev.id), maxFailuresPerDevice
	}
	ok, oldest, err := data.ReserveLoginAttempt(ctx, m.pool, key, now, now.Add(-loginWindow), limit)
	if err != nil {
		return SignIn{}, fmt.Errorf("login: %w", err)
	}
	if !ok {
		return SignIn{}, limited(ErrRateLimited, oldest.Add(loginWindow).Sub(now))
	}
	match, err := m.hasher.check(ctx, c.Password, u.PasswordHash)
	if err == nil && !match {
		return SignIn{}, ErrBadLogin // the reserved attempt stays: it is the failure
	}
	m.releaseAttempt(ctx, key, now)
	if err != nil {
		return SignIn{}, err
	}
	var in SignIn
	err = pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) (err error) {
		in, err = m.signIn(ctx, tx, u.ID, dev, now)
		return err
	})
	if err != nil {
		return SignIn{}, fmt.Errorf("login: %w", err)
	}
	return in, nil
}

// releaseAttempt gives back an attempt reserved at now, even after ctx ended.
func (m *Manager) releaseAttempt(ctx context.Context, key string, now time.Time) {
	ctx, cancel := detached(ctx)
	defer cancel()
	if err := data.ReleaseLoginAttempt(ctx, m.pool, key, now); err != nil {
		// It then counts as a failure until it is older than the window.
		m.log.Error("give back a login attempt", "key", key, "err", err)
	}
}

// Logout ends the session behind a token, with every successor it has, and closes their
// streams with 4003 logout on every node.
func (m *Manager) Logout(ctx context.Context, token Token) error {
	if token == "" {
		return nil
	}
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		// Found without a lock, then locked in the order of doc.go: the user, then the chain.
		row, err := data.SessionByTokenHash(ctx, tx, token.Hash())
		if errors.Is(err, data.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := data.LockUserShared(ctx, tx, row.UserID); errors.Is(err, data.ErrNotFound) {
			return nil // deleted meanwhile, with its sessions
		} else if err != nil {
			return err
		}
		chain, err := lockChain(ctx, tx, func() ([]int64, error) {
			successors, err := data.SessionSuccessors(ctx, tx, row.ID)
			if err != nil {
				return nil, err
			}
			// The predecessors too: an old cookie must not come back as a lost rotation.
			predecessors, err := data.SessionPredecessors(ctx, tx, row.ID)
			if err != nil {
				return nil, err
			}
			return slices.Concat([]int64{row.ID}, successors, predecessors), nil
		})
		if err != nil {
			return err
		}
		ids, err := data.RevokeSessions(ctx, tx, chain, data.RevokedLogout, m.cfg.Now())
		if err != nil {
			return err
		}
		if len(ids) == 0 {
			return nil
		}
		return data.AppendControl(ctx, tx, data.CloseStreams{SessionIDs: ids, Code: 4003, Reason: "logout"}.Event())
	})
	if err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	return nil
}
