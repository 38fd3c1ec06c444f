package main

import (
	"io"
	"testing"
	"time"

	"tidings/realtime/client"
)

// newTrackerRun is a presence run of three users (ids 11, 12, 13), all online and settled,
// watched by one stream of user 0 that had its presence frame: the bookkeeping alone, with no
// server.
func newTrackerRun(t *testing.T) (*presenceRun, *pstream) {
	t.Helper()
	accounts := []*account{{name: "a", id: 11}, {name: "b", id: 12}, {name: "c", id: 13}}
	r := newPresenceRun(options{sockets: 3, urls: []string{"http://127.0.0.1:1"}, presenceGrace: time.Second}, accounts, io.Discard)
	for u, pu := range r.users {
		pu.cur.Store(&change{user: u, online: true})
	}
	ps := r.newStream(0, 0)
	ps.presenceFrame([]int64{11, 12, 13, 99})
	if len(r.watcherList()) != 1 {
		t.Fatal("the stream does not watch after its presence frame")
	}
	return r, ps
}

// act makes the generator's change of user u, awaited from base, as join and leave do.
func act(r *presenceRun, u int, online bool, base time.Time) *change {
	ch := &change{user: u, online: online}
	r.users[u].cur.Store(ch)
	for _, w := range r.watcherList() {
		w.awaitChange(ch)
	}
	ch.base, ch.deadline = base, base.Add(arrivalDeadline)
	r.track(&ch.expect, false)
	return ch
}

// TestTrackerTimesWhatTheGeneratorDid: a change the generator made is timed once, from its
// base; what it did not make (another user's change, a repeat, anything during the storm) is
// a flap; a change before the grace ended is early; a user of another run is ignored.
func TestTrackerTimesWhatTheGeneratorDid(t *testing.T) {
	t.Parallel()
	r, ps := newTrackerRun(t)
	now := time.Now()

	ps.presenceChange(12, false) // nobody made b leave
	if got := r.flaps.Load(); got != 1 {
		t.Fatalf("a change the generator did not make: got %d flaps, want 1", got)
	}
	ps.presenceChange(12, true) // back to what the generator wants: not a flap
	ps.presenceChange(12, true) // told twice
	if got := r.flaps.Load(); got != 2 {
		t.Fatalf("a repeat: got %d flaps, want 2", got)
	}

	leave := act(r, 2, false, now.Add(-20*time.Millisecond))
	ps.presenceChange(13, false)
	if !leave.settled() || r.changesSeen.Load() != 1 || r.quantiles(leaveTimes).Max < 20 {
		t.Fatalf("leave: settled %v, %d seen, times %+v; want settled, 1 seen, at least 20 ms", leave.settled(), r.changesSeen.Load(), r.quantiles(leaveTimes))
	}
	ps.presenceChange(99, false) // not this run's
	if r.otherChanges.Load() != 1 || r.flaps.Load() != 2 {
		t.Fatalf("another run's user: got %d other, %d flaps; want 1, 2", r.otherChanges.Load(), r.flaps.Load())
	}

	join := act(r, 2, true, now)
	ps.presenceFrame([]int64{11, 12, 13}) // the reconnected stream's frame shows the join already
	if !join.settled() || r.changesSeen.Load() != 1 {
		t.Fatalf("a presence frame that shows the change: settled %v, %d seen; want settled, untimed", join.settled(), r.changesSeen.Load())
	}

	early := act(r, 1, false, now.Add(time.Hour)) // the grace is far from over
	ps.presenceChange(12, false)
	if !early.settled() || r.earlyOffline.Load() != 1 {
		t.Fatalf("offline before the grace ended: got %d early, want 1", r.earlyOffline.Load())
	}

	r.storming.Store(true)
	ps.presenceChange(11, true)
	r.storming.Store(false)
	if r.stormFlaps.Load() != 1 || r.flaps.Load() != 3 {
		t.Fatalf("during the storm: got %d storm flaps, %d flaps; want 1, 3", r.stormFlaps.Load(), r.flaps.Load())
	}
}

