package data

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"
)

// SessionRow is a stored login session. The token itself is never stored, only its SHA-256.
type SessionRow struct {
	ID            int64
	TokenHash     []byte
	UserID        int64
	CreatedAt     time.Time
	RotatesAt     time.Time
	ExpiresAt     time.Time
	PresentedAt   *time.Time // first time its cookie came back in a request
	PredecessorID *int64
	SuccessorID   *int64
	RotatedAt     *time.Time
	RevokedAt     *time.Time
	RevokedReason string // "", "logout", "taken" or "replaced"
	DiscardAt     time.Time
}

// The reasons a session is revoked.
const (
	RevokedLogout   = "logout"
	RevokedTaken    = "taken"
	RevokedReplaced = "replaced"
)

const sessionColumns = `id, token_hash, user_id, created_at, rotates_at, expires_at, presented_at,
	predecessor_id, successor_id, rotated_at, revoked_at, coalesce(revoked_reason, ''), discard_at`

func scanSession(row pgx.Row) (SessionRow, error) {
	var s SessionRow
	err := row.Scan(&s.ID, &s.TokenHash, &s.UserID, &s.CreatedAt, &s.RotatesAt, &s.ExpiresAt, &s.PresentedAt,
		&s.PredecessorID, &s.SuccessorID, &s.RotatedAt, &s.RevokedAt, &s.RevokedReason, &s.DiscardAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("read session: %w", err)
	}
	return s, nil
}

// InsertSession stores a new session and returns it with its id and creation time.
func InsertSession(ctx context.Context, db DB, s SessionRow) (SessionRow, error) {
	return scanSession(db.QueryRow(ctx, `
		INSERT INTO sessions (token_hash, user_id, rotates_at, expires_at, predecessor_id, discard_at)
		VALUES ($1, $2, $3, $4, $5, $6) RETURNING `+sessionColumns,
		s.TokenHash, s.UserID, s.RotatesAt, s.ExpiresAt, s.PredecessorID, s.DiscardAt))
}

