package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"tidings/realtime/client"
)

// presenceSummary is what a presence run measured (docs/protocol.md section 8).
type presenceSummary struct {
	Users   int     `json:"users"`
	Sockets int     `json:"sockets"` // streams open at the start, spread over the users
	Nodes   int     `json:"nodes"`
	GraceMs float64 `json:"graceMs"` // -presence-grace, which leaves are timed from the end of
	// Joins (a user with no stream opens one), leaves (a user closes all its streams) and
	// signals (typing, accepted by the server) made; SignalsRefused were refused (none is
	// awaited), SignalErrors got no answer or lost their socket (arrivals are not counted).
	Joins          int64 `json:"joins"`
	Leaves         int64 `json:"leaves"`
	Signals        int64 `json:"signals"`
	SignalsRefused int64 `json:"signalsRefused"`
	SignalErrors   int64 `json:"signalErrors"`
	// JoinMs is from a join's dial to presence-change(true) at every other stream; LeaveMs from
	// the end of the grace after a leave (its streams' close + grace) to presence-change(false)
	// at every other stream; SignalMs from the Signal call to the signal at every stream, the
	// sender's included.
	JoinMs   quantiles `json:"joinMs"`
	LeaveMs  quantiles `json:"leaveMs"`
	SignalMs quantiles `json:"signalMs"`
	// ChangesSeen and SignalsSeen count the awaited arrivals timed above.
	ChangesSeen int64 `json:"changesSeen"`
	SignalsSeen int64 `json:"signalsSeen"`
	// MissedChanges and MissedSignals count the awaited arrivals not seen within 5 s (of the
	// join, of the grace's end, of the signal); LateChanges and LateSignals those that came
	// after that.
	MissedChanges int64 `json:"missedChanges"`
	MissedSignals int64 `json:"missedSignals"`
	LateChanges   int64 `json:"lateChanges"`
	LateSignals   int64 `json:"lateSignals"`
	// UnexpectedSignals came when none was awaited from their sender (or were not typing);
	// SignalsInFlight came to a stream that connected while a signal of their sender was on
	// its way (a signal carries no id: such a stream awaits none of those, and may get them).
	UnexpectedSignals int64 `json:"unexpectedSignals"`
	SignalsInFlight   int64 `json:"signalsInFlight"`
	// Flaps are presence-changes that the generator did not cause: a user whose state it did
	// not change, a repeat of what the stream was told, any change during the storm.
	Flaps int64 `json:"flaps"`
	// EarlyOffline counts the users reported offline before the grace after their leave ended.
	EarlyOffline int64 `json:"earlyOffline"`
	// OtherChanges are presence-changes of users who are not this run's (ignored).
	OtherChanges int64 `json:"otherChanges"`
	// Reconnects counts the connections that ended on their own and were made again.
	Reconnects int64               `json:"reconnects"`
	Storm      *presenceStormStats `json:"storm,omitempty"`
	Postgres   postgresCost        `json:"postgres"`
}

// failed reports whether the server broke a promise of docs/protocol.md section 8.
func (p *presenceSummary) failed() bool {
	return p.Flaps > 0 || p.MissedSignals > 0 || p.MissedChanges > 0
}

// presenceStormStats is the storm of a presence run: every stream dropped at once and back
// within the grace, which must change nobody's presence.
type presenceStormStats struct {
	Clients int `json:"clients"`
	// Ready counts the streams that had their presence frame again within -storm-wait;
	// ReadyMs is from the reconnect to it, AllReadyMs for the last (-1: some never had it).
	Ready      int64     `json:"ready"`
	ReadyMs    quantiles `json:"readyMs"`
	AllReadyMs float64   `json:"allReadyMs"`
	// Failures counts the connections that ended or failed during the storm.
	Failures int64 `json:"failures"`
	// Flaps counts the presence-changes from the drop until the grace (and 2 s) had passed
	// with every stream back; Mismatches the (stream, user) pairs whose view then differed
	// from the generator's.
	Flaps      int64 `json:"flaps"`
	Mismatches int64 `json:"mismatches"`
}

// What a presence run times.
const (
	joinTimes = iota
	leaveTimes
	signalTimes
)

// puser is one user of a presence run.
type puser struct {
	cur     atomic.Pointer[change] // the user's last change: what the generator made of it
	busy    atomic.Bool            // an action of the user is in flight
	streams []*pstream             // owned by the user's action, or by the setup or the storm while no action runs

	mu   sync.Mutex
	sent []time.Time // guarded by mu: when the user's signals were sent, the last arrivalDeadline's
}

