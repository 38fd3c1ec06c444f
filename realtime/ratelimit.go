package realtime

import (
	"sync"
	"time"
)

// tokenBucket is a rate limit that starts full. Its owner guards it.
type tokenBucket struct {
	rate   float64 // tokens per second
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int, now time.Time) tokenBucket {
	return tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// available refills the bucket and reports whether a token is there, without taking it.
func (b *tokenBucket) available(now time.Time) bool {
	if elapsed := now.Sub(b.last).Seconds(); elapsed > 0 {
		b.tokens = min(b.burst, b.tokens+elapsed*b.rate)
		b.last = now
	}
	return b.tokens >= 1
}

// take removes one token; call it only after available said yes.
func (b *tokenBucket) take() { b.tokens-- }

// give returns a token that take removed, up to the burst.
func (b *tokenBucket) give() { b.tokens = min(b.burst, b.tokens+1) }

// accountBuckets are the publish token buckets of accounts, shared by all their streams on a
// node.
type accountBuckets struct {
	mu      sync.Mutex
	buckets map[int64]*tokenBucket // guarded by mu
}

// available reports whether account id may publish now, creating its full bucket if needed.
func (a *accountBuckets) available(id int64, rate float64, burst int, now time.Time) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.buckets == nil {
		a.buckets = map[int64]*tokenBucket{}
	}
	b, ok := a.buckets[id]
	if !ok {
		if len(a.buckets) >= 10000 {
			// Forget accounts whose buckets have refilled: they are as good as new.
			for other, ob := range a.buckets {
				if ob.available(now); ob.tokens >= ob.burst {
					delete(a.buckets, other)
				}
			}
		}
		nb := newTokenBucket(rate, burst, now)
		b = &nb
		a.buckets[id] = b
	}
	return b.available(now)
}

// take removes a token from account id's bucket.
func (a *accountBuckets) take(id int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if b, ok := a.buckets[id]; ok {
		b.take()
	}
}

// give returns a token to account id's bucket.
func (a *accountBuckets) give(id int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if b, ok := a.buckets[id]; ok {
		b.give()
	}
}
