package auth

import (
	"fmt"
	"sync"

	"github.com/alexedwards/argon2id"
)

// PasswordParams are the argon2id cost parameters.
type PasswordParams = argon2id.Params

// DefaultPasswordParams follow the OWASP recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
var DefaultPasswordParams = PasswordParams{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// hasher hashes and checks passwords.
type hasher struct {
	params PasswordParams

	dummyOnce sync.Once
	dummy     string // a hash to compare against for unknown names, so they cost the same time
}

func (h *hasher) hash(password string) (string, error) {
	s, err := argon2id.CreateHash(password, &h.params)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return s, nil
}

// check reports whether password matches hash; an empty hash is an unknown user, checked
// against a dummy hash so that the answer takes as long.
func (h *hasher) check(password, hash string) bool {
	if hash == "" {
		h.dummyOnce.Do(func() { h.dummy, _ = h.hash("tidings: no such user") })
		argon2id.ComparePasswordAndHash(password, h.dummy)
		return false
	}
	ok, err := argon2id.ComparePasswordAndHash(password, hash)
	return err == nil && ok
}