// TestTrackerCountsMissedAndLate: an awaited change or signal that does not come by its
// deadline is missed, and counted late if it comes after; a refused signal is not awaited; a
// signal nobody sent is unexpected.
func TestTrackerCountsMissedAndLate(t *testing.T) {
	t.Parallel()
	r, ps := newTrackerRun(t)
	now := time.Now()
	send := func(from int) *sig {
		s := &sig{from: from}
		r.users[from].sending(time.Now())
		for _, w := range r.watcherList() {
			w.awaitSignal(s)
		}
		s.base, s.deadline = now, now.Add(arrivalDeadline)
		r.track(&s.expect, true)
		return s
	}
	typing := client.Signal{From: 12, Type: "typing", Data: []byte("{}")}

	lost := send(1)
	refusedOne := send(1)
	refusedOne.rem.Store(refused)
	if n := r.check(now.Add(arrivalDeadline + time.Millisecond)); n != 0 || r.missedSignals.Load() != 1 || !lost.settled() {
		t.Fatalf("after the deadline: %d awaited, %d missed; want 0 awaited, 1 missed", n, r.missedSignals.Load())
	}
	ps.signal(typing) // the lost one, late
	if r.lateSignals.Load() != 1 || r.signalsSeen.Load() != 0 {
		t.Fatalf("a late signal: got %d late, %d seen; want 1, 0", r.lateSignals.Load(), r.signalsSeen.Load())
	}

	send(1)
	ps.signal(typing)
	ps.signal(typing) // one too many
	ps.signal(client.Signal{From: 11, Type: "typing"})
	if r.signalsSeen.Load() != 1 || r.unexpectedSignals.Load() != 2 {
		t.Fatalf("got %d seen, %d unexpected; want 1, 2", r.signalsSeen.Load(), r.unexpectedSignals.Load())
	}

	// A stream that starts watching while a signal is on its way does not await it, and may
	// get it: not unexpected.
	inFlight := send(1)
	late := r.newStream(2, 0)
	time.Sleep(time.Millisecond) // its presence frame comes after the send, on any clock
	late.presenceFrame([]int64{11, 12, 13})
	ps.signal(typing)
	late.signal(typing)
	if !inFlight.settled() || r.signalsSeen.Load() != 2 || r.signalsInFlight.Load() != 1 || r.unexpectedSignals.Load() != 2 {
		t.Fatalf("a signal on its way: got %d seen, %d in flight, %d unexpected; want 2, 1, 2",
			r.signalsSeen.Load(), r.signalsInFlight.Load(), r.unexpectedSignals.Load())
	}
	late.leave()

	act(r, 1, false, now)
	if n := r.check(now.Add(arrivalDeadline + time.Millisecond)); n != 0 || r.missedChanges.Load() != 1 {
		t.Fatalf("a change that never came: %d awaited, %d missed; want 0, 1", n, r.missedChanges.Load())
	}
	ps.presenceChange(12, false)
	if r.lateChanges.Load() != 1 || r.changesSeen.Load() != 0 {
		t.Fatalf("a late change: got %d late, %d seen; want 1, 0", r.lateChanges.Load(), r.changesSeen.Load())
	}

	// A stream whose user leaves stops watching, and what it awaited is no longer awaited.
	left := send(2)
	ps.leave()
	if !left.settled() || len(r.watcherList()) != 0 || r.check(now.Add(time.Hour)) != 0 || r.missedSignals.Load() != 1 {
		t.Fatalf("after the leave: settled %v, %d watching, %d missed; want settled, none, still 1", left.settled(), len(r.watcherList()), r.missedSignals.Load())
	}
	ps.presenceFrame([]int64{11})
	if len(r.watcherList()) != 0 {
		t.Fatal("a stream whose user left watches again")
	}
}
