package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"tidings/data"
)

// Config configures a Manager. The zero value of each field means its default.
type Config struct {
	// Rotate is the rotation period of a session (default 1h).
	Rotate time.Duration
	// Expire is the lifetime of a session since its last rotation (default 336h).
	Expire time.Duration
	// Grace is how long a rotated session stays usable (default 30s).
	Grace time.Duration
	// Password sets the argon2id cost (default DefaultPasswordParams).
	Password *PasswordParams
	// Hashing bounds the argon2id computations running at once (HashLimits' defaults).
	Hashing HashLimits
	// DeviceLifetime is how long a device cookie lives after the sign-in that gave or renewed
	// it (default DefaultDeviceLifetime).
	DeviceLifetime time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger receives what goes wrong; nil discards it.
	Logger *slog.Logger
}

// Manager keeps sessions and users in the database.
type Manager struct {
	// Set at construction.
	pool      *pgxpool.Pool
	cfg       Config
	log       *slog.Logger
	hasher    *hasher
	addrs     *buckets // failed logins per address
	registers *buckets // registrations per address
}

// NewManager returns a Manager over pool.
func NewManager(pool *pgxpool.Pool, cfg Config) *Manager {
	if cfg.Rotate <= 0 {
		cfg.Rotate = time.Hour
	}
	if cfg.Expire <= 0 {
		cfg.Expire = 336 * time.Hour
	}
	if cfg.Grace <= 0 {
		cfg.Grace = 30 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DeviceLifetime <= 0 {
		cfg.DeviceLifetime = DefaultDeviceLifetime
	}
	params := DefaultPasswordParams
	if cfg.Password != nil {
		params = *cfg.Password
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &Manager{
		pool: pool, cfg: cfg, log: log,
		hasher:    newHasher(params, cfg.Hashing),
		addrs:     newBuckets(maxFailuresPerAddr, loginWindow),
		registers: newBuckets(maxRegistersPerAddr, registerWindow),
	}
	l := m.hasher.limits
	log.Info("password hashing bounded", "slots", l.Slots, "queue", l.Queue, "wait", l.Wait,
		"memoryPerHashKiB", params.Memory, "budgetMiB", l.Memory>>20)
	return m
}

// HashStats counts the Manager's argon2id computations.
func (m *Manager) HashStats() HashStats { return m.hasher.stats() }

// ServerSession is a login session as the server knows it, with its account.
type ServerSession struct {
	data.SessionRow
	Account data.User
}

// Notices a request may carry (docs/protocol.md section 4.4).
const NoticeSessionTaken = "session-taken"

// Resolution is what a request's cookie amounts to.
type Resolution struct {
	// Session is the session the request acts as; nil for anonymous.
	Session *ServerSession
	// NewToken, when set, is a new cookie to send: the session was rotated or its lost
	// successor replaced.
	NewToken Token
	// ClearCookie asks to clear the cookie: it names no live session.
	ClearCookie bool
	// Notice is "" or NoticeSessionTaken.
	Notice string
	// Rotated means the cookie's session was already rotated and is within its grace: it still
	// acts as its account, but a stream opened with it must close at once with 4002.
	Rotated bool
	// Watermark is the event log's watermark, read in the transaction that resolved Session,
	// once its user and session rows were locked and before this resolution appended anything
	// (the lock order of doc.go). So it splits the control events about Session and its
	// account exactly: every one with an id at or below Watermark is reflected in Session
	// (its revocation, rotation, the account's type, its deletion), and none above it is. A
	// stream acting as Session takes it as the cut-off for the control events that may close
	// it. It is 0 when Session is nil (no cookie, or one that resolves to no session): the
	// caller reads the watermark elsewhere then.
	Watermark int64
}

// Errors of sessions and users, translated to statuses by the web layer.
var (
	ErrInvalid     = errors.New("auth: invalid")
	ErrBadLogin    = errors.New("auth: wrong name or password")
	ErrRateLimited = errors.New("auth: too many failed logins")
	// ErrRegisterLimited: the address registered too many users lately.
	ErrRegisterLimited = errors.New("auth: too many registrations")
	// ErrBusy: the node checks as many passwords as it may at once.
	ErrBusy      = errors.New("auth: too many passwords being checked")
	ErrNameTaken = errors.New("auth: name taken")
	ErrForbidden = errors.New("auth: forbidden")
	ErrNotFound  = errors.New("auth: not found")
)

// Resolve reads the session behind a cookie's token, applying the rules of docs/protocol.md
// section 4: expiry, rotation when due, the grace period of a rotated session, the replacement
// of a successor whose response was lost, and theft detection.
func (m *Manager) Resolve(ctx context.Context, token Token) (Resolution, error) {
	if token == "" {
		return Resolution{}, nil
	}
	// Most resolutions change nothing (a live session, presented, not due for rotation): one
	// statement decides them, from one snapshot and without a lock, so that streams of one
	// session opening together neither queue for its row nor write to it. The snapshot's
	// watermark splits the control events as the locks do (data.SessionSnapshotByTokenHash).
	snap, err := data.SessionSnapshotByTokenHash(ctx, m.pool, token.Hash())
	if errors.Is(err, data.ErrNotFound) {
		return Resolution{ClearCookie: true}, nil
	}
	if err != nil {
		return Resolution{}, fmt.Errorf("resolve session: %w", err)
	}
	if res, err := m.decide(ctx, nil, snap.Session, snap.User, m.cfg.Now()); !errors.Is(err, errNeedsLocks) {
		if res.Session != nil {
			res.Watermark = snap.Watermark
		}
		return res, err
	}
	var res Resolution
	err = pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		var err error
		res, err = m.resolve(ctx, tx, token)
		return err
	})
	if err != nil {
		return Resolution{}, fmt.Errorf("resolve session: %w", err)
	}
	return res, nil
}

