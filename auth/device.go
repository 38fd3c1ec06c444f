package auth

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"tidings/data"
)

// Device cookies (docs/protocol.md section 4.1), against account lockout by strangers: every
// successful register or login gives its user agent a device cookie naming that user, an
// opaque random token like a session's (NewToken), stored only as its SHA-256 hash with the
// user's id. A login for that user that presents it is not held by the name's limit, which
// strangers can exhaust, but by the device's own: 10 failures per 15 minutes. An opaque token
// rather than an HMAC needs no secret shared by the nodes, and is forgotten with its user.

// DefaultDeviceLifetime is how long a device cookie lives after the last sign-in that gave or
// renewed it, when Config.DeviceLifetime is 0.
const DefaultDeviceLifetime = 365 * 24 * time.Hour

// maxDevicesPerUser is how many device cookies of one user are kept: Discard forgets older
// ones, so that clients that never keep cookies do not grow the table without bound.
const maxDevicesPerUser = 32

// presented is a device cookie presented with a login, valid for the user logging in.
type presented struct {
	id    int64
	token Token
}

// presentedDevice returns the device behind token when it is unexpired and names u, else nil.
func (m *Manager) presentedDevice(ctx context.Context, token Token, u data.User, now time.Time) (*presented, error) {
	if token == "" || u.ID == 0 {
		return nil, nil
	}
	d, err := data.DeviceByTokenHash(ctx, m.pool, token.Hash())
	if errors.Is(err, data.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if d.UserID != u.ID || !now.Before(d.ExpiresAt) {
		return nil, nil
	}
	return &presented{id: d.ID, token: token}, nil
}

// signIn opens a session for a user in tx, and renews the device cookie presented (dev, nil
// for none) or makes a new one. Device rows are locked after the user row (through the
// foreign key), as doc.go orders.
func (m *Manager) signIn(ctx context.Context, tx pgx.Tx, userID int64, dev *presented, now time.Time) (SignIn, error) {
	s, token, err := m.newSession(ctx, tx, userID, nil, now)
	if err != nil {
		return SignIn{}, err
	}
	in := SignIn{Session: s, Token: token, DeviceExpires: now.Add(m.cfg.DeviceLifetime)}
	if dev != nil {
		err := data.RenewDevice(ctx, tx, dev.id, in.DeviceExpires)
		if err == nil {
			in.Device = dev.token
			return in, nil
		}
		if !errors.Is(err, data.ErrNotFound) { // else discarded meanwhile: a new one
			return SignIn{}, err
		}
	}
	in.Device = NewToken()
	if _, err := data.InsertDevice(ctx, tx, in.Device.Hash(), userID, in.DeviceExpires); err != nil {
		return SignIn{}, err
	}
	return in, nil
}
