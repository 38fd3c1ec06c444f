package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"

	"tidings/data"
	"tidings/web"
	"tidings/web/webtest"
)

// The clients of TestSoak: each opens streams one after the other on random nodes, with a
// random lastEventId, keeps each open for a random while (publishing messages on it when
// signed in), and closes it, cleanly or not. Every frame is kept for the checks.

// soakViewer is who a client is: anonymous (the zero value) or an account.
type soakViewer struct {
	id  int64
	typ data.UserType
}

// soakClient is one reconnecting client. Its fields are owned by its goroutine.
type soakClient struct {
	name   string
	hc     *http.Client // its cookie jar holds the session, if any
	viewer soakViewer
	idx    int
	rng    *rand.Rand
	pos    int64 // the id it is current up to: the last event, ready or reset it got
	opened int   // streams opened
	broken bool  // a failure of the test's own made it stop
}

// The ways a stream's lastEventId is chosen.
const (
	startLast   = "last"   // where the client is: the last id it saw
	startNone   = "none"   // no lastEventId: live from the watermark
	startZero   = "zero"   // 0: everything (or reset, once retention ran)
	startFuture = "future" // above the watermark: another history
	startPruned = "pruned" // below the pruned floor
)

func pickStart(rng *rand.Rand) string {
	switch n := rng.IntN(20); {
	case n < 9:
		return startLast
	case n < 12:
		return startNone
	case n < 14:
		return startZero
	case n < 16:
		return startFuture
	default:
		return startPruned
	}
}

// soak opens streams until ctx ends, then calls done.
func (c *soakClient) soak(ctx context.Context, s *soak, idx int, done func()) {
	defer done()
	c.idx, c.rng = idx, s.rng(rngClient+uint64(idx)<<8)
	for ctx.Err() == nil && !c.broken {
		c.stream(ctx, s, pickStart(c.rng), false)
	}
}

// finalStream resumes where the client is, once the writers stopped, and stays until it got
// everything up to s.wEnd.
func (c *soakClient) finalStream(s *soak) {
	if !c.broken {
		c.stream(context.Background(), s, startLast, true)
	}
}

// streamRec is one stream: how it was opened, and every frame it got.
type streamRec struct {
	// Set before the stream opens.
	client      string
	node        string
	start       string // how lastEventId was chosen
	viewer      soakViewer
	after       *int64 // the lastEventId; nil when none was given
	w0          int64  // GET /api/last-event-id on the node right before the stream opened
	floorBefore int64  // the pruned floor read before w0
	final       bool   // the stream after the soak, which must catch up to soak.wEnd

	mu        sync.Mutex
	frames    []soakFrame       // guarded by mu
	texts     map[string]string // guarded by mu: the text of each message published, by ref
	closeCode int               // guarded by mu: how the stream ended, as the client saw it
}