func (m *Manager) resolve(ctx context.Context, tx pgx.Tx, token Token) (Resolution, error) {
	now := m.cfg.Now()
	// Found without a lock, then locked in the order of doc.go: its user, then the row itself,
	// read again under its lock.
	found, err := data.SessionByTokenHash(ctx, tx, token.Hash())
	if errors.Is(err, data.ErrNotFound) {
		return Resolution{ClearCookie: true}, nil
	}
	if err != nil {
		return Resolution{}, err
	}
	account, err := data.LockUserShared(ctx, tx, found.UserID)
	if errors.Is(err, data.ErrNotFound) {
		return Resolution{ClearCookie: true}, nil // deleted meanwhile, with its sessions
	}
	if err != nil {
		return Resolution{}, err
	}
	row, err := data.SessionByID(ctx, tx, found.ID)
	if errors.Is(err, data.ErrNotFound) {
		return Resolution{ClearCookie: true}, nil
	}
	if err != nil {
		return Resolution{}, err
	}
	// Every change to this user or session that committed is in what was just read, and none
	// can commit before this transaction ends: the watermark now splits their control events.
	// The other rows locked below are successors, and the session resolved to is this one or
	// a new one.
	watermark, err := data.Watermark(ctx, tx)
	if err != nil {
		return Resolution{}, err
	}
	res, err := m.decide(ctx, tx, row, account, now)
	if res.Session != nil {
		res.Watermark = watermark
	}
	return res, err
}

// errNeedsLocks: deciding on the session changes it, which takes its locks.
var errNeedsLocks = errors.New("auth: the session changes: lock it")

// decide applies the rules of docs/protocol.md section 4 to a session row locked with its user.
// With a nil tx (a snapshot, unlocked) it decides only what changes nothing, and returns
// errNeedsLocks for the rest.
func (m *Manager) decide(ctx context.Context, tx pgx.Tx, row data.SessionRow, account data.User, now time.Time) (Resolution, error) {
	switch {
	case row.RevokedAt != nil:
		res := Resolution{ClearCookie: true}
		if row.RevokedReason == data.RevokedTaken {
			res.Notice = NoticeSessionTaken
		}
		return res, nil

	case row.SuccessorID != nil && now.Before(row.RotatedAt.Add(m.cfg.Grace)):
		// A request already in flight when the session rotated: same account, no new cookie.
		return Resolution{Session: &ServerSession{SessionRow: row, Account: account}, Rotated: true}, nil

	case row.SuccessorID != nil:
		if tx == nil {
			return Resolution{}, errNeedsLocks
		}
		successor, err := data.SessionByID(ctx, tx, *row.SuccessorID)
		if err != nil {
			return Resolution{}, err
		}
		if successor.PresentedAt != nil || successor.SuccessorID != nil {
			// Two parties held this cookie: cut off every successor, tell whoever this is.
			return Resolution{ClearCookie: true, Notice: NoticeSessionTaken}, m.revokeSuccessors(ctx, tx, row.ID, now)
		}
		if !now.Before(row.ExpiresAt) {
			return Resolution{ClearCookie: true}, nil
		}
		// The response that carried the successor was lost: replace it, so that a dropped
		// response never logs anyone out.
		if err := data.RevokeSession(ctx, tx, successor.ID, data.RevokedReplaced, now); err != nil {
			return Resolution{}, err
		}
		return m.rotate(ctx, tx, row, now)

	case !now.Before(row.ExpiresAt):
		return Resolution{ClearCookie: true}, nil
	}
	if tx == nil && (row.PresentedAt == nil || !now.Before(row.RotatesAt)) {
		return Resolution{}, errNeedsLocks
	}
	if row.PresentedAt == nil {
		if err := data.MarkSessionPresented(ctx, tx, row.ID, now); err != nil {
			return Resolution{}, err
		}
	}
	if !now.Before(row.RotatesAt) {
		res, err := m.rotate(ctx, tx, row, now)
		if err != nil {
			return Resolution{}, err
		}
		// Streams opened with this session close with 4002 and reconnect onto the successor.
		// Appended last, as every event (doc.go).
		closeEv := data.CloseStreams{SessionIDs: []int64{row.ID}, Code: 4002, Reason: "session-rotated"}.Event()
		return res, data.AppendControl(ctx, tx, closeEv)
	}
	return Resolution{Session: &ServerSession{SessionRow: row, Account: account}}, nil
}

