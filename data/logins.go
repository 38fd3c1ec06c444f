package data

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// ReserveLoginAttempt counts an attempt made at at against the limit key, unless key already
// counts max attempts made at or after since: then it counts nothing, returns false and the
// time of the oldest attempt that still counts (the limit lifts once it is older than the
// window). It is one statement: the row of key is locked by the upsert and the condition is
// checked on its newest version, so attempts made in parallel, on any node, never pass max.
// Attempts older than since are dropped from the row as it is written.
func ReserveLoginAttempt(ctx context.Context, db DB, key string, at, since time.Time, max int) (bool, time.Time, error) {
	var reserved bool
	err := db.QueryRow(ctx, `
		INSERT INTO login_limits AS l (key, attempts) VALUES ($1, ARRAY[$2::timestamptz])
		ON CONFLICT (key) DO UPDATE
			SET attempts = ARRAY(SELECT a FROM unnest(l.attempts) AS a WHERE a >= $3) || $2::timestamptz
			WHERE (SELECT count(*) FROM unnest(l.attempts) AS a WHERE a >= $3) < $4
		RETURNING true`, key, at, since, max).Scan(&reserved)
	if err == nil {
		return true, time.Time{}, nil
	}
	if !errors.Is(err, pgx.ErrNoRows) {
		return false, time.Time{}, fmt.Errorf("reserve login attempt: %w", err)
	}
	var oldest *time.Time
	err = db.QueryRow(ctx, `
		SELECT min(a) FROM login_limits, unnest(attempts) AS a WHERE key = $1 AND a >= $2`,
		key, since).Scan(&oldest)
	if err != nil {
		return false, time.Time{}, fmt.Errorf("read login attempts: %w", err)
	}
	if oldest == nil { // the attempts aged out since the upsert: the next try passes
		return false, since, nil
	}
	return false, *oldest, nil
}

// ReleaseLoginAttempt gives back one attempt that ReserveLoginAttempt counted against key at
// at (attempts made at the same instant are alike: any one of them goes).
func ReleaseLoginAttempt(ctx context.Context, db DB, key string, at time.Time) error {
	_, err := db.Exec(ctx, `
		UPDATE login_limits
		SET attempts = attempts[:array_position(attempts, $2::timestamptz) - 1]
		            || attempts[array_position(attempts, $2::timestamptz) + 1:]
		WHERE key = $1 AND $2::timestamptz = ANY(attempts)`, key, at)
	if err != nil {
		return fmt.Errorf("release login attempt: %w", err)
	}
	return nil
}

// Device is a stored device cookie: the token itself is never stored, only its SHA-256.
type Device struct {
	ID        int64
	UserID    int64
	ExpiresAt time.Time
}

// InsertDevice stores a new device cookie of a user and returns its id.
func InsertDevice(ctx context.Context, db DB, tokenHash []byte, userID int64, expires time.Time) (int64, error) {
	var id int64
	err := db.QueryRow(ctx, "INSERT INTO devices (token_hash, user_id, expires_at) VALUES ($1, $2, $3) RETURNING id",
		tokenHash, userID, expires).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("insert device: %w", err)
	}
	return id, nil
}

// DeviceByTokenHash returns the device whose token hashes to hash, or ErrNotFound. It locks
// nothing.
func DeviceByTokenHash(ctx context.Context, db DB, hash []byte) (Device, error) {
	var d Device
	err := db.QueryRow(ctx, "SELECT id, user_id, expires_at FROM devices WHERE token_hash = $1", hash).
		Scan(&d.ID, &d.UserID, &d.ExpiresAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("read device: %w", err)
	}
	return d, nil
}

// RenewDevice moves a device's expiry; ErrNotFound if it is gone.
func RenewDevice(ctx context.Context, db DB, id int64, expires time.Time) error {
	tag, err := db.Exec(ctx, "UPDATE devices SET expires_at = $2 WHERE id = $1", id, expires)
	if err != nil {
		return fmt.Errorf("renew device: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}

// DiscardLoginState deletes the devices expired at now, those of each user beyond its
// keepPerUser newest, and the login limits whose attempts are all older than since.
func DiscardLoginState(ctx context.Context, db DB, now, since time.Time, keepPerUser int) error {
	if _, err := db.Exec(ctx, `
		DELETE FROM devices WHERE expires_at <= $1 OR id IN (
			SELECT id FROM (
				SELECT id, row_number() OVER (PARTITION BY user_id ORDER BY id DESC) AS n FROM devices
			) d WHERE d.n > $2)`, now, keepPerUser); err != nil {
		return fmt.Errorf("discard devices: %w", err)
	}
	if _, err := db.Exec(ctx, `
		DELETE FROM login_limits WHERE NOT EXISTS (SELECT 1 FROM unnest(attempts) AS a WHERE a >= $1)`, since); err != nil {
		return fmt.Errorf("discard login limits: %w", err)
	}
	return nil
}
