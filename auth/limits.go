package auth

import (
	"context"
	"errors"
	"sync"
	"time"
)

// The limits of register and login (docs/protocol.md section 4.1).
const (
	loginWindow          = 15 * time.Minute
	maxFailuresPerName   = 10  // in the database, shared by every node
	maxFailuresPerDevice = 10  // in the database: a device cookie's own failures for its user
	maxFailuresPerAddr   = 100 // in each node's memory
	maxRegistersPerAddr  = 20  // per registerWindow, in each node's memory
	registerWindow       = time.Minute
)

// limitError is a refusal that says when to try again.
type limitError struct {
	err   error
	after time.Duration
}

func (e *limitError) Error() string { return e.err.Error() }
func (e *limitError) Unwrap() error { return e.err }

// limited is err, with the time after which trying again may pass (at least a second).
func limited(err error, after time.Duration) error {
	return &limitError{err: err, after: max(after, time.Second)}
}

// RetryAfter reports how long a client refused with err should wait before it tries again,
// when err says so (ErrRateLimited, ErrRegisterLimited, ErrBusy).
func RetryAfter(err error) (time.Duration, bool) {
	var l *limitError
	if errors.As(err, &l) {
		return l.after, true
	}
	return 0, false
}

// buckets are token buckets, one per key (a client address), in memory: each holds up to
// capacity tokens and gains capacity of them per window. An attempt takes a token before its
// costly work and gives it back when that work turns out not to count (a successful login);
// a bucket is never below zero, so a burst refused at zero costs its address nothing later.
type buckets struct {
	// Set at construction.
	capacity float64
	perNano  float64 // tokens gained per nanosecond

	mu        sync.Mutex
	byKey     map[string]*bucket // guarded by mu; full buckets may be forgotten
	nextSweep int                // guarded by mu: the size of byKey at which full buckets are forgotten
}

type bucket struct {
	tokens float64
	last   time.Time
}

// minSweep is the number of buckets below which full ones are kept.
const minSweep = 10000

func newBuckets(capacity int, window time.Duration) *buckets {
	return &buckets{
		capacity:  float64(capacity),
		perNano:   float64(capacity) / float64(window),
		byKey:     map[string]*bucket{},
		nextSweep: minSweep,
	}
}

func (l *buckets) refillLocked(b *bucket, now time.Time) {
	if now.After(b.last) {
		b.tokens = min(l.capacity, b.tokens+float64(now.Sub(b.last))*l.perNano)
		b.last = now
	}
}

// take takes a token of key; when there is none it takes nothing and says how long until
// there is one.
func (l *buckets) take(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.byKey[key]
	if !ok {
		l.sweepLocked(now)
		b = &bucket{tokens: l.capacity, last: now}
		l.byKey[key] = b
	}
	l.refillLocked(b, now)
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.perNano)
	}
	b.tokens--
	return true, 0
}

// giveBack returns a token that take took.
func (l *buckets) giveBack(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if b, ok := l.byKey[key]; ok {
		l.refillLocked(b, now)
		b.tokens = min(l.capacity, b.tokens+1)
	}
}

// sweepLocked forgets the full buckets once there are many, so that memory follows the
// addresses that are limited, not all that ever came; the next sweep waits until the map has
// doubled, so that sweeping costs O(1) per new key.
func (l *buckets) sweepLocked(now time.Time) {
	if len(l.byKey) < l.nextSweep {
		return
	}
	for k, b := range l.byKey {
		if l.refillLocked(b, now); b.tokens >= l.capacity {
			delete(l.byKey, k)
		}
	}
	l.nextSweep = max(minSweep, 2*len(l.byKey))
}

// releaseTimeout bounds giving back a reserved attempt, which must happen even when the
// request's context has ended.
const releaseTimeout = 5 * time.Second

// detached is ctx without its cancellation, bounded by releaseTimeout.
func detached(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
}