// soakFrame is a server frame as the soak keeps it.
type soakFrame struct {
	Type        string  `json:"type"`
	ID          int64   `json:"id"`
	LastEventID int64   `json:"lastEventId"`
	Ref         *string `json:"ref"`
	Code        string  `json:"code"`
	Event       struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"event"`
	Session *struct {
		Account *struct {
			ID   int64         `json:"id"`
			Type data.UserType `json:"type"`
		} `json:"account"`
	} `json:"session"`

	// For reset and ready: what the database had right after the frame arrived.
	w1    int64 // GET /api/last-event-id on the same node; -1 if it failed
	floor int64 // the pruned floor (reset only)
}

// stream opens one stream on a random node, holds it, closes it and records it.
func (c *soakClient) stream(ctx context.Context, s *soak, start string, final bool) {
	c.opened++
	node := c.rng.IntN(len(s.nodes))
	n := s.nodes[node]
	r := &streamRec{client: c.name, node: soakNodes[node], start: start, viewer: c.viewer, final: final, texts: map[string]string{}}
	octx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var err error
	if r.floorBefore, err = s.floor(octx); err == nil {
		r.w0, err = webtest.Watermark(s.hc, n.URL)
	}
	if err != nil {
		s.t.Errorf("client %s: %v", c.name, err)
		c.broken = true
		return
	}
	var after int64
	switch start {
	case startLast:
		after = c.pos
	case startFuture:
		after = r.w0 + 100_000 + c.rng.Int64N(1000)
	case startPruned:
		if r.floorBefore > 0 {
			after = c.rng.Int64N(r.floorBefore) // its next event, at most the floor, is gone
		} else {
			r.start = startZero // nothing was pruned yet
		}
	}
	u := "ws://" + n.Addr + "/api/events"
	if start != startNone {
		r.after = &after
		u += "?lastEventId=" + strconv.FormatInt(after, 10)
	}
	ws, _, err := websocket.Dial(octx, u, &websocket.DialOptions{HTTPClient: c.hc, Subprotocols: []string{web.Subprotocol}})
	if err != nil {
		s.t.Errorf("client %s: open %s: %v", c.name, u, err)
		c.broken = true
		return
	}
	ws.SetReadLimit(1 << 20)
	read := make(chan struct{})
	go func() {
		defer close(read)
		r.read(s, ws, n.URL)
	}()
	stopPublishing := make(chan struct{})
	var publishing sync.WaitGroup
	if c.viewer.id != 0 && !final {
		rng := s.rng(rngPublisher + uint64(c.idx)<<20 + uint64(c.opened))
		publishing.Go(func() { r.publish(s, ws, rng, fmt.Sprintf("%s/%d", c.name, c.opened), stopPublishing) })
	}
	if final {
		r.waitCurrent(s, read)
	} else {
		t := time.NewTimer(between(c.rng, 50*time.Millisecond, 1500*time.Millisecond))
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-read: // the server closed it
		}
		t.Stop()
	}
	close(stopPublishing)
	publishing.Wait()
	if c.rng.IntN(2) == 0 {
		ws.Close(websocket.StatusNormalClosure, "")
	} else {
		ws.CloseNow()
	}
	<-read
	r.mu.Lock()
	for _, f := range r.frames {
		switch f.Type {
		case "event":
			c.pos = max(c.pos, f.ID)
		case "ready", "reset":
			c.pos = max(c.pos, f.LastEventID)
		}
	}
	r.mu.Unlock()
	s.mu.Lock()
	s.streams = append(s.streams, r)
	s.mu.Unlock()
}

// read keeps every frame until the socket ends. After a reset or a ready it reads the
// database's watermark (and, after a reset, the pruned floor) for the checks.
func (r *streamRec) read(s *soak, ws *websocket.Conn, url string) {
	for {
		_, b, err := ws.Read(context.Background())
		if err != nil {
			r.mu.Lock()
			r.closeCode = int(websocket.CloseStatus(err))
			r.mu.Unlock()
			return
		}
		var f soakFrame
		if err := json.Unmarshal(b, &f); err != nil {
			f = soakFrame{Type: "(not JSON: " + string(b) + ")"}
		}
		if f.Type == "reset" || f.Type == "ready" {
			if f.w1, err = webtest.Watermark(s.hc, url); err != nil {
				s.t.Errorf("client %s: after %s: %v", r.client, f.Type, err)
				f.w1 = -1
			}
			if f.Type == "reset" {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				if f.floor, err = s.floor(ctx); err != nil {
					s.t.Errorf("client %s: after reset: %v", r.client, err)
				}
				cancel()
			}
		}
		r.mu.Lock()
		r.frames = append(r.frames, f)
		r.mu.Unlock()
	}
}

// publish sends a message on the stream every few hundred milliseconds until stop.
func (r *streamRec) publish(s *soak, ws *websocket.Conn, rng *rand.Rand, name string, stop <-chan struct{}) {
	for i := 0; ; i++ {
		t := time.NewTimer(between(rng, 100*time.Millisecond, 600*time.Millisecond))
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
		ref, text := fmt.Sprint("p", i), fmt.Sprintf("m %s/%d", name, i)
		r.mu.Lock()
		r.texts[ref] = text
		r.mu.Unlock()
		frame, err := json.Marshal(map[string]any{"type": "publish", "ref": ref,
			"event": map[string]any{"type": "message", "data": map[string]string{"text": text}}})
		if err != nil {
			panic(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = ws.Write(ctx, websocket.MessageText, frame)
		cancel()
		if err != nil {
			return // the stream is over
		}
		s.published.Add(1)
	}
}

// waitCurrent waits, with a bound, until the stream has had ready and every event up to
// s.wEnd that its viewer may see, or until the server closed it.
func (r *streamRec) waitCurrent(s *soak, read <-chan struct{}) {
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !r.current(s) {
		select {
		case <-read:
			return
		case <-deadline.C:
			return // the checks say what is missing
		case <-tick.C:
		}
	}
}

// current reports whether the stream is current up to s.wEnd.
func (r *streamRec) current(s *soak) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	start, known := int64(0), r.after != nil
	if known {
		start = *r.after
	}
	last, ready := int64(0), false
	for _, f := range r.frames {
		switch f.Type {
		case "reset":
			start, known = f.LastEventID, true
		case "ready":
			ready = true
			if !known {
				start, known = f.LastEventID, true
			}
			last = max(last, f.LastEventID)
		case "event":
			last = max(last, f.ID)
		}
	}
	return ready && last >= s.mirror.lastVisible(r.viewer, start, s.wEnd)
}
