package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// replayResult is what the anonymous full-history streams got.
type replayResult struct {
	Streams int `json:"streams"`
	// LogEvents is the node's watermark when they opened: about how many events each replays.
	LogEvents int64 `json:"logEvents"`
	// Opened counts the upgrades answered 101; Refused the others, by status or error.
	Opened  int64            `json:"opened"`
	Refused map[string]int64 `json:"refused"`
	// Ready counts the streams whose replay ended (the ready frame) within -duration, and
	// ReadyMs how long each took from its dial.
	Ready   int64     `json:"ready"`
	ReadyMs quantiles `json:"readyMs"`
	// Frames counts every frame the streams received.
	Frames int64 `json:"frames"`
	// Closes counts the streams the node closed before the end, by close code.
	Closes map[string]int64 `json:"closes"`
}

func (*replayResult) settled(*wellBehaved)  {}
func (*replayResult) check(map[string]bool) {}

// fillBatch is how many events one POST /api/publish carries while filling the log.
const fillBatch = 1000

// fill publishes events of type abuse-fill (audience everyone, about 200 bytes each) through
// POST /api/publish until the log's watermark is at least -fill.
func (b *bench) fill(ctx context.Context) error {
	hc := &http.Client{Transport: b.good}
	have, err := b.watermark(ctx)
	if err != nil {
		return err
	}
	if have >= b.o.fill {
		fmt.Fprintf(b.stderr, "anon-replay: the log holds %d events already\n", have)
		return nil
	}
	if b.o.apiKey == "" {
		return fmt.Errorf("anon-replay: the log holds %d events, fewer than -fill %d, and TIDINGS_API_KEY is empty: no key to publish more", have, b.o.fill)
	}
	header := http.Header{"Authorization": {"Bearer " + b.o.apiKey}}
	pad := strings.Repeat("x", 160)
	for n := have; n < b.o.fill; n += fillBatch {
		events := make([]map[string]any, min(fillBatch, b.o.fill-n))
		for i := range events {
			events[i] = map[string]any{"type": "abuse-fill", "data": map[string]any{"run": b.runID, "n": n + int64(i), "pad": pad}}
		}
		body, _ := json.Marshal(events)
		status, answer, err := b.sendHeader(ctx, hc, "POST", "/api/publish", body, header)
		if err != nil || status != http.StatusOK {
			return fmt.Errorf("anon-replay: fill the log: %s %s", outcome(status, err), bytes.TrimSpace(answer))
		}
		if (n-have)%(50*fillBatch) == 0 {
			fmt.Fprintf(b.stderr, "anon-replay: filling the log: %d of %d events\n", n, b.o.fill)
		}
	}
	return nil
}

// watermark is GET /api/last-event-id.
func (b *bench) watermark(ctx context.Context) (int64, error) {
	status, body, err := b.send(ctx, &http.Client{Transport: b.good}, "GET", "/api/last-event-id", nil)
	var w struct {
		LastEventID *int64 `json:"lastEventId"`
	}
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &w) != nil || w.LastEventID == nil {
		return 0, fmt.Errorf("last-event-id: %s %s", outcome(status, err), bytes.TrimSpace(body))
	}
	return *w.LastEventID, nil
}

// anonReplay opens -streams anonymous lastEventId=0 streams at once from the attacker's
// address, reads them as fast as they come, and closes them after -duration.
func (b *bench) anonReplay(ctx context.Context, _ *wellBehaved) (attackResult, error) {
	head, err := b.watermark(ctx)
	if err != nil {
		return nil, err
	}
	tr := newTransport(b.o.abuseFrom, 16, b.o.requestTimeout)
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	url := "ws" + strings.TrimPrefix(b.o.url, "http") + "/api/events?lastEventId=0"
	ctx, cancel := context.WithTimeout(ctx, b.o.duration)
	defer cancel()
	var opened, ready, frames atomic.Int64
	var refused, closes tally
	var readyIn timings
	var wg sync.WaitGroup
	for range b.o.streams {
		wg.Go(func() {
			start := time.Now()
			c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: http.Header{"Origin": {b.origin}}})
			if err != nil {
				if ctx.Err() == nil {
					status := 0
					if resp != nil {
						status, err = resp.StatusCode, nil
					}
					refused.add(outcome(status, err))
				}
				return
			}
			defer c.CloseNow()
			opened.Add(1)
			c.SetReadLimit(1 << 20)
			first := make([]byte, len(`{"type":"ready"`))
			for {
				_, r, err := c.Reader(ctx) // the end of ctx closes the stream
				if err != nil {
					if ctx.Err() == nil {
						var ce websocket.CloseError
						if errors.As(err, &ce) {
							closes.add(strconv.Itoa(int(ce.Code)))
						} else {
							closes.add("connection-error")
						}
					}
					return
				}
				n, _ := io.ReadFull(r, first)
				if string(first[:n]) == `{"type":"ready"` {
					ready.Add(1)
					readyIn.add(time.Since(start))
				}
				io.Copy(io.Discard, r)
				frames.Add(1)
			}
		})
	}
	wg.Wait()
	return &replayResult{Streams: b.o.streams, LogEvents: head, Opened: opened.Load(), Refused: refused.counts(),
		Ready: ready.Load(), ReadyMs: readyIn.quantiles(), Frames: frames.Load(), Closes: closes.counts()}, nil
}