// sending notes that the user sends a signal at t.
func (pu *puser) sending(t time.Time) {
	pu.mu.Lock()
	defer pu.mu.Unlock()
	i := 0
	for i < len(pu.sent) && t.Sub(pu.sent[i]) > arrivalDeadline {
		i++
	}
	pu.sent = append(pu.sent[i:], t)
}

// sentBefore reports whether the user sent a signal within arrivalDeadline before t: one that
// may still have been on its way then.
func (pu *puser) sentBefore(t time.Time) bool {
	pu.mu.Lock()
	defer pu.mu.Unlock()
	for _, s := range pu.sent {
		if s.Before(t) && t.Sub(s) <= arrivalDeadline {
			return true
		}
	}
	return false
}

// presenceRun is one -presence run.
type presenceRun struct {
	// Set at construction.
	o          options
	accounts   []*account
	byID       map[int64]int // user id -> index
	users      []*puser
	stderr     io.Writer
	transports []http.RoundTripper
	ctx        context.Context // the run's: streams run under it

	mu       sync.Mutex
	watchers map[*pstream]struct{} // guarded by mu: streams that had a presence frame, whose user has not left

	times [3][shards]shard

	recMu   sync.Mutex
	records []tracked // guarded by recMu: expectations not yet settled

	storming   atomic.Bool
	stormStart atomic.Int64 // unix ns
	actions    sync.WaitGroup
	nextIdx    atomic.Int64
	nextNode   atomic.Int64

	joins, leaves, signals, signalsRefused, signalErrors   atomic.Int64
	changesSeen, signalsSeen, missedChanges, missedSignals atomic.Int64
	lateChanges, lateSignals, unexpectedSignals            atomic.Int64
	signalsInFlight                                        atomic.Int64
	flaps, stormFlaps, earlyOffline, otherChanges, ended   atomic.Int64
	signedIn                                               atomic.Int64 // streams whose session frame named an account
}

// tracked is an expectation the checker expires.
type tracked struct {
	e      *expect
	signal bool
}

func newPresenceRun(o options, accounts []*account, stderr io.Writer) *presenceRun {
	r := &presenceRun{o: o, accounts: accounts, byID: map[int64]int{}, stderr: stderr, watchers: map[*pstream]struct{}{}}
	for i, a := range accounts {
		r.byID[a.id] = i
		r.users = append(r.users, &puser{})
	}
	r.transports = (&load{o: o}).transports()
	for k := range r.times {
		for i := range r.times[k] {
			r.times[k][i].h = newHistogram()
		}
	}
	return r
}

func (r *presenceRun) record(kind, idx int, d time.Duration) {
	sh := &r.times[kind][idx%shards]
	sh.mu.Lock()
	sh.h.RecordValue(max(1, d.Microseconds()))
	sh.mu.Unlock()
}

func (r *presenceRun) quantiles(kind int) quantiles {
	h := newHistogram()
	for i := range r.times[kind] {
		sh := &r.times[kind][i]
		sh.mu.Lock()
		h.Merge(sh.h) // the streams still run: a late arrival may be recorded meanwhile
		sh.mu.Unlock()
	}
	return quantilesOf(h)
}

// newStream makes a stream of user u to node.
func (r *presenceRun) newStream(u, node int) *pstream {
	idx := int(r.nextIdx.Add(1) - 1)
	return &pstream{run: r, idx: idx, user: u, node: node, view: make([]bool, len(r.users)),
		pending: map[int]*change{}, sigs: map[int][]*sig{},
		hc: &http.Client{Jar: r.accounts[u].jar, Transport: r.transports[idx%len(r.transports)]}}
}

// start runs ps's client (resuming after prev's last event, if any) until ps.cancel; ps.done
// then waits for it.
func (r *presenceRun) start(ps *pstream, prev *client.Client) {
	cfg := client.Config{URL: r.o.urls[ps.node], HTTPClient: ps.hc, Buffer: 64,
		OnPresence: ps.presenceFrame, OnPresenceChange: ps.presenceChange, OnSignal: ps.signal,
		OnClose: func(int, string) { r.ended.Add(1); ps.closed() },
		OnReady: func(int64) { ps.readied.Store(true) },
		OnSession: func(s client.Session) {
			if hasAccount(s) && ps.account.CompareAndSwap(false, true) {
				r.signedIn.Add(1)
			}
		}}
	if prev != nil {
		if last := prev.LastEventID(); last >= 0 {
			cfg.LastEventID = &last
		}
	}
	c := client.New(cfg)
	ctx, cancel := context.WithCancel(r.ctx)
	ps.c, ps.cancel = c, cancel
	ps.done.Go(func() { c.Run(ctx) })
	ps.done.Go(func() {
		for range c.Events() { // events are not what this run measures
		}
	})
}

