package main

import (
	"context"
	"fmt"
	"math"
	"sync/atomic"
	"time"

	"tidings/realtime/client"
)

// stormSummary is what the reconnect storm measured (the design's target: 10,000 clients
// reconnecting at once with recent ids are all current within 3 s).
type stormSummary struct {
	// Clients is how many sockets were dropped and reconnected at once.
	Clients int `json:"clients"`
	// AwayEvents is how many events were published while they were away.
	AwayEvents int64 `json:"awayEvents"`
	// Ready and Current count the sockets that got their first ready, and those that were
	// current (ready, and holding the newest event published before the reconnect), within
	// -storm-wait.
	Ready   int64 `json:"ready"`
	Current int64 `json:"current"`
	// Failures counts the reconnections that ended (or failed to connect) during the storm,
	// each followed by another attempt after a backoff.
	Failures int64 `json:"failures"`
	// AllCurrentMs is from the start of the reconnect until the last socket was current; -1
	// when some never were.
	AllCurrentMs float64 `json:"allCurrentMs"`
	// CurrentMs is the same for each socket, and OpenedMs until its first frame from the
	// server (TCP and WebSocket handshakes done; the rest of CurrentMs is the replay).
	CurrentMs quantiles `json:"currentMs"`
	OpenedMs  quantiles `json:"openedMs"`
	// ServerCPUSeconds (with -pid) and GeneratorCPUSeconds are what the server process and this
	// one spent from the start of the reconnect until every socket was current (or -storm-wait
	// ran out): on one machine, they tell the server's share of the storm from the generator's.
	ServerCPUSeconds    float64 `json:"serverCpuSeconds,omitempty"`
	GeneratorCPUSeconds float64 `json:"generatorCpuSeconds"`
	// Missing counts events published since the drop that a reconnected socket lacks;
	// Duplicates and OutOfOrder the frames the reconnected clients dropped.
	Missing    int64 `json:"missing"`
	Duplicates int64 `json:"duplicates"`
	OutOfOrder int64 `json:"outOfOrder"`
	// Replayed is tidings' count of events sent during the storm's replays, by source ("cache"
	// or "table"), from its /metrics; absent for a peer.
	Replayed map[string]int64 `json:"replayed,omitempty"`
}

// storm is one reconnect storm in progress.
type storm struct {
	// Set before the sockets reconnect.
	target int64 // the newest position published before the reconnect
	start  time.Time

	state    []atomic.Int32 // per socket: hasReady | hasNewest
	at       []atomic.Int64 // per socket: nanoseconds from start until current; 0 before
	openedAt []atomic.Int64 // per socket: nanoseconds from start until the first frame; 0 before
	ready    atomic.Int64
	current  atomic.Int64
	ended    atomic.Int64 // connections or attempts that ended during the storm
}

// What a reconnected socket has had.
const (
	hasReady int32 = 1 << iota
	hasNewest
)

// mark notes that socket i has had what bit says; the second of the two makes it current.
func (st *storm) mark(i int, bit int32) {
	old := st.state[i].Or(bit)
	if old&bit != 0 {
		return
	}
	if bit == hasReady {
		st.ready.Add(1)
	}
	if old|bit == hasReady|hasNewest {
		st.at[i].Store(max(1, int64(time.Since(st.start))))
		st.current.Add(1)
	}
}

// opened notes socket i's first frame from the server (its upgrade is done).
func (st *storm) opened(i int) {
	st.openedAt[i].CompareAndSwap(0, max(1, int64(time.Since(st.start))))
}

func (st *storm) progress() string {
	return fmt.Sprintf("  storm: ready %d, current %d/%d", st.ready.Load(), st.current.Load(), len(st.state))
}

