package realtime

import (
	"sync/atomic"
)

// The ephemeral path (docs/protocol.md section 8): presence changes and signals reach signed-in
// streams after their ready, through a ring of frames beside the event cache. Nothing here has
// an event id, and nothing here waits for the event log.

// ephFrame is one presence-change or signal frame.
type ephFrame struct {
	payload  []byte // the frame's JSON
	presence bool   // a presence change: a stream must not miss one; a signal it may
}

// ephRing holds the most recent ephemeral frames, numbered from 1. Its owner (Presence) guards
// it with its mu; seq is stored under that mu and read without it.
type ephRing struct {
	seq          atomic.Int64 // the newest frame's number
	frames       []ephFrame   // frames[n%len] holds frame n
	oldest       int64        // the oldest frame still held (seq+1 when none)
	lostPresence int64        // the newest presence change that left the ring
}

// ephRingSize is how many frames the ring holds: a stream that falls further behind misses
// signals (best effort), or is closed as too slow when it would miss a presence change.
const ephRingSize = 4096

func newEphRing() ephRing {
	return ephRing{frames: make([]ephFrame, ephRingSize), oldest: 1}
}

// appendLocked adds a frame and returns its number.
func (r *ephRing) appendLocked(f ephFrame) int64 {
	n := r.seq.Load() + 1
	if n-r.oldest >= int64(len(r.frames)) {
		if old := r.frames[r.oldest%int64(len(r.frames))]; old.presence {
			r.lostPresence = r.oldest
		}
		r.oldest++
	}
	r.frames[n%int64(len(r.frames))] = f
	r.seq.Store(n)
	return n
}

// readLocked copies into buf the frames after cursor, as many as fit, and returns how many,
// and the cursor to continue from. lost says that a presence change after cursor left the ring
// already: the stream cannot be brought up to date (signals that left it are skipped).
func (r *ephRing) readLocked(cursor int64, buf []ephFrame) (n int, next int64, lost bool) {
	if cursor+1 < r.oldest {
		if r.lostPresence > cursor {
			return 0, cursor, true
		}
		cursor = r.oldest - 1
	}
	for seq := r.seq.Load(); cursor < seq && n < len(buf); n++ {
		cursor++
		buf[n] = r.frames[cursor%int64(len(r.frames))]
	}
	return n, cursor, false
}

// ephPage is a run of ephemeral frames as the pump writes them to parked streams: their
// WebSocket frames back to back.
type ephPage struct {
	first, last int64 // the frames' numbers
	wire        []byte
	offs        []int // offs[i] is where frame first+i starts in wire; offs[last-first+1] is len(wire)
}

// deliverEphemeral writes the frames of p that the parked stream has not sent, if the socket
// takes them without blocking; otherwise (or when the stream is behind p) it starts a drive,
// which reads the ring itself.
func (s *stream) deliverEphemeral(p *ephPage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.parked || s.done {
		return
	}
	w := s.w
	switch {
	case w.ephCursor >= p.last:
		return
	case w.ephCursor+1 < p.first:
		s.unparkLocked()
		return
	}
	from := p.offs[w.ephCursor+1-p.first]
	written, backlog, err := s.cork.tryWrite(p.wire[from:])
	if err != nil || !written {
		s.unparkLocked()
		return
	}
	w.ephCursor = p.last
	if backlog {
		s.unparkLocked()
	}
}

// sendEphemeral writes the ephemeral frames the live stream has not sent yet, and reports
// whether there were any. A stream that would miss a presence change is too slow.
func (w *writer) sendEphemeral() (bool, error) {
	p := w.hub.presence
	if !w.ephLive || p.ring.seq.Load() <= w.ephCursor {
		return false, nil
	}
	var buf [64]ephFrame
	p.mu.Lock()
	n, next, lost := p.ring.readLocked(w.ephCursor, buf[:])
	p.mu.Unlock()
	if lost {
		return false, errTooSlow
	}
	old := w.ephCursor
	if n == 0 { // only signals the stream was too slow for: skipped
		w.ephCursor = next
		return next > old, nil
	}
	w.hold()
	for _, f := range buf[:n] {
		if err := w.cork.writeText(f.payload); err != nil {
			return false, errWriteFailed
		}
	}
	w.ephCursor = next
	return true, w.release()
}

// ephemeralPending reports whether the live stream has ephemeral frames to send.
func (w *writer) ephemeralPending() bool {
	return w.ephLive && w.hub.presence.ring.seq.Load() > w.ephCursor
}
