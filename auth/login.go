package auth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"tidings/data"
)

// The login rate limits (PROTOCOL.md section 4.1).
const (
	loginWindow        = 15 * time.Minute
	maxFailuresPerName = 10
	maxFailuresPerAddr = 100
)

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// ValidName reports whether name is 1-64 ASCII letters, digits, '-', '_' or '.'.
func ValidName(name string) bool { return namePattern.MatchString(name) }

// ValidPassword reports whether a password is 8 to 1,024 bytes.
func ValidPassword(p string) bool { return len(p) >= 8 && len(p) <= 1024 }

// Register creates a regular user and signs it in. It emits user-update in the same
// transaction.
func (m *Manager) Register(ctx context.Context, name, password string) (*ServerSession, Token, error) {
	if !ValidName(name) || !ValidPassword(password) {
		return nil, "", fmt.Errorf("%w: a name is 1-64 ASCII letters, digits, '-', '_' or '.', a password 8-1024 bytes", ErrInvalid)
	}
	var s *ServerSession
	var token Token
	_, err := m.createUser(ctx, "register", name, password, data.UserRegular, func(tx pgx.Tx, u data.User) (err error) {
		s, token, err = m.newSession(ctx, tx, u.ID, nil, m.cfg.Now())
		return err
	})
	if err != nil {
		return nil, "", err
	}
	return s, token, nil
}

// Login checks a name and password and starts a session. Wrong name and wrong password are
// the same ErrBadLogin; once a name has 10 failures within 15 minutes, or an address 100,
// every attempt is ErrRateLimited, even with the right password.
func (m *Manager) Login(ctx context.Context, name, password, addr string) (*ServerSession, Token, error) {
	now := m.cfg.Now()
	if !m.addrs.allow(addr, now) {
		return nil, "", ErrRateLimited
	}
	if !ValidName(name) {
		// No such user can exist; answer as for one, without touching the database.
		m.hasher.check(password, "")
		m.addrs.fail(addr, now)
		return nil, "", ErrBadLogin
	}
	failures, err := data.LoginFailures(ctx, m.pool, name, now.Add(-loginWindow))
	if err != nil {
		return nil, "", fmt.Errorf("login: %w", err)
	}
	if failures >= maxFailuresPerName {
		return nil, "", ErrRateLimited
	}
	u, err := data.UserByName(ctx, m.pool, name)
	if err != nil && !errors.Is(err, data.ErrNotFound) {
		return nil, "", fmt.Errorf("login: %w", err)
	}
	if !m.hasher.check(password, u.PasswordHash) {
		m.addrs.fail(addr, now)
		if err := data.RecordLoginFailure(ctx, m.pool, name, now); err != nil {
			return nil, "", fmt.Errorf("login: %w", err)
		}
		return nil, "", ErrBadLogin
	}
	var s *ServerSession
	var token Token
	err = pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		var err error
		s, token, err = m.newSession(ctx, tx, u.ID, nil, now)
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("login: %w", err)
	}
	return s, token, nil
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

// addressLimiter counts failed logins per address, in memory: a token bucket of 100 that
// refills over 15 minutes.
type addressLimiter struct {
	mu      sync.Mutex
	buckets map[string]*addrBucket // guarded by mu
}

type addrBucket struct {
	tokens float64
	last   time.Time
}

func newAddressLimiter() *addressLimiter {
	return &addressLimiter{buckets: map[string]*addrBucket{}}
}

const addrRefill = float64(maxFailuresPerAddr) / float64(loginWindow)

func (l *addressLimiter) refillLocked(b *addrBucket, now time.Time) {
	b.tokens = min(maxFailuresPerAddr, b.tokens+float64(now.Sub(b.last))*addrRefill)
	b.last = now
}

// allow reports whether addr may try to log in.
func (l *addressLimiter) allow(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[addr]
	if !ok {
		return true
	}
	l.refillLocked(b, now)
	return b.tokens >= 1
}

// fail takes a token for a failed login; full buckets are forgotten, so memory follows the
// addresses that fail, not all that log in.
func (l *addressLimiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[addr]
	if !ok {
		b = &addrBucket{tokens: maxFailuresPerAddr, last: now}
		l.buckets[addr] = b
	}
	l.refillLocked(b, now)
	b.tokens--
	if len(l.buckets) > 10000 {
		for a, other := range l.buckets {
			if l.refillLocked(other, now); other.tokens >= maxFailuresPerAddr {
				delete(l.buckets, a)
			}
		}
	}
}
