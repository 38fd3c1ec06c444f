package realtime

import (
	"context"
	"errors"
	"sync"
	"time"

	"tidings/data"
)

// sharedBounds reads the log's bounds for the streams that open at the same moment, one
// statement for all of them: a reconnect storm of 10,000 streams costs a few hundred reads, not
// 10,000.
//
// Sharing must never make an answer older than the caller: a caller may only take the result
// of a read that started after it arrived, or it could miss a commit it has already seen (a
// page rendered with a watermark, then a stream opened). So a caller joins the read that has
// not started yet (next), never the one in flight. One goroutine, run by the hub, makes the
// reads one after another: it takes next (from then on nobody joins it), reads, answers its
// callers, and takes the next one. Under a storm the callers that arrive during one read all
// share the following one; the chain from one read to the next is one goroutine, so it waits
// for the scheduler once per read, not once per hand-over.
type sharedBounds struct {
	// Set at construction.
	store   Store
	metrics *Metrics
	timeout time.Duration // bounds each read
	wake    chan struct{} // capacity 1: next has callers

	mu      sync.Mutex
	next    *boundsRead // guarded by mu: the read that arriving callers join; not started
	stopped bool        // guarded by mu: run has ended; reads fail at once
}

type boundsRead struct {
	done chan struct{} // closed once b and err are set
	b    data.Bounds
	err  error
}

// errHubStopped answers the reads of streams that open while the hub stops.
var errHubStopped = errors.New("realtime: the hub has stopped")

func newSharedBounds(store Store, timeout time.Duration, m *Metrics) *sharedBounds {
	return &sharedBounds{store: store, metrics: m, timeout: timeout, wake: make(chan struct{}, 1)}
}

// read returns the log's bounds as of a moment after the call began.
func (r *sharedBounds) read(ctx context.Context) (data.Bounds, error) {
	r.mu.Lock()
	if r.stopped {
		r.mu.Unlock()
		return data.Bounds{}, errHubStopped
	}
	c := r.next
	if c == nil {
		c = &boundsRead{done: make(chan struct{})}
		r.next = c
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	r.mu.Unlock()
	select {
	case <-c.done:
		return c.b, c.err
	case <-ctx.Done():
		return data.Bounds{}, ctx.Err()
	}
}

// run makes the shared reads until ctx ends; the callers still waiting then get an error.
func (r *sharedBounds) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			r.mu.Lock()
			c := r.next
			r.next, r.stopped = nil, true
			r.mu.Unlock()
			if c != nil {
				c.err = errHubStopped
				close(c.done)
			}
			return
		case <-r.wake:
		}
		r.mu.Lock()
		c := r.next
		r.next = nil // from here on, nobody joins c
		r.mu.Unlock()
		if c == nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, r.timeout)
		c.b, c.err = r.store.Bounds(rctx, 0)
		cancel()
		r.metrics.startRead()
		close(c.done)
	}
}
