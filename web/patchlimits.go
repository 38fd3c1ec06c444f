package web

import (
	"math"
	"net"
	"strconv"
	"sync"
	"time"
)

// The rate limits of PATCH /api/users/:id (docs/protocol.md section 4.1). Every change it makes is
// a user-update event that every signed-in stream receives, so an account may not make changes
// faster than a person renames, nor an address with many accounts. Both are kept in each
// node's memory.
const (
	// patchRate and patchBurst shape each account's bucket: the floor of docs/protocol.md, bursts
	// of 10 and 1 per second.
	patchRate  = 1.0
	patchBurst = 10
	// addrPatchRate and addrPatchBurst shape each client address's bucket, shared by the
	// accounts that change users from it. Loopback addresses have none: behind a local proxy
	// every client has one (set TIDINGS_TRUSTED_PROXIES), as for the stream cap.
	addrPatchRate  = 3.0
	addrPatchBurst = 30
)

// patchLimits are the token buckets of PATCH /api/users/:id, by account and by address. The
// zero value is ready to use.
type patchLimits struct {
	mu        sync.Mutex
	byAccount keyedBuckets[int64]  // guarded by mu
	byAddr    keyedBuckets[string] // guarded by mu
}

// take takes a token from account's bucket and from addr's (none when addr is ""), or from
// neither when one is empty; then it returns how long until both have a token again.
func (l *patchLimits) take(account int64, addr string, now time.Time) (wait time.Duration, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.byAccount.rate == 0 {
		l.byAccount = keyedBuckets[int64]{rate: patchRate, burst: patchBurst}
		l.byAddr = keyedBuckets[string]{rate: addrPatchRate, burst: addrPatchBurst}
	}
	wait = l.byAccount.wait(account, now)
	if addr != "" {
		wait = max(wait, l.byAddr.wait(addr, now))
	}
	if wait > 0 {
		return wait, false
	}
	l.byAccount.take(account, now)
	if addr != "" {
		l.byAddr.take(addr, now)
	}
	return 0, true
}

// patchLimitAddr is the address whose bucket a PATCH from addr counts against: none ("") for
// a loopback address.
func patchLimitAddr(addr string) string {
	if ip := net.ParseIP(addr); ip != nil && ip.IsLoopback() {
		return ""
	}
	return addr
}

// retryAfter is the Retry-After value for a wait: whole seconds, at least 1.
func retryAfter(wait time.Duration) string {
	return strconv.Itoa(max(1, int(math.Ceil(wait.Seconds()))))
}

// keyedBuckets are token buckets by key, each full when first used. A key whose bucket has
// refilled is as good as new and is forgotten, so that the map holds only the keys that spent
// tokens within the time a bucket takes to refill. Its owner guards it.
type keyedBuckets[K comparable] struct {
	// Set at construction.
	rate  float64 // tokens per second
	burst float64

	buckets map[K]bucket // the keys that spent tokens
	sweepAt int          // forget refilled buckets before the map grows past this many keys
}

// bucket is one key's tokens as of a time.
type bucket struct {
	tokens float64
	at     time.Time
}

// minSweep is the fewest keys a map holds before it is swept.
const minSweep = 1024

// tokens returns key's tokens at now.
func (k *keyedBuckets[K]) tokens(key K, now time.Time) float64 {
	b, ok := k.buckets[key]
	if !ok {
		return k.burst
	}
	return min(k.burst, b.tokens+max(0, now.Sub(b.at).Seconds())*k.rate)
}

// wait returns how long until key has a token: 0 when it has one now.
func (k *keyedBuckets[K]) wait(key K, now time.Time) time.Duration {
	t := k.tokens(key, now)
	if t >= 1 {
		return 0
	}
	return time.Duration((1 - t) / k.rate * float64(time.Second))
}

// take removes one token from key's bucket; call it only after wait said 0. Before it adds a
// key to a map of sweepAt keys, it forgets the buckets that have refilled and doubles sweepAt
// from what is left: one pass over the map per doubling, constant time per call on average.
func (k *keyedBuckets[K]) take(key K, now time.Time) {
	t := k.tokens(key, now)
	if _, ok := k.buckets[key]; !ok {
		if k.buckets == nil {
			k.buckets = map[K]bucket{}
		}
		if len(k.buckets) >= max(k.sweepAt, minSweep) {
			for other := range k.buckets {
				if k.tokens(other, now) >= k.burst {
					delete(k.buckets, other)
				}
			}
			k.sweepAt = 2 * len(k.buckets)
		}
	}
	k.buckets[key] = bucket{tokens: t - 1, at: now}
}
