package data

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// User is a stored user.
type User struct {
	ID           int64
	Name         string
	Type         UserType
	PasswordHash string
	CreatedAt    time.Time
}

// Sentinel errors of users and sessions.
var (
	ErrNotFound  = errors.New("data: not found")
	ErrNameTaken = errors.New("data: name taken")
)

const userColumns = "id, name, type, password_hash, created_at"

func scanUser(row pgx.Row) (User, error) {
	var u User
	err := row.Scan(&u.ID, &u.Name, &u.Type, &u.PasswordHash, &u.CreatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return u, ErrNotFound
	}
	return u, err
}

// isUniqueViolation reports whether err is PostgreSQL refusing a duplicate key.
func isUniqueViolation(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "23505"
}

// CreateUser stores a new user; a name taken by another user, in any case, is ErrNameTaken.
func CreateUser(ctx context.Context, db DB, name string, typ UserType, passwordHash string) (User, error) {
	u, err := scanUser(db.QueryRow(ctx,
		"INSERT INTO users (name, type, password_hash) VALUES ($1, $2, $3) RETURNING "+userColumns,
		name, typ, passwordHash))
	if isUniqueViolation(err) {
		return u, ErrNameTaken
	}
	if err != nil {
		return u, fmt.Errorf("create user: %w", err)
	}
	return u, nil
}

// UserByID returns the user with id, or ErrNotFound.
func UserByID(ctx context.Context, db DB, id int64) (User, error) {
	return scanUser(db.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = $1", id))
}

// LockUserShared returns the user with id, or ErrNotFound, and holds its row FOR SHARE until
// the caller's transaction ends: the user can be neither changed nor deleted meanwhile, while
// other transactions may share the lock. It is the first lock of the lock order of auth
// (auth/doc.go).
func LockUserShared(ctx context.Context, db DB, id int64) (User, error) {
	return scanUser(db.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = $1 FOR SHARE", id))
}

// UserByName returns the user with name, compared regardless of case, or ErrNotFound.
func UserByName(ctx context.Context, db DB, name string) (User, error) {
	return scanUser(db.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE lower(name) = lower($1)", name))
}

// ListUsers returns every user, ordered by id.
func ListUsers(ctx context.Context, db DB) ([]User, error) {
	rows, err := db.Query(ctx, "SELECT "+userColumns+" FROM users ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	users, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (User, error) { return scanUser(row) })
	if err != nil {
		return nil, fmt.Errorf("list users: %w", err)
	}
	return users, nil
}

// UpdateUser changes a user's name and/or type (nil leaves it) and returns the user as it was
// before and as it is now. A change to what the user already has writes nothing (after is
// before); the row stays locked until the caller's transaction ends either way.
func UpdateUser(ctx context.Context, db DB, id int64, name *string, typ *UserType) (before, after User, err error) {
	before, err = scanUser(db.QueryRow(ctx, "SELECT "+userColumns+" FROM users WHERE id = $1 FOR UPDATE", id))
	if err != nil {
		return before, after, err
	}
	if (name == nil || *name == before.Name) && (typ == nil || *typ == before.Type) {
		return before, before, nil
	}
	after, err = scanUser(db.QueryRow(ctx,
		"UPDATE users SET name = coalesce($2, name), type = coalesce($3, type) WHERE id = $1 RETURNING "+userColumns,
		id, name, typ))
	if isUniqueViolation(err) {
		return before, after, ErrNameTaken
	}
	if err != nil {
		return before, after, fmt.Errorf("update user: %w", err)
	}
	return before, after, nil
}

// DeleteUser deletes a user and, with it, its sessions; ErrNotFound if there is none.
func DeleteUser(ctx context.Context, db DB, id int64) error {
	tag, err := db.Exec(ctx, "DELETE FROM users WHERE id = $1", id)
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return ErrNotFound
	}
	return nil
}
