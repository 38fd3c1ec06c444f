package main

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"tidings/realtime/client"
)

// What a presence run waits for, at most, before it counts an expected arrival as missed.
const arrivalDeadline = 5 * time.Second

// States of an expectation's count beyond the arrivals still awaited (> 0) and none left (0).
const (
	expired   = -1 // its deadline passed; what was awaited then was counted missed
	refused   = -2 // a signal the server refused: nothing arrives
	uncertain = -3 // a signal whose fate Signal could not tell: arrivals are not counted
)

// expect is what an action makes the generator wait for: one arrival at each of some streams,
// by a deadline.
type expect struct {
	base     time.Time    // what arrivals are timed from; set before any stream can see it
	deadline time.Time    // set before the expectation is tracked
	rem      atomic.Int64 // arrivals awaited, or a state above
}

// await adds one arrival to wait for, unless the expectation is settled (complete, expired or
// refused): it reports whether it did.
func (e *expect) await(fresh bool) bool {
	for {
		r := e.rem.Load()
		if r < 0 || (r == 0 && !fresh) {
			return false
		}
		if e.rem.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

// arrive takes one awaited arrival: ok when it was awaited, late when it came after the
// deadline (and was counted missed then); neither for a refused or uncertain signal.
func (e *expect) arrive() (ok, late bool) {
	for {
		r := e.rem.Load()
		switch {
		case r == expired:
			return false, true
		case r <= 0:
			return false, false
		case e.rem.CompareAndSwap(r, r-1):
			return true, false
		}
	}
}

// expire settles an expectation whose deadline passed and returns how many awaited arrivals
// never came.
func (e *expect) expire() int64 {
	for {
		r := e.rem.Load()
		if r <= 0 {
			return 0
		}
		if e.rem.CompareAndSwap(r, expired) {
			return r
		}
	}
}

// settled reports whether nothing more is awaited.
func (e *expect) settled() bool { return e.rem.Load() <= 0 }

// change is a user going online (a join) or offline (a leave), awaited as a presence-change
// at every stream that was watching. Its base is the join's dial, or the end of the grace
// after the leave.
type change struct {
	expect
	user   int
	online bool
}

// sig is a typing signal, awaited at every stream that was watching, the sender's included.
type sig struct {
	expect
	from int
}

// pstream is one stream of a presence run and what it has been told: the users it believes
// online, and the changes and signals it has yet to receive.
type pstream struct {
	// Set at construction.
	run  *presenceRun
	idx  int // its index, for the histogram shards
	user int // the index of its user
	node int
	hc   *http.Client

	// Owned by whoever starts and stops it: the action of its user, or the storm.
	c      *client.Client
	cancel func()
	done   sync.WaitGroup

	snapshots    atomic.Int64 // presence frames received
	account      atomic.Bool  // a session frame named an account
	readied      atomic.Bool  // a ready frame came
	stormReadyNs atomic.Int64 // during a storm: from its start to the stream's presence frame

	mu      sync.Mutex
	gone    bool            // guarded by mu: its user left; it no longer watches
	live    bool            // guarded by mu: connected, since its last presence frame
	liveAt  time.Time       // guarded by mu: when that frame came
	watched bool            // guarded by mu: it is among the run's watchers
	view    []bool          // guarded by mu: by user index, online as far as it was told
	online  int             // guarded by mu: the trues in view
	pending map[int]*change // guarded by mu: by user index, the change it awaits
	sigs    map[int][]*sig  // guarded by mu: by sender's index, the signals it awaits, oldest first
}

// presenceFrame takes the stream's presence frame, which replaces its view: what it awaited
// and now has is settled without a time (the frame may have been made before or after the
// change), and a change in flight that the frame does not show yet is awaited.
func (ps *pstream) presenceFrame(online []int64) {
	r := ps.run
	if !ps.watching() {
		return // its user left
	}
	ps.mu.Lock()
	if ps.gone {
		ps.mu.Unlock()
		return
	}
	ps.live, ps.liveAt = true, time.Now()
	clear(ps.view)
	ps.online = 0
	for _, id := range online {
		if u, ok := r.byID[id]; ok && !ps.view[u] {
			ps.view[u] = true
			ps.online++
		}
	}
	for u, ch := range ps.pending {
		if ps.view[u] == ch.online {
			ch.arrive()
			delete(ps.pending, u)
		}
	}
	for u, pu := range r.users {
		if ch := pu.cur.Load(); ch != nil && ps.pending[u] == nil && ps.view[u] != ch.online && ch.await(false) {
			ps.pending[u] = ch
		}
	}
	ps.mu.Unlock()
	if r.storming.Load() {
		ps.stormReadyNs.CompareAndSwap(0, max(1, time.Now().UnixNano()-r.stormStart.Load()))
	}
	ps.snapshots.Add(1)
}

// watching makes the stream one of the run's watchers, unless its user left, and reports
// whether it is one.
func (ps *pstream) watching() bool {
	r := ps.run
	r.mu.Lock()
	defer r.mu.Unlock()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.gone {
		return false
	}
	if !ps.watched {
		ps.watched = true
		r.watchers[ps] = struct{}{}
	}
	return true
}

// presenceChange takes a presence-change frame: the awaited change, timed; a user of another
// run, ignored; anything else (during a storm, a repeat of what the stream was told, or a
// change the generator did not make) is a flap.
func (ps *pstream) presenceChange(id int64, online bool) {
	r := ps.run
	now := time.Now()
	u, ok := r.byID[id]
	if !ok {
		r.otherChanges.Add(1)
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.gone {
		return
	}
	was := ps.view[u]
	if was != online {
		ps.view[u] = online
		if online {
			ps.online++
		} else {
			ps.online--
		}
	}
	if r.storming.Load() {
		r.stormFlaps.Add(1)
		r.flaps.Add(1)
		return
	}
	intent := r.users[u].cur.Load()
	if was == online || ps.snapshots.Load() == 0 || intent == nil || intent.online != online {
		r.flaps.Add(1)
		return
	}
	ch := ps.pending[u]
	delete(ps.pending, u)
	if ch != intent {
		return // toward what the generator did, at a stream that was not watching when it began
	}
	switch arrived, late := ch.arrive(); {
	case late:
		r.lateChanges.Add(1)
	case arrived && now.Before(ch.base):
		r.earlyOffline.Add(1) // offline before the grace ended
	case arrived:
		r.changesSeen.Add(1)
		kind := joinTimes
		if !online {
			kind = leaveTimes
		}
		r.record(kind, ps.idx, now.Sub(ch.base))
	}
}

// signal takes a signal frame: the oldest signal awaited from its sender, timed; one that
// nobody awaited counts as unexpected, or as late when it follows a missed one.
func (ps *pstream) signal(s client.Signal) {
	r := ps.run
	now := time.Now()
	u, ok := r.byID[s.From]
	if !ok || s.Type != "typing" {
		r.unexpectedSignals.Add(1)
		return
	}
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if ps.gone {
		return
	}
	q := ps.sigs[u]
	skipped := false
	for len(q) > 0 && (q[0].rem.Load() == refused || q[0].rem.Load() == expired) {
		skipped = skipped || q[0].rem.Load() == expired
		q = q[1:]
	}
	if len(q) == 0 {
		delete(ps.sigs, u)
		switch {
		case skipped:
			r.lateSignals.Add(1)
		case r.users[u].sentBefore(ps.liveAt):
			r.signalsInFlight.Add(1) // sent before the stream watched, or taken for one that was
		default:
			r.unexpectedSignals.Add(1)
		}
		return
	}
	e := q[0]
	ps.sigs[u] = q[1:]
	switch arrived, late := e.arrive(); {
	case late:
		r.lateSignals.Add(1)
	case arrived:
		r.signalsSeen.Add(1)
		r.record(signalTimes, ps.idx, now.Sub(e.base))
	}
}

// awaitChange makes the stream await ch, unless it already shows it.
func (ps *pstream) awaitChange(ch *change) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	// A change it awaits already is one its presence frame found in flight. Any other that it
	// awaits for the user settled or expired already: the new one replaces it.
	if !ps.gone && ps.pending[ch.user] != ch && ps.view[ch.user] != ch.online && ch.await(true) {
		ps.pending[ch.user] = ch
	}
}

// awaitSignal makes the stream await s, if it is connected: one that is away misses it.
func (ps *pstream) awaitSignal(s *sig) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if !ps.gone && ps.live && s.await(true) {
		ps.sigs[s.from] = append(ps.sigs[s.from], s)
	}
}

// closed notes that the stream's connection ended: the signals it awaited will not come (its
// next presence frame settles the changes).
func (ps *pstream) closed() {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.live = false
	for u, q := range ps.sigs {
		for _, s := range q {
			s.arrive()
		}
		delete(ps.sigs, u)
	}
}

// leave stops the stream watching (its user is leaving): what it awaited is no longer awaited.
func (ps *pstream) leave() {
	r := ps.run
	r.mu.Lock()
	delete(r.watchers, ps)
	r.mu.Unlock()
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.gone = true
	for u, ch := range ps.pending {
		ch.arrive()
		delete(ps.pending, u)
	}
	for u, q := range ps.sigs {
		for _, s := range q {
			s.arrive()
		}
		delete(ps.sigs, u)
	}
}
