package data

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// MaxKeyLen is the longest idempotency key, in bytes.
const MaxKeyLen = 255

// DefaultKeyWindow is how long an idempotency key is remembered when PublisherConfig.KeyWindow
// is 0.
const DefaultKeyWindow = 24 * time.Hour

// IdempotencyKey makes a publish safe to retry: a call whose key was stored with events within
// the key window appends nothing and is answered with the ids of those events.
type IdempotencyKey struct {
	// Scope says whose key it is ("api" for the API key, "user:7" for an account): keys of
	// different scopes never meet. At most 64 bytes.
	Scope string
	// Key is the client's key (ValidKey).
	Key string
	// Request is a digest of what the client asked. The same key with another request is
	// refused with ErrKeyReused rather than answered with the ids of something else.
	Request [32]byte
}

// ErrKeyReused is returned when an idempotency key comes back with another request than the one
// it was first stored with.
var ErrKeyReused = errors.New("data: idempotency key reused for another request")

// ErrInvalidKey is returned for an idempotency key that ValidKey refuses.
var ErrInvalidKey = errors.New("data: invalid idempotency key")

// ValidKey reports whether key may be an idempotency key: 1 to MaxKeyLen bytes of ASCII
// letters, digits and "-._~:+/=" (enough for UUIDs, ULIDs, base64 and "order-7:try-2").
func ValidKey(key string) bool {
	if len(key) == 0 || len(key) > MaxKeyLen {
		return false
	}
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '-' || c == '.' || c == '_' || c == '~' || c == ':' || c == '+' || c == '/' || c == '=':
		default:
			return false
		}
	}
	return true
}

func (k IdempotencyKey) validate() error {
	if !ValidKey(k.Key) {
		return fmt.Errorf("%w: 1 to %d bytes of letters, digits and -._~:+/=", ErrInvalidKey, MaxKeyLen)
	}
	if len(k.Scope) == 0 || len(k.Scope) > 64 {
		return fmt.Errorf("%w: scope %q", ErrInvalidKey, k.Scope)
	}
	return nil
}

// keyDiscardBatch is how many keys one discard transaction deletes at most.
const keyDiscardBatch = 10000

// DiscardKeys deletes the idempotency keys older than the key window, in transactions of at
// most 10,000 keys, and returns how many it deleted. Keys that old are already ignored by
// publishes; this only bounds the table.
func (p *Publisher) DiscardKeys(ctx context.Context) (int64, error) {
	var total int64
	for {
		tag, err := p.pool.Exec(ctx, `
			DELETE FROM publish_keys WHERE (scope, key) IN (
				SELECT scope, key FROM publish_keys WHERE created <= now() - $1::interval LIMIT $2)`,
			p.cfg.KeyWindow, keyDiscardBatch)
		if err != nil {
			return total, fmt.Errorf("discard idempotency keys: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < keyDiscardBatch {
			return total, nil
		}
	}
}
