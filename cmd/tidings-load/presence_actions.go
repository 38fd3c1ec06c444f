package main

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"tidings/realtime/client"
)

// act makes -rate actions per second for -duration, each a join, a leave or a signal, chosen
// at random among those some idle user can make. With -storm it stops halfway, lets what is
// in flight settle, and runs the storm (whose time does not count in -duration). It returns
// the storm's figures.
func (r *presenceRun) act(ctx context.Context) *presenceStormStats {
	var storm *presenceStormStats
	start := time.Now()
	var paused time.Duration
	total := int64(r.o.rate * r.o.duration.Seconds())
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for made := int64(0); made < total; {
		select {
		case <-ctx.Done():
			return storm
		case <-tick.C:
		}
		elapsed := time.Since(start) - paused
		if r.o.storm && storm == nil && elapsed >= r.o.duration/2 {
			began := time.Now()
			r.actions.Wait()
			r.waitSettled(ctx, r.o.presenceGrace+arrivalDeadline+time.Second)
			storm = r.storm(ctx)
			paused += time.Since(began)
			continue
		}
		for due := min(total, int64(r.o.rate*elapsed.Seconds())); made < due; made++ {
			r.pick(ctx)
		}
	}
	return storm
}

// pick starts one action: kinds are tried in a random order, the first that some idle user
// whose last change has settled can make is made by one of them, chosen at random.
func (r *presenceRun) pick(ctx context.Context) {
	settled := func(pu *puser) (online, ok bool) {
		ch := pu.cur.Load()
		return ch.online, ch.settled()
	}
	online := 0
	for _, pu := range r.users {
		if ch := pu.cur.Load(); ch.online {
			online++
		}
	}
	kinds := []func() bool{
		func() bool { // join: a user with no stream opens one
			if !r.o.actions["join"] {
				return false
			}
			u := r.randomPick(func(_ int, pu *puser) bool { on, ok := settled(pu); return ok && !on })
			return r.launch(u, func() { r.join(u) })
		},
		func() bool { // leave: a user closes all its streams; half of them (two at least) stay online
			if !r.o.actions["leave"] || online <= max(2, len(r.users)/2) {
				return false
			}
			u := r.randomPick(func(_ int, pu *puser) bool { on, ok := settled(pu); return ok && on && len(pu.streams) > 0 })
			return r.launch(u, func() { r.leave(u) })
		},
		func() bool { // signal: typing, from one of the user's streams
			if !r.o.actions["typing"] {
				return false
			}
			u := r.randomPick(func(_ int, pu *puser) bool { on, ok := settled(pu); return ok && on && len(pu.streams) > 0 })
			return r.launch(u, func() { r.signal(ctx, u) })
		},
	}
	for _, k := range rand.Perm(len(kinds)) {
		if kinds[k]() {
			return
		}
	}
}

// launch runs the action of user u (-1: none) in a goroutine of its own, unless u is busy.
func (r *presenceRun) launch(u int, action func()) bool {
	if u < 0 || !r.users[u].busy.CompareAndSwap(false, true) {
		return false
	}
	r.actions.Go(func() {
		defer r.users[u].busy.Store(false)
		action()
	})
	return true
}

// join opens a stream for user u, who has none: every stream watching awaits its
// presence-change(true), timed from the dial.
func (r *presenceRun) join(u int) {
	pu := r.users[u]
	// base and deadline are set before the change is handed to the streams, whose goroutines
	// read them: the race detector sees no order in a socket's frames.
	ch := &change{user: u, online: true}
	ch.base = time.Now()
	ch.deadline = ch.base.Add(arrivalDeadline)
	pu.cur.Store(ch)
	ps := r.newStream(u, int(r.nextNode.Add(1)%int64(len(r.o.urls))))
	for _, w := range r.watcherList() {
		w.awaitChange(ch)
	}
	r.track(&ch.expect, false)
	pu.streams = []*pstream{ps}
	r.start(ps, nil)
	r.joins.Add(1)
}

