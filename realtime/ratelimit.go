package realtime

import "time"

// tokenBucket is a rate limit that starts full. Only the reader goroutine of a stream uses it.
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
