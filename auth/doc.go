// Package auth keeps login sessions and users: cookies whose tokens are 256-bit random values
// stored only as SHA-256 hashes, rotation with a grace period, expiry, theft detection, login
// with argon2id password hashes and rate limits, and the rights over users.
//
// Every change that must close streams (a rotation, a logout, a theft, a type change, a
// deleted user) is written as a control event in the same transaction as the change, so that
// every node closes the streams concerned (PROTOCOL.md section 4).
package auth
