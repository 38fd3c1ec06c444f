package main

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"tidings/realtime/client"
)

// nulResult is what the NUL flood got.
type nulResult struct {
	Sockets int   `json:"sockets"`
	Sent    int64 `json:"sent"`
	// Answers counts the answers to the flood's publishes: "ack", an error code, or
	// "not-connected", "connection-lost", "timeout".
	Answers map[string]int64 `json:"answers"`
	// Closes counts the flood sockets' closes by close code (each socket opens again after
	// one, for as long as the flood lasts).
	Closes map[string]int64 `json:"closes"`
	// Delivered counts the messages holding U+0000 that reached the watcher's stream.
	Delivered int64 `json:"delivered"`
}

func (r *nulResult) settled(w *wellBehaved) { r.Delivered = w.nulDelivered() }

// check: every NUL message is refused as invalid (or rate-limited, or its socket closed), never
// answered internal nor stored.
func (r *nulResult) check(c map[string]bool) {
	c["nulRefused"] = r.Sent > 0 && r.Answers["ack"] == 0 && r.Answers["internal"] == 0 && r.Delivered == 0
}

// Bounds of the flood, whatever the node does.
const (
	maxInFlight = 8   // publishes awaiting their answer on one socket, as the node allows
	maxReopens  = 100 // times one flood socket opens again after its stream ended
)

// nulFlood publishes messages whose text holds U+0000 from -nul-sockets signed-in sockets,
// -nul-rate each per second, for -duration.
func (b *bench) nulFlood(ctx context.Context, _ *wellBehaved) (attackResult, error) {
	tr := newTransport(b.o.abuseFrom, b.o.nulSocket, b.o.requestTimeout)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Jar: b.nul.hc.Jar, Transport: tr}
	ctx, cancel := context.WithTimeout(ctx, b.o.duration)
	defer cancel()
	var answers, closes tally
	var sent atomic.Int64
	var wg sync.WaitGroup
	for range b.o.nulSocket {
		wg.Go(func() {
			for range maxReopens {
				if ctx.Err() != nil {
					return
				}
				b.nulSocketOnce(ctx, hc, &answers, &closes, &sent)
			}
		})
	}
	wg.Wait()
	return &nulResult{Sockets: b.o.nulSocket, Sent: sent.Load(), Answers: answers.counts(), Closes: closes.counts()}, nil
}

// nulSocketOnce opens one stream and floods it until the stream gives up or ctx ends.
func (b *bench) nulSocketOnce(ctx context.Context, hc *http.Client, answers, closes *tally, sent *atomic.Int64) {
	ready := make(chan struct{})
	var once sync.Once
	c := client.New(client.Config{URL: b.o.url, HTTPClient: hc, Header: http.Header{"Origin": {b.origin}}, MaxBackoff: time.Second,
		OnReady: func(int64) { once.Do(func() { close(ready) }) },
		OnClose: func(code int, _ string) { closes.add(strconv.Itoa(code)) }})
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran, drained := make(chan struct{}), make(chan struct{})
	go func() { defer close(ran); c.Run(cctx) }()
	go func() {
		defer close(drained)
		for range c.Events() {
		}
	}()
	defer func() { cancel(); <-ran; <-drained }()
	select {
	case <-ready:
	case <-ran:
		return
	case <-ctx.Done():
		return
	}
	t := time.NewTicker(time.Second / time.Duration(b.o.nulRate))
	defer t.Stop()
	slots := make(chan struct{}, maxInFlight)
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ran:
			return
		case <-t.C:
		}
		select {
		case slots <- struct{}{}:
		default:
			continue // as many waiting as the node allows
		}
		n := sent.Add(1)
		wg.Go(func() {
			defer func() { <-slots }()
			pctx, pcancel := context.WithTimeout(ctx, b.o.requestTimeout)
			defer pcancel()
			_, err := c.Publish(pctx, "message", map[string]string{"text": "nul\x00" + strconv.FormatInt(n, 10)})
			if ctx.Err() == nil {
				answers.add(publishOutcome(err))
			}
		})
	}
}

// publishOutcome names how a socket publish ended: "ack", the node's error code, or how it
// failed.
func publishOutcome(err error) string {
	var refused *client.PublishError
	switch {
	case err == nil:
		return "ack"
	case errors.As(err, &refused):
		return refused.Code
	case errors.Is(err, client.ErrNotConnected):
		return "not-connected"
	case errors.Is(err, client.ErrConnectionLost):
		return "connection-lost"
	default:
		return outcome(0, err)
	}
}
