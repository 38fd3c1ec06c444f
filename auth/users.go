package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"tidings/data"
)

// ApiUser is a user as the wire carries it; ApiAccount is the same shape for the signed-in user.
type ApiUser struct {
	ID   int64         `json:"id"`
	Name string        `json:"name"`
	Type data.UserType `json:"type"`
}

// ApiAccount is the signed-in user of a session, as the wire carries it.
type ApiAccount = ApiUser

// NewApiUser is the wire form of a stored user.
func NewApiUser(u data.User) ApiUser { return ApiUser{ID: u.ID, Name: u.Name, Type: u.Type} }

// signedIn is the audience of user-update and user-delete.
var signedIn = data.Audience{Kind: data.AudienceSignedIn}

func emitUserUpdate(ctx context.Context, tx pgx.Tx, u data.User) error {
	b, _ := json.Marshal(NewApiUser(u))
	_, err := data.AppendEvents(ctx, tx, []data.NewEvent{{Type: "user-update", Data: b, Audience: signedIn}})
	return err
}

// CreateUser makes a user of any type, as `tidings user create` does, and emits user-update.
func (m *Manager) CreateUser(ctx context.Context, name, password string, typ data.UserType) (data.User, error) {
	if !ValidName(name) || !ValidPassword(password) || !typ.Valid() {
		return data.User{}, fmt.Errorf("%w: a name is 1-64 ASCII letters, digits, '-', '_' or '.', a password 8-1024 bytes, a type regular, crew or admin", ErrInvalid)
	}
	if err := m.nameFree(ctx, "create user", name); err != nil {
		return data.User{}, err
	}
	hash, err := m.hasher.hash(ctx, password)
	if err != nil {
		return data.User{}, err
	}
	return m.createUser(ctx, "create user", name, hash, typ, nil)
}

// nameFree is ErrNameTaken when a user has name already: checked before a password is hashed,
// so that asking for a taken name costs no hashing. (Two asking for a free name at once both
// hash; the database takes one of them.)
func (m *Manager) nameFree(ctx context.Context, what, name string) error {
	_, err := data.UserByName(ctx, m.pool, name)
	switch {
	case err == nil:
		return ErrNameTaken
	case errors.Is(err, data.ErrNotFound):
		return nil
	default:
		return fmt.Errorf("%s: %w", what, err)
	}
}

// createUser stores a user with a password hash, runs then, if set, in the same transaction,
// and emits user-update last. A taken name is ErrNameTaken; other errors are wrapped with what.
func (m *Manager) createUser(ctx context.Context, what, name, hash string, typ data.UserType, then func(pgx.Tx, data.User) error) (data.User, error) {
	var u data.User
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		var err error
		if u, err = data.CreateUser(ctx, tx, name, typ, hash); err != nil {
			return err
		}
		if then != nil {
			if err := then(tx, u); err != nil {
				return err
			}
		}
		return emitUserUpdate(ctx, tx, u) // last, as every append (doc.go)
	})
	if errors.Is(err, data.ErrNameTaken) {
		return u, ErrNameTaken
	}
	if err != nil {
		return u, fmt.Errorf("%s: %w", what, err)
	}
	return u, nil
}

// Users returns every user, ordered by id.
func (m *Manager) Users(ctx context.Context) ([]data.User, error) { return data.ListUsers(ctx, m.pool) }

// User returns one user, or ErrNotFound.
func (m *Manager) User(ctx context.Context, id int64) (data.User, error) {
	u, err := data.UserByID(ctx, m.pool, id)
	if errors.Is(err, data.ErrNotFound) {
		return u, ErrNotFound
	}
	return u, err
}

// UserPatch is a change to a user; nil fields stay.
type UserPatch struct {
	Name *string
	Type *data.UserType
}

// UpdateUser applies a change by account to user id: any account may rename itself; renaming
// others and changing anyone's type take an admin. It emits user-update, and a type change
// closes that user's streams with 4003 access-changed on every node. A change that changes
// nothing (an empty patch, the name or type the user already has) stores and emits nothing:
// every signed-in stream receives user-update, so it is not to be had for free.
func (m *Manager) UpdateUser(ctx context.Context, account data.User, id int64, p UserPatch) (data.User, error) {
	if p.Name != nil && !ValidName(*p.Name) || p.Type != nil && !p.Type.Valid() {
		return data.User{}, fmt.Errorf("%w: a name is 1-64 ASCII letters, digits, '-', '_' or '.', a type regular, crew or admin", ErrInvalid)
	}
	if account.Type != data.UserAdmin && (id != account.ID || p.Type != nil) {
		return data.User{}, ErrForbidden
	}
	if p.Name == nil && p.Type == nil {
		return m.User(ctx, id)
	}
	var after data.User
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		before, a, err := data.UpdateUser(ctx, tx, id, p.Name, p.Type)
		if err != nil {
			return err
		}
		after = a
		if before.Name == after.Name && before.Type == after.Type {
			return nil // nothing changed: nothing to announce
		}
		if err := emitUserUpdate(ctx, tx, after); err != nil {
			return err
		}
		if before.Type != after.Type {
			return data.AppendControl(ctx, tx, data.CloseStreams{UserIDs: []int64{id}, Code: 4003, Reason: "access-changed"}.Event())
		}
		return nil
	})
	switch {
	case errors.Is(err, data.ErrNotFound):
		return after, ErrNotFound
	case errors.Is(err, data.ErrNameTaken):
		return after, ErrNameTaken
	case err != nil:
		return after, fmt.Errorf("update user: %w", err)
	}
	return after, nil
}

// DeleteUser deletes a user, by an admin only. It emits user-delete and closes the user's
// streams with 4003 user-deleted on every node.
func (m *Manager) DeleteUser(ctx context.Context, account data.User, id int64) error {
	if account.Type != data.UserAdmin {
		return ErrForbidden
	}
	err := pgx.BeginFunc(ctx, m.pool, func(tx pgx.Tx) error {
		if err := data.DeleteUser(ctx, tx, id); err != nil {
			return err
		}
		b, _ := json.Marshal(map[string]int64{"id": id})
		if _, err := data.AppendEvents(ctx, tx, []data.NewEvent{{Type: "user-delete", Data: b, Audience: signedIn}}); err != nil {
			return err
		}
		return data.AppendControl(ctx, tx, data.CloseStreams{UserIDs: []int64{id}, Code: 4003, Reason: "user-deleted"}.Event())
	})
	if errors.Is(err, data.ErrNotFound) {
		return ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	return nil
}
