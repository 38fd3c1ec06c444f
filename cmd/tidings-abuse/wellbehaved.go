package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"tidings/realtime/client"
)

// How often the well-behaved client starts each thing, whether or not the last one has been
// answered (it stands for several users, each arriving when they will, so a slow answer
// delays no one else's attempt), and how many of each may wait for their answer at once, so
// that it stays a probe rather than more load: a tick beyond that counts as a failure,
// "client-backlog".
const (
	loginEvery   = 200 * time.Millisecond
	pageEvery    = 500 * time.Millisecond
	publishEvery = 100 * time.Millisecond
	maxWaiting   = 4
	maxPublishes = 8 // as many as the node lets one socket have waiting
)

// wbReport is what the well-behaved client saw during one scenario.
type wbReport struct {
	// LoginMs is the latency of every login attempt (its own name, the right password),
	// failures included; LoginFailures counts those not answered 200, by status or by
	// "timeout" and "connection-error".
	LoginMs       quantiles        `json:"loginMs"`
	LoginFailures map[string]int64 `json:"loginFailures"`
	// PageMs and PageFailures are the same for GET / (signed in).
	PageMs       quantiles        `json:"pageMs"`
	PageFailures map[string]int64 `json:"pageFailures"`
	// Published counts the messages the second user published over its socket and got an
	// ack for; PublishFailures the others, by error code (or "timeout", "not-connected",
	// "connection-lost").
	Published       int64            `json:"published"`
	PublishFailures map[string]int64 `json:"publishFailures"`
	// Delivered counts those messages that reached the watching user's stream; Lost those
	// acknowledged and not delivered within -settle after the scenario.
	Delivered int64 `json:"delivered"`
	Lost      int64 `json:"lost"`
	// EventDelayMs is from the start of each publish to its delivery on the watcher's stream.
	EventDelayMs quantiles `json:"eventDelayMs"`
	// StreamCloses counts the watcher's stream closing, by close code (it reconnects from its
	// last id each time); Duplicates and OutOfOrder are event frames its client dropped.
	StreamCloses map[string]int64 `json:"streamCloses"`
	Duplicates   int64            `json:"duplicates"`
	OutOfOrder   int64            `json:"outOfOrder"`
}

// wellBehaved is one scenario's well-behaved client: the watcher logs in again and again,
// loads the page, and watches its stream; the publisher publishes messages on its socket.
type wellBehaved struct {
	// Set at construction.
	b       *bench
	prefix  string // of every message text it publishes: "wb RUN SCENARIO "
	watcher *client.Client
	pub     *client.Client

	cancelLoops, cancelStreams context.CancelFunc
	loops, streams             sync.WaitGroup
	delivered                  chan struct{} // a delivery happened (capacity 1)

	login, page, delay              timings
	loginFail, pageFail, publishErr tally
	closes                          tally

	mu          sync.Mutex
	seq         int64               // guarded by mu: the last message number taken
	sent        map[int64]time.Time // guarded by mu: when each message's publish began
	acked       map[int64]bool      // guarded by mu
	got         map[int64]bool      // guarded by mu: the messages delivered to the watcher
	updates     map[int64]int64     // guarded by mu: user-update events delivered, by user id
	nulMessages int64               // guarded by mu: delivered messages whose text holds U+0000
}

// startWellBehaved opens both streams, waits until they are live, and starts the loops.
func (b *bench) startWellBehaved(ctx context.Context, scenario string) (*wellBehaved, error) {
	w := &wellBehaved{b: b, prefix: "wb " + b.runID + " " + scenario + " ", delivered: make(chan struct{}, 1),
		sent: map[int64]time.Time{}, acked: map[int64]bool{}, got: map[int64]bool{}, updates: map[int64]int64{}}
	sctx, cancel := context.WithCancel(ctx)
	w.cancelStreams = cancel
	header := http.Header{"Origin": {b.origin}}
	open := func(a *account, consume func(client.Event)) (*client.Client, <-chan struct{}) {
		ready := make(chan struct{})
		var once sync.Once
		c := client.New(client.Config{URL: b.o.url, HTTPClient: a.hc, Header: header, MaxBackoff: time.Second,
			OnReady: func(int64) { once.Do(func() { close(ready) }) },
			OnClose: func(code int, _ string) {
				if a == b.watcher {
					w.closes.add(strconv.Itoa(code))
				}
			}})
		w.streams.Add(2)
		go func() { defer w.streams.Done(); c.Run(sctx) }()
		go func() {
			defer w.streams.Done()
			for ev := range c.Events() {
				consume(ev)
			}
		}()
		return c, ready
	}
	var watcherReady, pubReady <-chan struct{}
	w.watcher, watcherReady = open(b.watcher, w.consume)
	w.pub, pubReady = open(b.publisher, func(client.Event) {})
	deadline := time.After(b.o.requestTimeout)
	for _, ready := range []<-chan struct{}{watcherReady, pubReady} {
		select {
		case <-ready:
		case <-deadline:
			w.stopStreams()
			return nil, fmt.Errorf("the well-behaved streams were not live within %v", b.o.requestTimeout)
		case <-ctx.Done():
			w.stopStreams()
			return nil, ctx.Err()
		}
	}
	lctx, cancelLoops := context.WithCancel(ctx)
	w.cancelLoops = cancelLoops
	hc := newClient(b.good) // a browser of its own that signs in as the watcher
	// The loops stop with the scenario (lctx); a request they started runs to its end (ctx, and
	// its own timeout), so that the slowest answers, at the end of an attack, are counted.
	w.every(lctx, loginEvery, maxWaiting, &w.loginFail, func() {
		w.measure(ctx, &w.login, &w.loginFail, hc, "POST", "/api/auth/login", credentials(b.watcher.name, b.watcher.password))
	})
	w.every(lctx, pageEvery, maxWaiting, &w.pageFail, func() { w.measure(ctx, &w.page, &w.pageFail, hc, "GET", "/", nil) })
	w.every(lctx, publishEvery, maxPublishes, &w.publishErr, func() { w.publish(lctx) })
	return w, nil
}