// SessionByTokenHash returns the session whose token hashes to hash, or ErrNotFound. It locks
// nothing: a caller that changes the session locks its user, then the row (SessionByID), and
// reads it again (the lock order of auth/doc.go).
func SessionByTokenHash(ctx context.Context, db DB, hash []byte) (SessionRow, error) {
	return scanSession(db.QueryRow(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE token_hash = $1", hash))
}

// SessionSnapshot is a session, its user and the event log's watermark, read together.
type SessionSnapshot struct {
	Session   SessionRow
	User      User
	Watermark int64
}

// SessionSnapshotByTokenHash reads the session whose token hashes to hash, its user and the
// watermark in one statement, so from one snapshot and without a lock, or returns ErrNotFound
// (no such session, or its user is gone). A change to the session or the user commits in the
// same transaction as its control event: it is in the snapshot exactly when that event is at
// or below the watermark read with it.
func SessionSnapshotByTokenHash(ctx context.Context, db DB, hash []byte) (SessionSnapshot, error) {
	var s SessionSnapshot
	r, u := &s.Session, &s.User
	err := db.QueryRow(ctx, `
		SELECT s.id, s.token_hash, s.user_id, s.created_at, s.rotates_at, s.expires_at, s.presented_at,
			s.predecessor_id, s.successor_id, s.rotated_at, s.revoked_at, coalesce(s.revoked_reason, ''), s.discard_at,
			u.id, u.name, u.type, u.password_hash, u.created_at, st.last_id
		FROM sessions s JOIN users u ON u.id = s.user_id CROSS JOIN event_log_state st
		WHERE s.token_hash = $1`, hash).Scan(
		&r.ID, &r.TokenHash, &r.UserID, &r.CreatedAt, &r.RotatesAt, &r.ExpiresAt, &r.PresentedAt,
		&r.PredecessorID, &r.SuccessorID, &r.RotatedAt, &r.RevokedAt, &r.RevokedReason, &r.DiscardAt,
		&u.ID, &u.Name, &u.Type, &u.PasswordHash, &u.CreatedAt, &s.Watermark)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, ErrNotFound
	}
	if err != nil {
		return s, fmt.Errorf("read session: %w", err)
	}
	return s, nil
}

// SessionByID returns a session, locked for update when called in a transaction.
func SessionByID(ctx context.Context, db DB, id int64) (SessionRow, error) {
	return scanSession(db.QueryRow(ctx, "SELECT "+sessionColumns+" FROM sessions WHERE id = $1 FOR UPDATE", id))
}

// LockSessions locks, FOR UPDATE until the caller's transaction ends, those of ids that exist,
// one at a time in increasing id order: every transaction that holds several session rows
// takes them in that order, so that two of them never wait for each other.
func LockSessions(ctx context.Context, db DB, ids []int64) error {
	if _, err := db.Exec(ctx, "SELECT id FROM sessions WHERE id = ANY($1) ORDER BY id FOR UPDATE", ids); err != nil {
		return fmt.Errorf("lock sessions: %w", err)
	}
	return nil
}

// MarkSessionPresented records that a session's cookie came back, if it had not already.
func MarkSessionPresented(ctx context.Context, db DB, id int64, at time.Time) error {
	_, err := db.Exec(ctx, "UPDATE sessions SET presented_at = $2 WHERE id = $1 AND presented_at IS NULL", id, at)
	if err != nil {
		return fmt.Errorf("mark session presented: %w", err)
	}
	return nil
}

// SetSuccessor records that session id was rotated into successor at a time.
func SetSuccessor(ctx context.Context, db DB, id, successor int64, at time.Time) error {
	_, err := db.Exec(ctx, "UPDATE sessions SET successor_id = $2, rotated_at = coalesce(rotated_at, $3) WHERE id = $1", id, successor, at)
	if err != nil {
		return fmt.Errorf("set session successor: %w", err)
	}
	return nil
}

// RevokeSession ends a session for a reason; it stays on record until its discard time.
func RevokeSession(ctx context.Context, db DB, id int64, reason string, at time.Time) error {
	_, err := db.Exec(ctx, "UPDATE sessions SET revoked_at = $3, revoked_reason = $2 WHERE id = $1 AND revoked_at IS NULL", id, reason, at)
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

// RevokeSessions revokes, for reason, those of ids that are not revoked yet, and returns them
// in the order of ids.
func RevokeSessions(ctx context.Context, db DB, ids []int64, reason string, at time.Time) ([]int64, error) {
	rows, err := db.Query(ctx, "UPDATE sessions SET revoked_at = $3, revoked_reason = $2 WHERE id = ANY($1) AND revoked_at IS NULL RETURNING id", ids, reason, at)
	if err != nil {
		return nil, fmt.Errorf("revoke sessions: %w", err)
	}
	revoked, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("revoke sessions: %w", err)
	}
	return slices.DeleteFunc(slices.Clone(ids), func(id int64) bool { return !slices.Contains(revoked, id) }), nil
}

// SessionSuccessors returns the ids of every session rotated from id, directly or not, oldest
// first.
func SessionSuccessors(ctx context.Context, db DB, id int64) ([]int64, error) {
	return sessionChain(ctx, db, id, "successor_id")
}

// SessionPredecessors returns the ids of every session that id was rotated from, directly or
// not, newest first.
func SessionPredecessors(ctx context.Context, db DB, id int64) ([]int64, error) {
	return sessionChain(ctx, db, id, "predecessor_id")
}

// sessionChain follows link (successor_id or predecessor_id) from id, at most 1,000 steps.
func sessionChain(ctx context.Context, db DB, id int64, link string) ([]int64, error) {
	rows, err := db.Query(ctx, `
		WITH RECURSIVE chain AS (
			SELECT s.id, s.`+link+` AS next, 1 AS depth FROM sessions s WHERE s.id = (SELECT `+link+` FROM sessions WHERE id = $1)
			UNION ALL
			SELECT s.id, s.`+link+`, c.depth + 1 FROM sessions s JOIN chain c ON s.id = c.next WHERE c.depth < 1000
		)
		SELECT id FROM chain ORDER BY depth`, id)
	if err != nil {
		return nil, fmt.Errorf("read session chain: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("read session chain: %w", err)
	}
	return ids, nil
}

// DiscardOld deletes sessions past their discard time and login failures older than before,
// and returns how many sessions it deleted.
func DiscardOld(ctx context.Context, db DB, now, failuresBefore time.Time) (int64, error) {
	tag, err := db.Exec(ctx, "DELETE FROM sessions WHERE discard_at < $1", now)
	if err != nil {
		return 0, fmt.Errorf("discard sessions: %w", err)
	}
	if _, err := db.Exec(ctx, "DELETE FROM login_failures WHERE at < $1", failuresBefore); err != nil {
		return 0, fmt.Errorf("discard login failures: %w", err)
	}
	return tag.RowsAffected(), nil
}