// leave closes every stream of user u: every other stream watching awaits its
// presence-change(false), timed from the end of the grace.
func (r *presenceRun) leave(u int) {
	pu := r.users[u]
	streams := pu.streams
	pu.streams = nil
	for _, ps := range streams {
		ps.leave()
	}
	// From before the close: the server's grace cannot begin earlier.
	ch := &change{user: u, online: false}
	ch.base = time.Now().Add(r.o.presenceGrace)
	ch.deadline = ch.base.Add(arrivalDeadline)
	pu.cur.Store(ch)
	for _, w := range r.watcherList() {
		w.awaitChange(ch)
	}
	r.track(&ch.expect, false)
	for _, ps := range streams {
		ps.cancel()
	}
	for _, ps := range streams {
		ps.done.Wait()
	}
	r.leaves.Add(1)
}

// signal sends a typing signal from one of user u's streams: every stream watching, the
// sender's included, awaits it.
func (r *presenceRun) signal(ctx context.Context, u int) {
	pu := r.users[u]
	ps := pu.streams[rand.N(len(pu.streams))]
	s := &sig{from: u}
	s.base = time.Now()
	s.deadline = s.base.Add(arrivalDeadline)
	pu.sending(s.base) // before any stream can find it on its way
	for _, w := range r.watcherList() {
		w.awaitSignal(s)
	}
	r.track(&s.expect, true)
	err := ps.c.Signal(ctx, "typing", nil)
	var se *client.SignalError
	switch {
	case err == nil:
		r.signals.Add(1)
	case errors.As(err, &se):
		s.rem.Store(refused)
		r.signalsRefused.Add(1)
	default:
		s.rem.Store(uncertain)
		r.signalErrors.Add(1)
	}
}

// storm drops every stream at once, brings each back after -storm-away (within the grace, so
// that nobody's presence may change), waits until each had its presence frame again and the
// grace has passed since the drop, and counts every presence-change meanwhile as a flap.
func (r *presenceRun) storm(ctx context.Context) *presenceStormStats {
	var all []*pstream
	for _, pu := range r.users {
		all = append(all, pu.streams...)
	}
	st := &presenceStormStats{Clients: len(all), AllReadyMs: -1}
	flapsBefore := r.stormFlaps.Load()
	r.storming.Store(true)
	defer r.storming.Store(false)
	drop := time.Now()
	for _, ps := range all {
		ps.cancel()
	}
	for _, ps := range all {
		ps.done.Wait()
		ps.stormReadyNs.Store(0)
		ps.closed()
	}
	select {
	case <-ctx.Done():
		return st
	case <-time.After(r.o.stormAway - time.Since(drop)):
	}
	endedBefore := r.ended.Load()
	r.stormStart.Store(time.Now().UnixNano())
	for _, ps := range all {
		r.start(ps, ps.c)
	}
	ready := func() (n int64) {
		for _, ps := range all {
			if ps.stormReadyNs.Load() > 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(r.o.stormWait)
	for ready() < int64(len(all)) && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	// A user wrongly taken offline shows once the grace after the drop has passed.
	for time.Since(drop) < r.o.presenceGrace+2*time.Second && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
	st.Ready, st.Failures = ready(), r.ended.Load()-endedBefore
	h := newHistogram()
	for _, ps := range all {
		if ns := ps.stormReadyNs.Load(); ns > 0 {
			h.RecordValue(max(1, ns/1000))
		}
	}
	st.ReadyMs = quantilesOf(h)
	if st.Ready == int64(len(all)) {
		st.AllReadyMs = st.ReadyMs.Max
	}
	st.Flaps = r.stormFlaps.Load() - flapsBefore
	for _, ps := range all {
		ps.mu.Lock()
		for u, pu := range r.users {
			if ps.view[u] != pu.cur.Load().online {
				st.Mismatches++
			}
		}
		ps.mu.Unlock()
	}
	return st
}
