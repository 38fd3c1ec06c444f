package realtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// errPruned means the events a stream needs next were removed by retention.
var errPruned = errors.New("realtime: events were pruned")

// eventBufs recycles the buffers streams copy cached events into, so an idle stream holds none.
var eventBufs = sync.Pool{New: func() any { b := make([]*Event, 256); return &b }}

// writer is the state of a stream's writes: owned by the running drive, or, while the stream
// is parked, by the hub under the stream's mu.
type writer struct {
	*stream
	cursor  int64 // the id of the last event consumed (sent, or skipped as not visible)
	readyAt int64 // the id up to which the stream replays before it sends ready
	ready   bool  // ready was sent: the stream is live
	sent    bool  // an event frame was written
	held    bool  // a burst is open: frames are held back until release
	frames  []byte
}

// run makes the stream's writes until it can park the stream (it returns parked) or the stream
// is over. The first run sends the session frame, then starts the replay from head. Every run
// sends control replies, pings, the close, and events until the stream is current.
func (w *writer) run(first bool, head int64) (err error, parked bool) {
	ctx := w.ctx
	if first {
		if err := w.write(w.opts.SessionFrame); err != nil {
			return nil, false // the peer is gone; the reader sees it too
		}
		if r := w.sub.closeReason(); r != nil {
			return w.close(*r), false
		}
		if err := w.start(ctx, head); err != nil {
			if ctx.Err() != nil {
				return nil, false
			}
			return w.fail(err), false
		}
	}
	for {
		if ctx.Err() != nil || w.cork.err() != nil {
			return nil, false // the reader or the server ended the stream, or the socket failed
		}
		for _, c := range w.takeControls() {
			if err := w.write(c); err != nil {
				return nil, false
			}
		}
		if r := w.sub.closeReason(); r != nil {
			return w.close(*r), false
		}
		if w.pingDue.Swap(false) {
			pctx, cancel := context.WithTimeout(ctx, w.cfg.WriteTimeout)
			err := w.conn.Ping(pctx)
			cancel()
			if err != nil {
				return nil, false // a dead peer: the connection is closed
			}
			w.ping.Reset(w.cfg.PingInterval)
			continue
		}
		if w.cork.backlogged() {
			// The end of a frame the hub began: the socket was full. Finish it before anything
			// else, so that whether the stream is too slow is judged, as for every write of the
			// writer, once the socket takes bytes again, and its close can get through.
			w.hold()
			if err := w.release(); err != nil {
				return nil, false
			}
			continue
		}
		progressed, err := w.step(ctx)
		if err != nil && ctx.Err() != nil {
			return nil, false
		}
		if err != nil {
			return w.fail(err), false
		}
		if progressed {
			continue
		}
		if w.park() {
			return nil, true
		}
	}
}

// park hands the stream's writes to the hub if the stream is current and has nothing else to
// send. The hub stores its head before it delivers to parked streams, and delivers under the
// stream's mu: so either the hub sees the stream parked and writes what is new, or this sees
// the new head and goes on.
func (w *writer) park() bool {
	s := w.stream
	s.mu.Lock()
	defer s.mu.Unlock()
	if !w.ready || w.held || len(s.controls) > 0 || s.pingDue.Load() || s.done ||
		s.hub.head.Load() > w.cursor || s.sub.closeReason() != nil {
		return false
	}
	s.parked = true
	return true
}

// start decides where the stream begins (PROTOCOL.md section 2): live from head when no
// lastEventId was given, a reset when the client is ahead of the log, otherwise a replay up to
// head, and sends ready at once when there is nothing to replay.
func (w *writer) start(ctx context.Context, head int64) error {
	after := w.opts.LastEventID
	switch {
	case after == nil:
		// Live from the current watermark (PROTOCOL.md section 2). The hub may not have read
		// the newest commits yet; the database says where "now" is. Without it, the hub's head
		// is the best there is.
		if wm, err := w.hub.store.Watermark(ctx); err == nil && wm > head {
			head = wm
		}
		w.cursor = head
	case *after <= head:
		w.cursor = *after
	default:
		// The hub may lag the database by a moment; only a client ahead of the database
		// itself is from another history.
		wm, err := w.hub.store.Watermark(ctx)
		if err != nil {
			return fmt.Errorf("read watermark: %w", err)
		}
		if *after > wm {
			return w.reset(head)
		}
		w.cursor = *after
		head = *after
	}
	w.readyAt = head
	return w.maybeReady()
}

// reset tells the client to refetch its state, and continues after head.
func (w *writer) reset(head int64) error {
	if err := w.write(watermarkFrame("reset", head)); err != nil {
		return err
	}
	w.cursor, w.readyAt = head, head
	return w.maybeReady()
}

