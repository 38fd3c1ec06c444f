package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"tidings/realtime/client"
)

// centrifugo is the peer of the design's comparison: Centrifugo (v6) with history and
// recovery on its memory engine. Each socket speaks its JSON client protocol on
// /connection/websocket (connect, then subscribe to one channel with recovery; publications
// carry their offset in the channel's stream), and publishes go through its HTTP server API
// (POST /api/publish with X-API-Key), one per call, with the same data as tidings' events.
// The channel's namespace must keep history and force recovery (docs/performance.md has the
// configuration used).
type centrifugo struct {
	wsURL, apiURL, channel string
	header                 http.Header // the API key
}

func newCentrifugo(o options) *centrifugo {
	base := strings.TrimRight(o.url, "/")
	ws := "ws" + strings.TrimPrefix(base, "http") // http: ws, https: wss
	return &centrifugo{wsURL: ws + "/connection/websocket", apiURL: base + "/api/publish", channel: o.channel,
		header: http.Header{"X-Api-Key": {o.apiKey}}}
}

func (c *centrifugo) open(hc *http.Client, _ int, prev stream, h hooks) stream {
	s := &cfStream{srv: c, hc: hc, hooks: h, events: make(chan client.Event, 64)}
	s.last.Store(-1)
	if p, ok := prev.(*cfStream); ok {
		s.last.Store(p.last.Load())
		s.epoch = p.epochNow()
	}
	return s
}

func (c *centrifugo) publish(ctx context.Context, hc *http.Client, data []byte) (int64, error) {
	body, _ := json.Marshal(map[string]any{"channel": c.channel, "data": json.RawMessage(data)})
	var answer struct {
		Error  *cfError `json:"error"`
		Result struct {
			Offset int64  `json:"offset"`
			Epoch  string `json:"epoch"`
		} `json:"result"`
	}
	if err := post(ctx, hc, c.apiURL, c.header, body, &answer); err != nil {
		return 0, err
	}
	if answer.Error != nil {
		return 0, answer.Error
	}
	return answer.Result.Offset, nil
}

// cfError is an error of the peer's protocol or API.
type cfError struct {
	Code    uint32 `json:"code"`
	Message string `json:"message"`
}

func (e *cfError) Error() string { return fmt.Sprintf("centrifugo: error %d: %s", e.Code, e.Message) }

// cfReply is one message from the peer's server: a reply to a command (id > 0) or a push.
type cfReply struct {
	ID        uint32             `json:"id"`
	Error     *cfError           `json:"error"`
	Push      *cfPush            `json:"push"`
	Connect   *cfConnectResult   `json:"connect"`
	Subscribe *cfSubscribeResult `json:"subscribe"`
}

type cfPush struct {
	Channel     string          `json:"channel"`
	Pub         *cfPublication  `json:"pub"`
	Unsubscribe json.RawMessage `json:"unsubscribe"`
	Disconnect  json.RawMessage `json:"disconnect"`
}

type cfPublication struct {
	Data   json.RawMessage `json:"data"`
	Offset int64           `json:"offset"`
}

type cfConnectResult struct {
	Client string `json:"client"`
	Ping   uint32 `json:"ping"`
	Pong   bool   `json:"pong"`
}

type cfSubscribeResult struct {
	Recoverable   bool            `json:"recoverable"`
	Epoch         string          `json:"epoch"`
	Offset        int64           `json:"offset"`
	Publications  []cfPublication `json:"publications"`
	Recovered     bool            `json:"recovered"`
	WasRecovering bool            `json:"was_recovering"`
}

// isPing: the server's ping is an empty reply, {}.
func (r *cfReply) isPing() bool {
	return r.ID == 0 && r.Error == nil && r.Push == nil && r.Connect == nil && r.Subscribe == nil
}