// Presented records that a session's cookie reached its holder: a stream upgrade that carried
// a rotated cookie on its 101, and whose client then showed that it received the 101 (a frame,
// or the pong to the server's ping), proves the response arrived, just as a later request
// presenting the cookie would. Without this a page that only holds a stream would leave its
// successor unpresented, and a thief's old cookie would pass for a lost response. A 101 that
// was written but never shown to arrive proves nothing: the old cookie then counts as a lost
// response (docs/protocol.md section 4.4).
func (m *Manager) Presented(ctx context.Context, s *ServerSession) error {
	return data.MarkSessionPresented(ctx, m.pool, s.ID, m.cfg.Now())
}

// rotate gives row a new successor session and returns it with its token.
func (m *Manager) rotate(ctx context.Context, tx pgx.Tx, row data.SessionRow, now time.Time) (Resolution, error) {
	s, token, err := m.newSession(ctx, tx, row.UserID, &row.ID, now)
	if err != nil {
		return Resolution{}, err
	}
	if err := data.SetSuccessor(ctx, tx, row.ID, s.ID, now); err != nil {
		return Resolution{}, err
	}
	return Resolution{Session: s, NewToken: token}, nil
}

// revokeSuccessors revokes, as taken, every session rotated from id, and closes their streams.
func (m *Manager) revokeSuccessors(ctx context.Context, tx pgx.Tx, id int64, now time.Time) error {
	// id is locked; its successors are newer, so taken after it in id order (doc.go).
	successors, err := lockChain(ctx, tx, func() ([]int64, error) { return data.SessionSuccessors(ctx, tx, id) })
	if err != nil {
		return err
	}
	ids, err := data.RevokeSessions(ctx, tx, successors, data.RevokedTaken, now)
	if err != nil {
		return err
	}
	// The old session stays on record, revoked too: presented again, it says session-taken.
	if err := data.RevokeSession(ctx, tx, id, data.RevokedTaken, now); err != nil {
		return err
	}
	m.log.Warn("session taken: a rotated session token (cookie or bearer) came back after its successor was used; successors revoked",
		"session", id, "revoked", ids)
	if len(ids) == 0 {
		return nil
	}
	return data.AppendControl(ctx, tx, data.CloseStreams{SessionIDs: ids, Code: 4003, Reason: "session-taken"}.Event())
}

// lockChain locks the sessions that chain returns, in id order, and reads the chain again until
// every session in it is locked: a successor that a rotation committed meanwhile is locked too
// (it is newer, so later in id order), and none can be added once the newest is held.
func lockChain(ctx context.Context, tx pgx.Tx, chain func() ([]int64, error)) ([]int64, error) {
	var locked []int64
	for range 100 {
		ids, err := chain()
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(ids, func(id int64) bool { return !slices.Contains(locked, id) }) {
			return ids, nil
		}
		if err := data.LockSessions(ctx, tx, ids); err != nil {
			return nil, err
		}
		locked = ids
	}
	return nil, errors.New("lock session chain: it keeps growing")
}

// newSession stores a fresh session for a user.
func (m *Manager) newSession(ctx context.Context, tx pgx.Tx, userID int64, predecessor *int64, now time.Time) (*ServerSession, Token, error) {
	token := NewToken()
	expires := now.Add(m.cfg.Expire)
	row, err := data.InsertSession(ctx, tx, data.SessionRow{
		TokenHash:     token.Hash(),
		UserID:        userID,
		RotatesAt:     now.Add(m.cfg.Rotate),
		ExpiresAt:     expires,
		PredecessorID: predecessor,
		// Kept on record past its end, for theft detection.
		DiscardAt: expires.Add(m.cfg.Grace),
	})
	if err != nil {
		return nil, "", err
	}
	s, err := m.withAccount(ctx, tx, row)
	return s, token, err
}

func (m *Manager) withAccount(ctx context.Context, tx pgx.Tx, row data.SessionRow) (*ServerSession, error) {
	u, err := data.UserByID(ctx, tx, row.UserID)
	if err != nil {
		return nil, fmt.Errorf("session %d account: %w", row.ID, err)
	}
	return &ServerSession{SessionRow: row, Account: u}, nil
}

// Discard deletes sessions past their discard time, login failures older than the login
// window, expired device cookies and those beyond the newest 32 of a user; run it
// periodically. It returns how many sessions it deleted.
func (m *Manager) Discard(ctx context.Context) (int64, error) {
	now := m.cfg.Now()
	n, err := data.DiscardOld(ctx, m.pool, now, now.Add(-loginWindow))
	if err != nil {
		return n, err
	}
	return n, data.DiscardLoginState(ctx, m.pool, now, now.Add(-loginWindow), maxDevicesPerUser)
}