// maybeReady sends ready once the replay has reached readyAt.
func (w *writer) maybeReady() error {
	if w.ready || w.cursor < w.readyAt {
		return nil
	}
	w.ready = true
	return w.write(watermarkFrame("ready", w.readyAt))
}

// step sends the next run of events, from the cache or, for ids older than it, from the table.
// It reports whether it made progress.
func (w *writer) step(ctx context.Context) (bool, error) {
	bufp := eventBufs.Get().(*[]*Event)
	defer eventBufs.Put(bufp)
	buf := *bufp
	limit := len(buf)
	if !w.ready {
		limit = int(min(int64(limit), w.readyAt-w.cursor))
	}
	n, head, tooOld := w.hub.read(w.cursor, buf[:limit])
	if tooOld {
		return true, w.replayPage(ctx)
	}
	if n == 0 {
		return false, nil
	}
	if w.ready && head-w.cursor > int64(w.cfg.MaxLag) && time.Since(buf[0].At) >= w.cfg.SlowAfter {
		return false, errTooSlow
	}
	w.hold()
	replay := ""
	if !w.ready {
		replay = "cache"
	}
	sent := 0
	for _, e := range buf[:n] {
		if e.visibleTo(w.opts.Viewer) {
			if err := w.cork.writeWire(e.Wire); err != nil {
				return false, errWriteFailed
			}
			sent++
		}
		w.cursor = e.ID
	}
	// Counted once per burst: shared counters touched per delivery would cost every socket.
	w.sent = w.sent || sent > 0
	w.hub.cfg.Metrics.sent(sent, buf[0].At, replay)
	clear(buf[:n])
	if err := w.maybeReady(); err != nil {
		return false, err
	}
	return true, w.release()
}

// hold opens a burst: frames written until release leave the process in one write, and every
// write of the burst must finish within the write timeout.
func (w *writer) hold() {
	if !w.held {
		w.cork.hold(w.cfg.WriteTimeout)
		w.held = true
	}
}

// release sends the burst.
func (w *writer) release() error {
	w.held = false
	if w.cork.release() != nil {
		return errWriteFailed
	}
	return nil
}

// replayPage sends one page of events read from the table.
func (w *writer) replayPage(ctx context.Context) error {
	limit := w.hub.cfg.PageSize
	evs, err := w.hub.store.After(ctx, w.cursor, limit)
	if err != nil {
		return fmt.Errorf("replay after %d: %w", w.cursor, err)
	}
	if len(evs) == 0 || evs[0].ID != w.cursor+1 {
		if w.sent || w.ready {
			return errPruned // mid-replay: the client resumes, then gets reset
		}
		return w.reset(w.readyAt)
	}
	w.hold()
	sent := 0
	for _, e := range evs {
		if !w.ready && e.ID > w.readyAt {
			break
		}
		if w.opts.Viewer.canSeeEvent(e.Type, e.Audience) {
			w.frames = AppendEventFrame(w.frames[:0], e)
			if err := w.cork.writeText(w.frames); err != nil {
				return errWriteFailed
			}
			sent++
		}
		w.cursor = e.ID
	}
	w.sent = w.sent || sent > 0
	w.hub.cfg.Metrics.sent(sent, time.Time{}, "table")
	w.frames = w.frames[:0]
	if err := w.maybeReady(); err != nil {
		return err
	}
	return w.release()
}

var (
	errTooSlow     = errors.New("realtime: client too slow")
	errWriteFailed = errors.New("realtime: write failed")
)

// fail ends the stream after err: a slow client, or history pruned in the middle of its
// replay, gets 4004 (it resumes, and then gets reset); a failing store gets 1011.
func (w *writer) fail(err error) error {
	switch {
	case errors.Is(err, errTooSlow), errors.Is(err, errPruned):
		return w.close(CloseTooSlow)
	case errors.Is(err, errWriteFailed):
		return nil // the socket is gone; nothing more can be said
	}
	w.close(CloseInternal)
	return err
}

// write sends one frame: within the open burst, or in a burst of its own.
func (w *writer) write(frame []byte) error {
	inBurst := w.held
	w.hold()
	if err := w.cork.writeText(frame); err != nil {
		return errWriteFailed
	}
	if inBurst {
		return nil
	}
	return w.release()
}

// close performs the closing handshake with r, bounded by the write timeout.
func (w *writer) close(r CloseReason) error {
	w.release() // nothing held back may stay behind the close frame
	w.hub.cfg.Metrics.closed(r)
	err := w.conn.Close(r.Code, r.Reason)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		w.cfg.Logger.Debug("close socket", "code", int(r.Code), "err", err)
	}
	return nil
}