// track hands an expectation to the checker.
func (r *presenceRun) track(e *expect, signal bool) {
	r.recMu.Lock()
	r.records = append(r.records, tracked{e, signal})
	r.recMu.Unlock()
}

// check settles the expectations whose deadline passed, counting what never came, and
// reports how many are still awaited.
func (r *presenceRun) check(now time.Time) int {
	r.recMu.Lock()
	defer r.recMu.Unlock()
	keep := r.records[:0]
	for _, t := range r.records {
		switch {
		case t.e.settled():
		case now.After(t.e.deadline):
			if n := t.e.expire(); t.signal {
				r.missedSignals.Add(n)
			} else {
				r.missedChanges.Add(n)
			}
		default:
			keep = append(keep, t)
		}
	}
	clear(r.records[len(keep):])
	r.records = keep
	return len(keep)
}

// watcherList returns the streams watching now.
func (r *presenceRun) watcherList() []*pstream {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*pstream, 0, len(r.watchers))
	for ps := range r.watchers {
		out = append(out, ps)
	}
	return out
}

func (r *presenceRun) run(ctx context.Context) (summary, error) {
	meter := startMeter(r.o.pid)
	start, usage := meter.start, meter.usage
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.ctx = ctx
	progressDone := make(chan struct{})
	go r.progress(ctx, start, usage, progressDone)
	defer func() {
		cancel()
		for _, pu := range r.users {
			for _, ps := range pu.streams {
				ps.done.Wait()
			}
		}
		<-progressDone
	}()

	connected, err := r.setup(ctx)
	if err != nil {
		return summary{}, err
	}
	checkDone := make(chan struct{})
	checkStop := make(chan struct{})
	go func() {
		defer close(checkDone)
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-checkStop:
				return
			case now := <-t.C:
				r.check(now)
			}
		}
	}()
	before, beforeErr := scrapeCosts(ctx, r.metricsURLs())
	actStart := time.Now()
	storm := r.act(ctx)
	r.actions.Wait()
	// The last actions' arrivals: every leave's grace, then the deadline of what it awaits.
	r.waitSettled(ctx, r.o.presenceGrace+arrivalDeadline+time.Second)
	after, afterErr := scrapeCosts(ctx, r.metricsURLs())
	costs := costsBetween(before, after, time.Since(actStart), errors.Join(beforeErr, afterErr))
	close(checkStop)
	<-checkDone
	r.check(time.Now().Add(arrivalDeadline + r.o.presenceGrace)) // the run is over: what is still awaited is missed

	p := &presenceSummary{
		Users: len(r.users), Sockets: r.o.sockets, Nodes: len(r.o.urls), GraceMs: float64(r.o.presenceGrace.Milliseconds()),
		Joins: r.joins.Load(), Leaves: r.leaves.Load(), Signals: r.signals.Load(),
		SignalsRefused: r.signalsRefused.Load(), SignalErrors: r.signalErrors.Load(),
		JoinMs: r.quantiles(joinTimes), LeaveMs: r.quantiles(leaveTimes), SignalMs: r.quantiles(signalTimes),
		ChangesSeen: r.changesSeen.Load(), SignalsSeen: r.signalsSeen.Load(),
		MissedChanges: r.missedChanges.Load(), MissedSignals: r.missedSignals.Load(),
		LateChanges: r.lateChanges.Load(), LateSignals: r.lateSignals.Load(),
		UnexpectedSignals: r.unexpectedSignals.Load(), SignalsInFlight: r.signalsInFlight.Load(), Flaps: r.flaps.Load(),
		EarlyOffline: r.earlyOffline.Load(), OtherChanges: r.otherChanges.Load(),
		Reconnects: r.ended.Load(), Storm: storm, Postgres: costs,
	}
	s := summary{Sockets: r.o.sockets, Users: len(r.users), Nodes: len(r.o.urls), Connected: connected,
		SignedIn: r.signedIn.Load(), Presence: p}
	cancel()
	for _, pu := range r.users {
		for _, ps := range pu.streams {
			ps.done.Wait()
		}
	}
	meter.finish(&s)
	return s, nil
}

