package realtime

import (
	"context"
	"errors"
	"fmt"
	"time"

	"tidings/data"
)

// defaultReadTimeout is HubConfig.ReadTimeout's default.
const defaultReadTimeout = 5 * time.Second

// The hub's reads of the event log go through readBounds and after: each has a deadline, so a
// connection black-holed by a failover (no RST: the read would wait for as long as TCP retries)
// fails the read in bounded time. pgx then closes that connection and the pool discards it, so
// the next read, at the next wake-up or poll, gets a fresh one. Until a read succeeds the hub
// says it is stalled (Stalled, /readyz, tidings_hub_read_ok).

// readCtx bounds one read of the log by ReadTimeout.
func (h *Hub) readCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, h.cfg.ReadTimeout)
}

// readBounds reads the log's bounds (and the time of event id) within ReadTimeout.
func (h *Hub) readBounds(ctx context.Context, id int64) (data.Bounds, error) {
	rctx, cancel := h.readCtx(ctx)
	defer cancel()
	b, err := h.store.Bounds(rctx, id)
	return b, h.readDone(ctx, rctx, err)
}

// startState is where the database stands for the streams that open at one moment, from one
// statement: the log's bounds and, on a node with presence, every live node's mark (the view's
// test in presence.go), so that presence costs a signed-in stream's start no read of its own.
type startState struct {
	bounds data.Bounds
	marks  []data.PresenceMark
}

// readStart reads the start state for opening streams (the hub's shared read, bounds.go).
func (h *Hub) readStart(ctx context.Context) (startState, error) {
	if p := h.presence; p != nil {
		b, marks, err := p.store.BoundsAndMarks(ctx, p.reapAfter)
		return startState{bounds: b, marks: marks}, err
	}
	b, err := h.store.Bounds(ctx, 0)
	return startState{bounds: b}, err
}

// after reads up to limit events after id `after` within ReadTimeout.
func (h *Hub) after(ctx context.Context, after int64, limit int) ([]data.Event, error) {
	rctx, cancel := h.readCtx(ctx)
	defer cancel()
	evs, err := h.store.After(rctx, after, limit)
	return evs, h.readDone(ctx, rctx, err)
}

// readDone records how a read that ran under rctx (from ctx) ended, and returns its error, which
// says so when the read ran out of time. A read cut short because the hub stops counts for
// nothing.
func (h *Hub) readDone(ctx, rctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		return err
	}
	timedOut := err != nil && errors.Is(rctx.Err(), context.DeadlineExceeded)
	h.stalled.Store(err != nil)
	h.cfg.Metrics.hubRead(err == nil, timedOut)
	if timedOut {
		return fmt.Errorf("no answer within the read timeout (%v): %w", h.cfg.ReadTimeout, err)
	}
	return err
}

// Stalled reports whether the hub's last read of the event log failed or ran out of time: until
// a read succeeds, the node delivers no new event.
func (h *Hub) Stalled() bool { return h.stalled.Load() }
