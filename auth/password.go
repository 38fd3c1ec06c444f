package auth

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/alexedwards/argon2id"
)

// PasswordParams are the argon2id cost parameters.
type PasswordParams = argon2id.Params

// DefaultPasswordParams follow the OWASP recommendation for argon2id: 19 MiB, 2 passes, 1 lane.
var DefaultPasswordParams = PasswordParams{Memory: 19 * 1024, Iterations: 2, Parallelism: 1, SaltLength: 16, KeyLength: 32}

// HashLimits bound the argon2id computations of a node (register, login, user create): each
// takes the hash's memory (19 MiB by default) and a core for tens of milliseconds, so that
// without a bound a burst of requests costs the node gigabytes. The zero value of each field
// means its default.
type HashLimits struct {
	// Slots is how many computations run at once. Default: the number of hashes that fit in
	// Memory, but no more than GOMAXPROCS (a computation keeps one core busy, so more would
	// only share the cores and hold more memory), and at least 1:
	//
	//	slots = max(1, min(GOMAXPROCS, Memory / hash memory))
	Slots int
	// Memory is the budget of the computations running at once, in bytes (default a quarter
	// of the Go memory limit when GOMEMLIMIT sets one, else 256 MiB).
	Memory int64
	// Queue is how many computations may wait for a slot; one more is refused at once with
	// ErrBusy. Default: as many as the slots get through within Wait, judged by the time of
	// the hash the node makes as it starts, and between Slots and 64 × Slots:
	//
	//	queue = Slots × Wait / time of one hash
	Queue int
	// Wait is how long a computation waits for a slot before it is refused with ErrBusy
	// (default 1 s), so that a refused request is answered quickly and a waiting one is
	// answered within Wait plus a hash.
	Wait time.Duration
	// OnHash, if set, is called by every computation while it holds its slot, before it
	// runs: tests hold computations in their slots with it.
	OnHash func()
}

// defaultHashMemory is the memory budget of hashing when no Go memory limit is set.
const defaultHashMemory = 256 << 20

// withDefaults fills in the zero fields for hashes of params, one of which took took.
func (l HashLimits) withDefaults(params PasswordParams, took time.Duration) HashLimits {
	if l.Memory <= 0 {
		l.Memory = defaultHashMemory
		if limit := debug.SetMemoryLimit(-1); limit < math.MaxInt64 {
			l.Memory = limit / 4
		}
	}
	if l.Slots <= 0 {
		perHash := max(int64(params.Memory)*1024, 1)
		l.Slots = int(max(1, min(int64(runtime.GOMAXPROCS(0)), l.Memory/perHash)))
	}
	if l.Wait <= 0 {
		l.Wait = time.Second
	}
	if l.Queue <= 0 {
		perSlot := int64(l.Wait / max(took, time.Microsecond))
		l.Queue = l.Slots * int(min(max(perSlot, 1), 64))
	}
	return l
}

// busyRetry is the Retry-After of ErrBusy: a slot frees within a hash's time, but a client
// told to retry at once would only add to the crowd.
const busyRetry = time.Second

// HashStats count the argon2id computations of a Manager.
type HashStats struct {
	// Slots is how many may run at once; Queue how many may wait for one.
	Slots, Queue int
	// Running is how many run now; Peak the most that ever ran at once.
	Running, Peak int64
	// Total counts the computations run; Refused those refused with ErrBusy.
	Total, Refused int64
}

// hasher hashes and checks passwords, at most Slots at once.
type hasher struct {
	// Set at construction.
	params PasswordParams
	limits HashLimits
	dummy  string        // a hash to compare against for unknown names, so they cost the same time
	slots  chan struct{} // holds a value per computation running
	queue  chan struct{} // holds a value per computation running or waiting for a slot

	// Counters, updated atomically.
	running, peak, total, refused atomic.Int64
}

func newHasher(params PasswordParams, limits HashLimits) *hasher {
	// Once per Manager, before any request, outside the slots.
	start := time.Now()
	dummy, _ := argon2id.CreateHash("tidings: no such user", &params)
	limits = limits.withDefaults(params, time.Since(start))
	return &hasher{
		params: params,
		limits: limits,
		dummy:  dummy,
		slots:  make(chan struct{}, limits.Slots),
		queue:  make(chan struct{}, limits.Slots+limits.Queue),
	}
}

// run runs f in a slot: at once when one is free, after waiting in the queue otherwise, and
// not at all (ErrBusy) when the queue is full or no slot frees within the wait.
func (h *hasher) run(ctx context.Context, f func()) error {
	select {
	case h.queue <- struct{}{}:
	default:
		h.refused.Add(1)
		return limited(ErrBusy, busyRetry)
	}
	defer func() { <-h.queue }()
	t := time.NewTimer(h.limits.Wait)
	defer t.Stop()
	select {
	case h.slots <- struct{}{}:
	case <-t.C:
		h.refused.Add(1)
		return limited(ErrBusy, busyRetry)
	case <-ctx.Done():
		return fmt.Errorf("wait to check a password: %w", ctx.Err())
	}
	defer func() { <-h.slots }()

	n := h.running.Add(1)
	defer h.running.Add(-1)
	for p := h.peak.Load(); n > p && !h.peak.CompareAndSwap(p, n); p = h.peak.Load() {
	}
	h.total.Add(1)
	if h.limits.OnHash != nil {
		h.limits.OnHash()
	}
	f()
	return nil
}

func (h *hasher) hash(ctx context.Context, password string) (string, error) {
	var s string
	var err error
	if err := h.run(ctx, func() { s, err = argon2id.CreateHash(password, &h.params) }); err != nil {
		return "", err
	}
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return s, nil
}

// check reports whether password matches hash; an empty hash is an unknown user, checked
// against a dummy hash so that the answer takes as long. Its error is ErrBusy or the end of
// ctx.
func (h *hasher) check(ctx context.Context, password, hash string) (bool, error) {
	if hash == "" {
		hash = h.dummy
	}
	var ok bool
	var err error
	if err := h.run(ctx, func() { ok, err = argon2id.ComparePasswordAndHash(password, hash) }); err != nil {
		return false, err
	}
	return err == nil && ok && hash != h.dummy, nil
}

func (h *hasher) stats() HashStats {
	return HashStats{
		Slots: h.limits.Slots, Queue: h.limits.Queue, Running: h.running.Load(), Peak: h.peak.Load(),
		Total: h.total.Load(), Refused: h.refused.Load(),
	}
}
