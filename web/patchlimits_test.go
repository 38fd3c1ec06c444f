package web

import (
	"testing"
	"time"
)

func TestPatchLimits(t *testing.T) {
	t.Parallel()
	var l patchLimits
	t0 := time.Unix(1000, 0)
	for i := range 10 {
		if _, ok := l.take(1, "", t0); !ok {
			t.Fatalf("change %d of the burst of 10 refused", i+1)
		}
	}
	if wait, ok := l.take(1, "", t0); ok || wait != time.Second || retryAfter(wait) != "1" {
		t.Fatalf("11th change at once: got ok=%v, wait %v; want refused, 1s", ok, wait)
	}
	if _, ok := l.take(2, "", t0); !ok {
		t.Fatal("another account's first change refused")
	}
	if _, ok := l.take(1, "", t0.Add(time.Second)); !ok {
		t.Fatal("a change a second later refused")
	}
	if _, ok := l.take(1, "", t0.Add(1500*time.Millisecond)); ok {
		t.Fatal("a second change within that second allowed")
	}

	// One address with many accounts: 30 at once, then 3 per second.
	const addr = "192.0.2.1"
	for i := range 30 {
		if _, ok := l.take(int64(100+i/10), addr, t0); !ok {
			t.Fatalf("change %d of the address's burst of 30 refused", i+1)
		}
	}
	wait, ok := l.take(200, addr, t0)
	if ok || wait < 333*time.Millisecond || wait > 334*time.Millisecond || retryAfter(wait) != "1" {
		t.Fatalf("31st change from one address: got ok=%v, wait %v; want refused, a third of a second", ok, wait)
	}
	// The refusal took no token from the account: it has its whole burst elsewhere.
	for i := range 10 {
		if _, ok := l.take(200, "192.0.2.2", t0); !ok {
			t.Fatalf("change %d of an account refused at one address, from another address, refused", i+1)
		}
	}
	if _, ok := l.take(300, addr, t0.Add(time.Second/3)); !ok {
		t.Fatal("the address's change a third of a second later refused")
	}
}

// TestPatchLimitsForgetRefilledBuckets checks that the buckets of keys that have refilled are
// dropped when the map grows, so that memory follows the recently active keys only.
func TestPatchLimitsForgetRefilledBuckets(t *testing.T) {
	t.Parallel()
	var l patchLimits
	t0 := time.Unix(1000, 0)
	// A sweep at minSweep keys finds none refilled: the next is at twice as many.
	for i := range 2 * minSweep {
		l.take(int64(i), "", t0)
	}
	if n := len(l.byAccount.buckets); n != 2*minSweep {
		t.Fatalf("got %d buckets, want %d: none has refilled yet", n, 2*minSweep)
	}
	l.take(-1, "", t0.Add(time.Second)) // a bucket missing one token has refilled
	if n := len(l.byAccount.buckets); n != 1 {
		t.Fatalf("got %d buckets once the others refilled, want 1", n)
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	for wait, want := range map[time.Duration]string{time.Millisecond: "1", time.Second: "1", 1200 * time.Millisecond: "2", 0: "1"} {
		if got := retryAfter(wait); got != want {
			t.Errorf("retryAfter(%v): got %q, want %q", wait, got, want)
		}
	}
}
