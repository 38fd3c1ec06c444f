package realtime

import (
	"context"
	"errors"
	"sync"
	"time"
)

// sharedRead is a read of the database's "now" shared by the streams that open at the same
// moment, one statement for all of them: a reconnect storm of 10,000 streams costs a few hundred
// reads, not 10,000. The hub shares its start state through one: the log's bounds and, with
// presence, the nodes' marks (hub_reads.go).
//
// Sharing must never make an answer older than the caller: a caller may only take the result
// of a read that started after it arrived, or it could miss a commit it has already seen (a
// page rendered with a watermark, then a stream opened). So a caller joins the read that has
// not started yet (next), never the one in flight. One goroutine makes the reads one after
// another: it takes next (from then on nobody joins it), reads, answers its callers, and takes
// the next one. Under a storm the callers that arrive during one read all share the following
// one; the chain from one read to the next is one goroutine, so it waits for the scheduler once
// per read, not once per hand-over.
type sharedRead[T any] struct {
	// Set at construction.
	fetch   func(context.Context) (T, error)
	timeout time.Duration // bounds each read
	counted func()        // called after each read; may be nil
	wake    chan struct{} // capacity 1: next has callers

	mu      sync.Mutex
	next    *readCall[T] // guarded by mu: the read that arriving callers join; not started
	stopped bool         // guarded by mu: run has ended; reads fail at once
}

// readCall is one shared read: its callers wait for done.
type readCall[T any] struct {
	done chan struct{} // closed once v and err are set
	v    T
	err  error
}

// errHubStopped answers the reads of streams that open while the hub stops.
var errHubStopped = errors.New("realtime: the hub has stopped")

func newSharedRead[T any](timeout time.Duration, fetch func(context.Context) (T, error), counted func()) *sharedRead[T] {
	return &sharedRead[T]{fetch: fetch, timeout: timeout, counted: counted, wake: make(chan struct{}, 1)}
}

// read returns what fetch returns as of a moment after the call began.
func (r *sharedRead[T]) read(ctx context.Context) (T, error) {
	return r.join().wait(ctx)
}

// join enters the caller in the next read.
func (r *sharedRead[T]) join() *readCall[T] {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stopped {
		c := &readCall[T]{done: make(chan struct{}), err: errHubStopped}
		close(c.done)
		return c
	}
	c := r.next
	if c == nil {
		c = &readCall[T]{done: make(chan struct{})}
		r.next = c
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return c
}

// wait returns the read's result, once it has one.
func (c *readCall[T]) wait(ctx context.Context) (T, error) {
	select {
	case <-c.done:
		return c.v, c.err
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}

// run makes the shared reads until ctx ends; the callers still waiting then get an error.
func (r *sharedRead[T]) run(ctx context.Context) {
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
		c.v, c.err = r.fetch(rctx)
		cancel()
		if r.counted != nil {
			r.counted()
		}
		close(c.done)
	}
}
