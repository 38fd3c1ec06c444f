package realtime

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"tidings/data"
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
	// The ephemeral frames (ephemeral.go): once ephLive, after ready, the stream sends the
	// ring's frames after ephCursor.
	ephLive   bool
	ephCursor int64
	// marks are the presence nodes' marks, read with the log's bounds as a signed-in stream
	// starts: its presence frame waits for the view to be as new as they are.
	marks []data.PresenceMark
	// overSince is when the live stream was first seen more than MaxLag behind with its
	// oldest waiting event gone from the cache (zero: it is not).
	overSince time.Time
}

// run makes the stream's writes until it can park the stream (it returns parked) or the stream
// is over. The first run sends the session frame, then decides where the stream starts. Every
// run sends control replies, pings, the close, and events until the stream is current.
func (w *writer) run(first bool) (err error, parked bool) {
	ctx := w.ctx
	if first {
		if err := w.write(w.opts.SessionFrame); err != nil {
			return nil, false // the peer is gone; the reader sees it too
		}
		if w.opts.TokenFrame != nil {
			if err := w.write(w.opts.TokenFrame); err != nil {
				return nil, false
			}
			if w.tokenSent != nil {
				close(w.tokenSent) // the ping that proves it goes after it
			}
		}
		if r := w.sub.closeReason(); r != nil {
			return w.close(*r), false
		}
		if err := w.start(ctx); err != nil {
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
		if w.finalDue.Swap(false) {
			// Written by the writer itself before the close: a close asked meanwhile (the
			// control event of the very rotation FinalFrame makes, say) waits for it.
			if err := w.final(ctx); err != nil {
				return nil, false
			}
			w.sub.Close(w.opts.CloseAtReason)
			continue
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
		progressed, err := w.sendEphemeral()
		if err == nil && !progressed {
			progressed, err = w.step(ctx)
		}
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
	if !w.ready || w.held || len(s.controls) > 0 || s.pingDue.Load() || s.finalDue.Load() || s.done ||
		s.hub.head.Load() > w.cursor || w.ephemeralPending() || s.sub.closeReason() != nil {
		return false
	}
	s.parked = true
	return true
}

// start decides where the stream begins (docs/protocol.md section 2), from the database, never
// from the hub's head, which may lag it by any amount: live from the watermark when no
// lastEventId was given; a reset to the watermark when the client is ahead of it, or when
// retention pruned an event it has not seen; otherwise a replay up to the watermark, with
// ready at once when there is nothing to replay.
func (w *writer) start(ctx context.Context) error {
	after := w.opts.LastEventID
	// A signed-in stream reads the presence marks with the bounds, for its presence frame.
	presence := w.hub.presence != nil && w.opts.Viewer.SignedIn()
	var b data.Bounds
	if w.opts.Watermark == nil || after != nil || presence {
		st, err := w.hub.starts.read(ctx)
		if err != nil {
			return fmt.Errorf("read where the log stands: %w", err)
		}
		b, w.marks = st.bounds, st.marks
	}
	if w.opts.Watermark != nil {
		// Read with the session: the viewer and the control events it reflects agree.
		b.Watermark = *w.opts.Watermark
	}
	switch {
	case after == nil:
		w.cursor = b.Watermark
	case *after > b.Watermark || *after < b.PrunedThrough:
		return w.reset(b.Watermark)
	default:
		w.cursor = *after
	}
	w.readyAt = b.Watermark
	return w.maybeReady()
}

// reset tells the client to refetch its state, and continues after the watermark wm.
func (w *writer) reset(wm int64) error {
	if err := w.write(watermarkFrame("reset", wm)); err != nil {
		return err
	}
	w.cursor, w.readyAt = wm, wm
	return w.maybeReady()
}

// maybeReady sends ready once the replay has reached readyAt, and to a signed-in stream the
// presence frame after it.
func (w *writer) maybeReady() error {
	if w.ready || w.cursor < w.readyAt {
		return nil
	}
	w.ready = true
	p := w.hub.presence
	if p == nil || !w.opts.Viewer.SignedIn() {
		return w.write(watermarkFrame("ready", w.readyAt))
	}
	// ready and the presence frame leave in one write.
	inBurst := w.held
	w.hold()
	if err := w.write(watermarkFrame("ready", w.readyAt)); err != nil {
		return err
	}
	// Who is online, then every change after it (docs/protocol.md section 8).
	frame, seq, err := p.snapshotAfter(w.ctx, w.marks)
	if err != nil {
		return err
	}
	w.ephLive, w.ephCursor = true, seq
	if err := w.write(frame); err != nil {
		return err
	}
	if !inBurst {
		return w.release()
	}
	return nil
}

// step sends the next run of events, from the cache or, for ids older than it or newer than
// the hub has read while the replay needs them, from the table. It reports whether it made
// progress.
func (w *writer) step(ctx context.Context) (bool, error) {
	bufp := eventBufs.Get().(*[]*Event)
	defer eventBufs.Put(bufp)
	buf := *bufp
	limit := len(buf)
	if !w.ready {
		limit = int(min(int64(limit), w.readyAt-w.cursor))
	}
	n, head, tooOld := w.hub.read(w.cursor, buf[:limit])
	if w.ready {
		if err := w.checkLag(head, buf[:n], tooOld); err != nil {
			return false, err
		}
	}
	if tooOld || (n == 0 && !w.ready) {
		// The cache no longer holds the next event, or does not hold it yet (the hub lags
		// the watermark this replay runs to): the table does.
		return true, w.replayPage(ctx)
	}
	if n == 0 {
		return false, nil
	}
	w.hold()
	replay := ""
	if !w.ready {
		replay = "cache"
	}
	sent := 0
	var closeAs *CloseReason
	for _, e := range buf[:n] {
		if closeAs = w.sub.closedBy(e); closeAs != nil {
			break // nothing after the control event that ends the stream may leave
		}
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
	if closeAs != nil {
		w.sub.Close(*closeAs)
		return true, w.release()
	}
	if err := w.maybeReady(); err != nil {
		return false, err
	}
	return true, w.release()
}

// checkLag applies the lag rule to a live stream (docs/protocol.md section 5): more than MaxLag
// events behind the hub's head, the oldest of them waiting for SlowAfter, is too slow. waiting
// are the next events from the cache; tooOld says the next one has left the cache already,
// so its wait is counted from when the stream first found itself there.
func (w *writer) checkLag(head int64, waiting []*Event, tooOld bool) error {
	if head-w.cursor <= int64(w.cfg.MaxLag) {
		w.overSince = time.Time{}
		return nil
	}
	since := w.overSince
	switch {
	case !tooOld && len(waiting) > 0:
		since = waiting[0].At
	case since.IsZero():
		w.overSince = time.Now()
		return nil
	}
	if time.Since(since) >= w.cfg.SlowAfter {
		return errTooSlow
	}
	return nil
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

// replayPage sends one page of events read from the table, taking its turn with the other
// streams of the node that read the table.
func (w *writer) replayPage(ctx context.Context) error {
	release, err := w.hub.replaySlot(ctx)
	if err != nil {
		return err
	}
	rctx, cancel := w.hub.readCtx(ctx) // a black-holed connection fails the stream, in time
	evs, err := w.hub.store.After(rctx, w.cursor, w.hub.cfg.PageSize)
	cancel()
	release()
	if err != nil {
		return fmt.Errorf("replay after %d: %w", w.cursor, err)
	}
	if len(evs) == 0 || evs[0].ID != w.cursor+1 {
		// Retention pruned the next event, or someone deleted it: the client must resync.
		if w.sent || w.ready {
			return errPruned // mid-replay: the client resumes, then gets reset
		}
		return w.reset(w.readyAt)
	}
	if last := evs[len(evs)-1]; last.ID > w.hub.head.Load() {
		w.hub.noteSeen(last) // this stream is ahead of the hub
	}
	w.hold()
	sent := 0
	var closeAs *CloseReason
	for i, e := range evs {
		if !w.ready && e.ID > w.readyAt {
			break
		}
		if i > 0 && e.ID != evs[i-1].ID+1 {
			break // a hole: the next page starts at it, and says so
		}
		if data.IsControl(e.Type) {
			if closeAs = w.sub.closedBy(NewEvent(e)); closeAs != nil {
				break // nothing after the control event that ends the stream may leave
			}
		} else if w.opts.Viewer.canSeeEvent(e.Type, e.Audience) {
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
	if closeAs != nil {
		w.sub.Close(*closeAs)
		return w.release()
	}
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

// final sends the frame that FinalFrame returns, if any, asked within the write timeout.
func (w *writer) final(ctx context.Context) error {
	fctx, cancel := context.WithTimeout(ctx, w.cfg.WriteTimeout)
	frame := w.opts.FinalFrame(fctx)
	cancel()
	if frame == nil {
		return nil
	}
	return w.write(frame)
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
