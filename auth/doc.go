// Package auth keeps login sessions and users: cookies whose tokens are 256-bit random values
// stored only as SHA-256 hashes, rotation with a grace period, expiry, theft detection, login
// with argon2id password hashes (at most a bounded number at once, password.go), the limits of
// register and login (limits.go, reserved before any hashing so that they hold under parallel
// attempts), device cookies (device.go), and the rights over users.
//
// Every change that must close streams (a rotation, a logout, a theft, a type change, a
// deleted user) is written as a control event in the same transaction as the change, so that
// every node closes the streams concerned (docs/protocol.md section 4).
//
// # Lock order
//
// Every transaction of this package takes its locks in one order, so that no two of them ever
// wait for each other (a deadlock that PostgreSQL would break only after deadlock_timeout,
// while every event writer of the node waits behind the counter):
//
//  1. the user row: FOR SHARE to act on the user's sessions (Resolve, Logout), FOR UPDATE to
//     change the user (UpdateUser) or delete it (DeleteUser, whose cascade then takes its
//     sessions); inserting a session takes FOR KEY SHARE through its foreign key (Login);
//  2. session rows, several in increasing id order (data.LockSessions); a row found by its
//     token is read without a lock first, then locked after its user and read again; a
//     device row (device.go) is renewed after its user too, in a sign-in that holds no
//     other session or device row;
//  3. the event log's counter row, taken by every append (user-update, user-delete and the
//     control events): appends come last, after every other lock, as docs/design.md asks of
//     every caller of publish_event.
//
// A new row (a user being created, a fresh session) is invisible to others and never waited
// for. Discard deletes old sessions in one statement outside this order: it appends nothing.
//
// Because a session's user and row are locked before Resolve reads the watermark, and every
// control event about them is appended under those locks, Resolution.Watermark splits those
// events into the ones the resolution reflects and the ones it does not.
package auth
