package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"log/slog"
)

// Token is a session's secret, as the cookie carries it: 32 random bytes, base64url.
type Token string

// NewToken returns a fresh random token.
func NewToken() Token {
	var b [32]byte
	rand.Read(b[:]) // never fails (crypto/rand panics rather than return short)
	return Token(base64.RawURLEncoding.EncodeToString(b[:]))
}

// Hash is what the server stores and looks up: SHA-256 of the token.
func (t Token) Hash() []byte {
	h := sha256.Sum256([]byte(t))
	return h[:]
}

// LogValue keeps tokens out of logs.
func (t Token) LogValue() slog.Value { return slog.StringValue("[redacted]") }

// String keeps tokens out of formatted output.
func (t Token) String() string { return "[redacted]" }

// GoString keeps tokens out of %#v output.
func (t Token) GoString() string { return "[redacted]" }