// runStorm drops every socket at once (its client side closes abruptly), publishes a few
// events while they are away, then reconnects every one at once from its last position and
// waits until each is current. It returns what it measured and the frame counts of the
// dropped streams.
func (l *load) runStorm(ctx context.Context, sockets []*socket) (*stormSummary, client.Stats) {
	var dropped client.Stats
	for _, sk := range sockets {
		sk.cancel()
	}
	before := make([]int64, len(sockets))
	for i, sk := range sockets {
		sk.done.Wait()
		st := sk.s.Stats()
		dropped.Duplicates += st.Duplicates
		dropped.OutOfOrder += st.OutOfOrder
		before[i] = l.perSocket[i].Load()
	}
	away := time.Now()
	publishedBefore := l.published.Load()
	l.publish(ctx, int64(l.o.stormEvents), 1000)
	select {
	case <-ctx.Done():
	case <-time.After(l.o.stormAway - time.Since(away)): // let the server see every close
	}

	st := &storm{target: l.newest.Load(), state: make([]atomic.Int32, len(sockets)), at: make([]atomic.Int64, len(sockets)),
		openedAt: make([]atomic.Int64, len(sockets))}
	out := &stormSummary{Clients: len(sockets), AwayEvents: l.published.Load() - publishedBefore, AllCurrentMs: -1}
	metrics, _ := l.srv.(interface {
		replayed(context.Context) (map[string]int64, error)
	})
	var replayedBefore map[string]int64
	if metrics != nil {
		replayedBefore, _ = metrics.replayed(ctx)
	}
	for i, sk := range sockets {
		var seen atomic.Bool
		sk.s = l.srv.open(sk.hc, sk.node, sk.s, hooks{
			opened: func() { st.opened(i) },
			ended:  func() { st.ended.Add(1) },
			ready: func() {
				if seen.Swap(true) {
					l.reconnects.Add(1)
				}
				st.mark(i, hasReady)
			},
		})
	}
	l.stormMu.Lock()
	l.storming = st
	l.stormMu.Unlock()
	serverCPU := func() float64 {
		if l.o.pid <= 0 {
			return 0
		}
		cpu, _ := cpuSeconds(l.o.pid)
		return cpu
	}
	serverBefore, selfBefore := serverCPU(), selfCPUSeconds()
	st.start = time.Now()
	for i, sk := range sockets {
		l.start(ctx, i, sk, st)
	}
	deadline := time.Now().Add(l.o.stormWait)
	for time.Now().Before(deadline) && ctx.Err() == nil && st.current.Load() < int64(len(sockets)) {
		time.Sleep(5 * time.Millisecond)
	}
	out.ServerCPUSeconds = math.Round((serverCPU()-serverBefore)*100) / 100
	out.GeneratorCPUSeconds = math.Round((selfCPUSeconds()-selfBefore)*100) / 100
	l.settle(ctx)

	out.Ready, out.Current, out.Failures = st.ready.Load(), st.current.Load(), st.ended.Load()
	out.CurrentMs = quantilesOfNs(st.at)
	out.OpenedMs = quantilesOfNs(st.openedAt)
	if out.Current == int64(len(sockets)) {
		out.AllCurrentMs = out.CurrentMs.Max
	}
	published := l.published.Load() - publishedBefore
	for i, sk := range sockets {
		out.Missing += max(0, published-(l.perSocket[i].Load()-before[i]))
		s := sk.s.Stats()
		out.Duplicates += s.Duplicates
		out.OutOfOrder += s.OutOfOrder
	}
	if metrics != nil && replayedBefore != nil {
		if after, err := metrics.replayed(ctx); err == nil {
			out.Replayed = map[string]int64{}
			for k, v := range after {
				out.Replayed[k] = v - replayedBefore[k]
			}
		}
	}
	return out, dropped
}

// quantilesOfNs summarizes durations in nanoseconds, leaving out zeros (never happened).
func quantilesOfNs(ns []atomic.Int64) quantiles {
	h := newHistogram()
	for i := range ns {
		if v := ns[i].Load(); v > 0 {
			h.RecordValue(max(1, v/1000))
		}
	}
	return quantilesOf(h)
}