// every starts f every period until ctx ends, with at most limit running at once; a tick
// beyond that counts in fails.
func (w *wellBehaved) every(ctx context.Context, period time.Duration, limit int, fails *tally, f func()) {
	w.loops.Add(1)
	go func() {
		defer w.loops.Done()
		slots := make(chan struct{}, limit)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case slots <- struct{}{}:
				w.loops.Add(1) // this goroutine's own count keeps the group above zero meanwhile
				go func() {
					defer w.loops.Done()
					defer func() { <-slots }()
					f()
				}()
			default:
				fails.add("client-backlog")
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

// measure makes one request and records its latency, and its outcome unless 200; a request
// cut short by the end of the whole run is not recorded.
func (w *wellBehaved) measure(ctx context.Context, t *timings, fails *tally, hc *http.Client, method, path string, body []byte) {
	start := time.Now()
	status, _, err := w.b.send(ctx, hc, method, path, body)
	if ctx.Err() != nil {
		return
	}
	t.add(time.Since(start))
	if err != nil || status != http.StatusOK {
		fails.add(outcome(status, err))
	}
}

// publish sends the next message over the publisher's socket and notes its ack.
func (w *wellBehaved) publish(ctx context.Context) {
	w.mu.Lock()
	w.seq++
	seq := w.seq
	w.sent[seq] = time.Now()
	w.mu.Unlock()
	pctx, cancel := context.WithTimeout(ctx, w.b.o.requestTimeout)
	defer cancel()
	_, err := w.pub.Publish(pctx, "message", map[string]string{"text": w.prefix + strconv.FormatInt(seq, 10)})
	switch {
	case err == nil:
		w.mu.Lock()
		w.acked[seq] = true
		w.mu.Unlock()
	case ctx.Err() == nil: // else the scenario ended meanwhile: not a failure of the node
		w.publishErr.add(publishOutcome(err))
	}
}

// consume notes one event delivered to the watcher.
func (w *wellBehaved) consume(ev client.Event) {
	now := time.Now()
	var d struct {
		ID   int64  `json:"id"`
		Text string `json:"text"`
	}
	json.Unmarshal(ev.Data, &d)
	w.mu.Lock()
	switch ev.Type {
	case "message":
		if s, ok := strings.CutPrefix(d.Text, w.prefix); ok {
			if seq, err := strconv.ParseInt(s, 10, 64); err == nil && !w.got[seq] {
				w.got[seq] = true
				if at, ok := w.sent[seq]; ok {
					w.delay.add(now.Sub(at))
				}
			}
		} else if strings.ContainsRune(d.Text, 0) {
			w.nulMessages++
		}
	case "user-update":
		w.updates[d.ID]++
	}
	w.mu.Unlock()
	select {
	case w.delivered <- struct{}{}:
	default:
	}
}

// userUpdates is how many user-update events about user id the watcher received.
func (w *wellBehaved) userUpdates(id int64) int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.updates[id]
}

// nulDelivered is how many messages holding U+0000 the watcher received.
func (w *wellBehaved) nulDelivered() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.nulMessages
}

// stop ends the loops, publishes one last message and waits (up to -settle) until every
// acknowledged message was delivered. Streams deliver in id order, so once the last one
// arrived, every event committed before it has arrived too. Then it closes the streams.
func (w *wellBehaved) stop(ctx context.Context) wbReport {
	w.cancelLoops()
	w.loops.Wait()
	w.publish(ctx)
	settle := time.NewTimer(w.b.o.settle)
	defer settle.Stop()
	for waiting := true; waiting && w.missing() > 0; {
		select {
		case <-w.delivered:
		case <-settle.C:
			waiting = false
		case <-ctx.Done():
			waiting = false
		}
	}
	w.stopStreams()
	stats := w.watcher.Stats()
	w.mu.Lock()
	published, delivered := int64(len(w.acked)), int64(len(w.got))
	w.mu.Unlock()
	return wbReport{
		LoginMs: w.login.quantiles(), LoginFailures: w.loginFail.counts(),
		PageMs: w.page.quantiles(), PageFailures: w.pageFail.counts(),
		Published: published, PublishFailures: w.publishErr.counts(),
		Delivered: delivered, Lost: w.missing(), EventDelayMs: w.delay.quantiles(),
		StreamCloses: w.closes.counts(), Duplicates: stats.Duplicates, OutOfOrder: stats.OutOfOrder,
	}
}

// missing counts the acknowledged messages not delivered yet.
func (w *wellBehaved) missing() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for seq := range w.acked {
		if !w.got[seq] {
			n++
		}
	}
	return n
}

func (w *wellBehaved) stopStreams() {
	w.cancelStreams()
	w.streams.Wait()
}