// parseReplies splits one WebSocket message into its replies: the JSON protocol sends one or
// more objects, each ended by a newline (the last one's newline may be missing).
func parseReplies(msg []byte) ([]cfReply, error) {
	var out []cfReply
	for line := range bytes.SplitSeq(msg, []byte("\n")) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var r cfReply
		if err := json.Unmarshal(line, &r); err != nil {
			return out, fmt.Errorf("centrifugo: bad reply %.200q: %w", line, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// cfStream is one socket to the peer, subscribed to one channel; it reconnects and recovers
// from its last offset like an SDK would, and delivers each publication as a client.Event
// whose ID is its offset.
type cfStream struct {
	// Set at construction.
	srv    *centrifugo
	hc     *http.Client
	hooks  hooks
	events chan client.Event

	last       atomic.Int64 // offset of the last publication delivered, -1 before any position
	duplicates atomic.Int64
	outOfOrder atomic.Int64

	mu    sync.Mutex
	epoch string // guarded by mu: the stream's epoch, from the subscribe reply
}

func (s *cfStream) Events() <-chan client.Event { return s.events }

func (s *cfStream) Stats() client.Stats {
	return client.Stats{Duplicates: s.duplicates.Load(), OutOfOrder: s.outOfOrder.Load()}
}

func (s *cfStream) epochNow() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.epoch
}

// Run connects and reconnects (with the same backoff and jitter as tidings' client) until ctx
// ends, then closes Events.
func (s *cfStream) Run(ctx context.Context) error {
	defer close(s.events)
	backoff := 100 * time.Millisecond
	for {
		start := time.Now()
		s.connectOnce(ctx)
		if ctx.Err() != nil {
			return nil
		}
		s.hooks.callEnded()
		if time.Since(start) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(rand.N(backoff + 1)):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// connectOnce holds one connection: connect, subscribe with recovery, then publications.
func (s *cfStream) connectOnce(ctx context.Context) error {
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	ws, _, err := websocket.Dial(dctx, s.srv.wsURL, &websocket.DialOptions{HTTPClient: s.hc})
	cancel()
	if err != nil {
		return err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)

	if err := s.write(ctx, ws, map[string]any{"id": 1, "connect": map[string]any{}}); err != nil {
		return err
	}
	var pong bool
	sub := map[string]any{"channel": s.srv.channel}
	if last := s.last.Load(); last >= 0 {
		sub["recover"], sub["offset"], sub["epoch"] = true, last, s.epochNow()
	}
	for {
		_, msg, err := ws.Read(ctx)
		if err != nil {
			return err
		}
		replies, err := parseReplies(msg)
		if err != nil {
			return err
		}
		for _, r := range replies {
			switch {
			case r.Error != nil:
				return r.Error
			case r.isPing():
				if pong {
					if err := s.write(ctx, ws, struct{}{}); err != nil {
						return err
					}
				}
			case r.Connect != nil:
				s.hooks.callOpened()
				pong = r.Connect.Pong
				if err := s.write(ctx, ws, map[string]any{"id": 2, "subscribe": sub}); err != nil {
					return err
				}
			case r.Subscribe != nil:
				if err := s.subscribed(ctx, r.Subscribe); err != nil {
					return err
				}
			case r.Push != nil && r.Push.Pub != nil:
				if err := s.deliver(ctx, r.Push.Pub); err != nil {
					return err
				}
			case r.Push != nil && (r.Push.Unsubscribe != nil || r.Push.Disconnect != nil):
				return errors.New("centrifugo: unsubscribed or disconnected by the server")
			}
		}
	}
}

// subscribed delivers the recovered publications, takes the stream's position, and is ready.
func (s *cfStream) subscribed(ctx context.Context, r *cfSubscribeResult) error {
	s.mu.Lock()
	s.epoch = r.Epoch
	s.mu.Unlock()
	for i := range r.Publications {
		if err := s.deliver(ctx, &r.Publications[i]); err != nil {
			return err
		}
	}
	if s.last.Load() < r.Offset {
		s.last.Store(r.Offset) // a fresh subscription starts live from the stream's top
	}
	s.hooks.callReady()
	return nil
}

// deliver hands a publication on, once and in offset order; like tidings' client, it counts
// and drops a repeated or older offset.
func (s *cfStream) deliver(ctx context.Context, p *cfPublication) error {
	if last := s.last.Load(); p.Offset <= last {
		if p.Offset == last {
			s.duplicates.Add(1)
		} else {
			s.outOfOrder.Add(1)
		}
		return nil
	}
	select {
	case s.events <- client.Event{ID: p.Offset, Type: "load", Data: p.Data}:
		s.last.Store(p.Offset)
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *cfStream) write(ctx context.Context, ws *websocket.Conn, v any) error {
	b, _ := json.Marshal(v)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return ws.Write(ctx, websocket.MessageText, b)
}