// metricsURLs are where the PostgreSQL costs are read: -metrics-url, or each node's /metrics.
func (r *presenceRun) metricsURLs() []string {
	if len(r.o.metricsURLs) > 0 {
		return r.o.metricsURLs
	}
	var out []string
	for _, u := range r.o.urls {
		out = append(out, u+"/metrics")
	}
	return out
}

// setup opens the streams at the ramp rate, socket i for user i mod N on node i mod nodes, and
// waits until each had its presence frame and every one shows every user online. It returns
// how many had their frame.
func (r *presenceRun) setup(ctx context.Context) (int, error) {
	for u := range r.users {
		r.users[u].cur.Store(&change{user: u, online: true}) // settled: nothing awaited
	}
	interval := time.Duration(float64(time.Second) / r.o.ramp)
	var all []*pstream
	for i := range r.o.sockets {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		u := i % len(r.users)
		ps := r.newStream(u, i%len(r.o.urls))
		r.users[u].streams = append(r.users[u].streams, ps)
		all = append(all, ps)
		r.start(ps, nil)
		if i%100 == 99 {
			time.Sleep(100 * interval) // the ramp
		}
	}
	r.nextNode.Store(int64(r.o.sockets))
	count := func(what func(*pstream) bool) (n int) {
		for _, ps := range all {
			if what(ps) {
				n++
			}
		}
		return n
	}
	readied := func(ps *pstream) bool { return ps.readied.Load() }
	framed := func(ps *pstream) bool { return ps.snapshots.Load() > 0 }
	deadline := time.Now().Add(time.Minute + time.Duration(float64(r.o.sockets)/r.o.ramp*float64(time.Second)))
	for count(readied) < len(all) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return count(framed), fmt.Errorf("%d of %d streams were not ready in time", len(all)-count(readied), len(all))
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The presence frame follows ready at once (docs/protocol.md section 8).
	deadline = time.Now().Add(5 * time.Second)
	for count(framed) < len(all) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return count(framed), fmt.Errorf("%d of %d ready streams had no presence frame within 5 s: has the server presence (docs/protocol.md section 8)?", len(all)-count(framed), len(all))
		}
		time.Sleep(10 * time.Millisecond)
	}
	converged := func() (lacking int) {
		for _, ps := range all {
			ps.mu.Lock()
			if ps.online != len(r.users) {
				lacking++
			}
			ps.mu.Unlock()
		}
		return lacking
	}
	deadline = time.Now().Add(30 * time.Second)
	for {
		lacking := converged()
		if lacking == 0 {
			return len(all), nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return len(all), fmt.Errorf("presence did not settle: after 30 s, %d of %d streams do not show all %d users online", lacking, len(all), len(r.users))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSettled waits, at most for bound, until nothing is awaited any more.
func (r *presenceRun) waitSettled(ctx context.Context, bound time.Duration) {
	deadline := time.Now().Add(bound)
	for r.check(time.Now()) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond)
	}
}

// progress prints a status line every second until the run ends.
func (r *presenceRun) progress(ctx context.Context, start time.Time, usage *usageSampler, done chan<- struct{}) {
	defer close(done)
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fmt.Fprintln(r.stderr)
			return
		case <-t.C:
		}
		usage.sample()
		r.mu.Lock()
		watching := len(r.watchers)
		r.mu.Unlock()
		storm := ""
		if r.storming.Load() {
			storm = "  (storm)"
		}
		fmt.Fprintf(r.stderr, "\r%5.0fs  streams watching %d  joins %d  leaves %d  signals %d  flaps %d  missed %d/%d%s   ",
			time.Since(start).Seconds(), watching, r.joins.Load(), r.leaves.Load(), r.signals.Load(), r.flaps.Load(),
			r.missedChanges.Load(), r.missedSignals.Load(), storm)
	}
}

// randomPick returns one of the users for which ok holds, or -1.
func (r *presenceRun) randomPick(ok func(u int, pu *puser) bool) int {
	var candidates []int
	for u, pu := range r.users {
		if !pu.busy.Load() && ok(u, pu) {
			candidates = append(candidates, u)
		}
	}
	if len(candidates) == 0 {
		return -1
	}
	return candidates[rand.N(len(candidates))]
}
