package realtime

import (
	"context"
	"sync"
	"time"

	"tidings/data"
)

// sharedBounds reads the log's bounds for the streams that open at the same moment, one
// statement for all of them: a reconnect storm of 10,000 streams costs a few reads, not 10,000.
//
// Sharing must never make an answer older than the caller: a caller may only take the result
// of a read that started after it arrived, or it could miss a commit it has already seen (a
// page rendered with a watermark, then a stream opened). So a caller joins the read that has
// not started yet (next), never the one in flight; the caller that creates next leads it: it
// waits for the read in flight to end, closes next to newcomers, and reads.
type sharedBounds struct {
	store   Store
	timeout time.Duration // bounds each read
	turn    chan struct{} // capacity 1: held by the read in flight

	mu   sync.Mutex
	next *boundsRead // guarded by mu: the read that arriving callers join; not started
}

type boundsRead struct {
	done chan struct{} // closed once b and err are set
	b    data.Bounds
	err  error
}

func newSharedBounds(store Store, timeout time.Duration) *sharedBounds {
	return &sharedBounds{store: store, timeout: timeout, turn: make(chan struct{}, 1)}
}

// read returns the log's bounds as of a moment after the call began. A caller that leaves
// on ctx does not stop the read for the others: the leader's read is bounded by the timeout.
func (r *sharedBounds) read(ctx context.Context) (data.Bounds, error) {
	r.mu.Lock()
	c := r.next
	lead := c == nil
	if lead {
		c = &boundsRead{done: make(chan struct{})}
		r.next = c
	}
	r.mu.Unlock()
	if !lead {
		select {
		case <-c.done:
			return c.b, c.err
		case <-ctx.Done():
			return data.Bounds{}, ctx.Err()
		}
	}
	// The leader waits for the read in flight (at most r.timeout), then starts this one:
	// from here on, nobody joins it.
	r.turn <- struct{}{}
	r.mu.Lock()
	r.next = nil
	r.mu.Unlock()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.timeout)
	c.b, c.err = r.store.Bounds(rctx, 0)
	cancel()
	<-r.turn
	close(c.done)
	return c.b, c.err
}
