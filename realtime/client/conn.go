package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// answer is the server's reply to a client frame: ack, error or pong.
type answer struct {
	Type    string
	ID      int64
	Code    string
	Message string
}

// conn is one connection's pending requests.
type conn struct {
	ws    *websocket.Conn
	token string // owned by the read goroutine: the bearer token the connection knows of

	mu      sync.Mutex
	waiting map[string]chan answer // guarded by mu; nil once the connection is gone
}

// request writes frame and waits for the answer with ref.
func (cn *conn) request(ctx context.Context, ref string, frame []byte) (answer, error) {
	return cn.requestUntil(ctx, ref, frame, "", nil)
}

// requestUntil writes frame, then next (when given), and waits for the answer with ref, or
// for the one with nextRef: the server answers the frames of a socket in order, so once the
// answer to next has come, none is coming for frame. It returns the answer with ref if it came
// first, else the one with nextRef.
func (cn *conn) requestUntil(ctx context.Context, ref string, frame []byte, nextRef string, next []byte) (answer, error) {
	ch := make(chan answer, 1)
	var nextCh chan answer // nil, which never receives, without next
	if next != nil {
		nextCh = make(chan answer, 1)
	}
	cn.mu.Lock()
	if cn.waiting == nil {
		cn.mu.Unlock()
		return answer{}, ErrNotConnected
	}
	cn.waiting[ref] = ch
	if next != nil {
		cn.waiting[nextRef] = nextCh
	}
	cn.mu.Unlock()
	defer func() {
		cn.mu.Lock()
		if cn.waiting != nil {
			delete(cn.waiting, ref)
			if next != nil {
				delete(cn.waiting, nextRef)
			}
		}
		cn.mu.Unlock()
	}()
	for _, f := range [][]byte{frame, next} {
		if f == nil {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := cn.ws.Write(wctx, websocket.MessageText, f)
		cancel()
		if err != nil {
			return answer{}, ErrConnectionLost
		}
	}
	select {
	case a, ok := <-ch:
		if !ok {
			return answer{}, ErrConnectionLost
		}
		return a, nil
	case a, ok := <-nextCh:
		if !ok {
			return answer{}, ErrConnectionLost
		}
		// The reader handed over the answer to frame, if any, before this one.
		select {
		case first, ok := <-ch:
			if ok {
				return first, nil
			}
		default:
		}
		return a, nil
	case <-ctx.Done():
		return answer{}, ctx.Err()
	}
}

// answered hands an answer to its waiter.
func (cn *conn) answered(ref string, a answer) {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	if ch, ok := cn.waiting[ref]; ok {
		ch <- a
		delete(cn.waiting, ref)
	}
}

// gone fails every waiter.
func (cn *conn) gone() {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	for _, ch := range cn.waiting {
		close(ch)
	}
	cn.waiting = nil
}

// serverFrame is any frame the server sends.
type serverFrame struct {
	Type  string `json:"type"`
	ID    int64  `json:"id"`
	Event struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
		Time time.Time       `json:"time"`
	} `json:"event"`
	LastEventID int64           `json:"lastEventId"`
	Ref         *string         `json:"ref"`
	Code        string          `json:"code"`
	Message     string          `json:"message"`
	Session     json.RawMessage `json:"session"`
	Notice      *string         `json:"notice"`
	Token       string          `json:"token"`
	// Of the ephemeral frames (docs/protocol.md section 8): online is a list in presence and a
	// boolean in presence-change.
	Online json.RawMessage `json:"online"`
	UserID int64           `json:"userId"`
	From   int64           `json:"from"`
	Signal struct {
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	} `json:"signal"`
}

// presencePrefix starts every presence frame tidings writes.
const presencePrefix = `{"type":"presence","online":[`

// knownFrames are the frame types the client acts on; it ignores every other (docs/protocol.md
// section 2: the protocol grows by adding frame types).
var knownFrames = map[string]bool{
	"session": true, "event": true, "reset": true, "ready": true, "ack": true, "error": true, "pong": true,
	"presence": true, "presence-change": true, "signal": true, "token": true,
}

// connectOnce holds one connection until it ends and returns its close code (-1 when it ended
// without one) and reason.
func (c *Client) connectOnce(ctx context.Context) (code int, reason string, err error) {
	u, err := c.streamURL()
	if err != nil {
		return -1, "", err
	}
	header := c.cfg.Header
	token := c.Token() // the bearer token this connection presents, if any
	if c.bearer() {
		header = header.Clone()
		if header == nil {
			header = http.Header{}
		}
		header.Del("Authorization")
		if token != "" {
			// A Go client sets headers, so the token never needs the subprotocol browsers use.
			header.Set("Authorization", "Bearer "+token)
		}
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	ws, resp, err := websocket.Dial(dctx, u, &websocket.DialOptions{
		HTTPClient: c.cfg.HTTPClient, HTTPHeader: header, Subprotocols: []string{"tidings.v1"},
	})
	cancel()
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			// Answered with a status instead of the upgrade: Run decides from it.
			refused := upgradeRefused(resp)
			return -1, "upgrade refused: " + refused.statusText(), refused
		}
		return -1, "", err
	}
	defer ws.CloseNow()
	ws.SetReadLimit(16 << 20)
	cn := &conn{ws: ws, waiting: map[string]chan answer{}, token: token}
	c.mu.Lock()
	c.conn = cn
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.conn = nil
		c.mu.Unlock()
		cn.gone()
	}()
	// Reads use no context of their own (each would cost a context registration per frame):
	// the end of ctx closes the socket instead, which ends the read in progress.
	stop := context.AfterFunc(ctx, func() { ws.CloseNow() })
	defer stop()
	var buf bytes.Buffer // reused for every frame: the frame's fields are copied out of it
	for {
		msg, err := readFrame(ws, &buf, c.cfg.OnPresence == nil)
		if err != nil {
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				return int(ce.Code), ce.Reason, nil
			}
			if ctx.Err() != nil {
				return -1, "", ctx.Err()
			}
			return -1, "", err
		}
		if msg == nil {
			continue // who is online, which nobody asked for
		}
		var f serverFrame
		if err := decodeFrame(msg, &f); err != nil {
			if bytes.Contains(msg, []byte(`"token"`)) {
				msg = []byte("[a frame that may hold a session token]") // errors end up in logs
			}
			return -1, "", fmt.Errorf("tidings: bad frame %q: %w", msg, err)
		}
		if err := c.handle(ctx, cn, f); err != nil {
			return -1, "", err
		}
		if buf.Cap() > 1<<20 {
			buf = bytes.Buffer{} // let go of what one huge frame grew
		}
	}
}

// readFrame reads the next message into buf and returns its bytes, valid until the next call.
// With skipPresence, a presence frame is read past without being kept (2,000 ids are 10 KB,
// which every stream of a reconnect storm would otherwise grow its buffer to hold) and
// reported as nil bytes.
func readFrame(ws *websocket.Conn, buf *bytes.Buffer, skipPresence bool) ([]byte, error) {
	_, r, err := ws.Reader(context.Background())
	if err != nil {
		return nil, err
	}
	buf.Reset()
	if skipPresence {
		var head [len(presencePrefix)]byte
		n, err := io.ReadFull(r, head[:])
		if err == nil && string(head[:]) == presencePrefix {
			if _, err := io.Copy(io.Discard, r); err != nil {
				return nil, err
			}
			return nil, nil
		}
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return nil, err
		}
		buf.Write(head[:n])
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// handle acts on one server frame.
func (c *Client) handle(ctx context.Context, cn *conn, f serverFrame) error {
	switch f.Type {
	case "session":
		s := Session{Session: f.Session}
		if f.Notice != nil {
			s.Notice = *f.Notice
		}
		if c.bearer() && cn.token != "" && (len(f.Session) == 0 || bytes.Equal(f.Session, []byte("null"))) {
			// The token the upgrade presented names no session (any more): forget it.
			c.swapToken(cn.token, "")
			cn.token = ""
		}
		if c.cfg.OnSession != nil {
			c.cfg.OnSession(s)
		}
		c.notice(s.Notice)
	case "token":
		// The successor of this connection's bearer token (docs/protocol.md, "Bearer
		// sessions"): kept before the 4002 that may follow, so that the next upgrade uses it.
		if c.bearer() && cn.token != "" && f.Token != "" {
			c.swapToken(cn.token, f.Token)
			cn.token = f.Token
		}
	case "event":
		if last := c.last.Load(); f.ID <= last {
			// Already delivered: a server never sends it twice, but a client checks.
			if f.ID == last {
				c.duplicates.Add(1)
			} else {
				c.outOfOrder.Add(1)
			}
			return nil
		}
		return c.deliver(ctx, Event{ID: f.ID, Type: f.Event.Type, Data: f.Event.Data, Time: f.Event.Time})
	case "reset":
		// Through Events, in its place: the caller knows which events came before it.
		if err := c.deliver(ctx, Event{ID: f.LastEventID, Reset: true}); err != nil {
			return err
		}
		if c.cfg.OnReset != nil {
			c.cfg.OnReset(f.LastEventID)
		}
	case "ready":
		if c.last.Load() < f.LastEventID {
			c.last.Store(f.LastEventID) // a live start: resume from here next time
		}
		if c.cfg.OnReady != nil {
			c.cfg.OnReady(f.LastEventID)
		}
	case "ack", "error", "pong":
		if f.Ref != nil {
			cn.answered(*f.Ref, answer{Type: f.Type, ID: f.ID, Code: f.Code, Message: f.Message})
		} else if f.Type == "error" {
			c.log.Warn("tidings: the server refused a frame", "code", f.Code, "message", f.Message)
		}
	default:
		if _, err := c.presenceFrame(&f); err != nil {
			return err
		}
		// Any other type is one the client does not know: ignored.
	}
	return nil
}

// deliver hands ev, an event or a reset, to the consumer of Events. The last id is stored
// before the hand-over, so that LastEventID already says ev.ID to whoever has received ev, and
// taken back if ev is never handed over: a caller that keeps LastEventID to start from next
// time is given ev again then.
func (c *Client) deliver(ctx context.Context, ev Event) error {
	prev := c.last.Swap(ev.ID)
	select {
	case c.events <- ev:
		return nil
	case <-ctx.Done():
		c.last.Store(prev)
		return ctx.Err()
	}
}

// decodeFrame decodes a server frame. Event frames, nearly all of a stream, are read by
// parseEventFrame when they have the exact layout tidings writes; anything else, by
// encoding/json. A frame of a type the client does not know decodes as that type alone,
// whatever its other fields hold: it is ignored, and must not end the connection.
func decodeFrame(msg []byte, f *serverFrame) error {
	if parseEventFrame(msg, f) {
		return nil
	}
	*f = serverFrame{}
	err := json.Unmarshal(msg, f)
	if err == nil {
		return nil
	}
	var t struct {
		Type string `json:"type"`
	}
	if json.Unmarshal(msg, &t) == nil && !knownFrames[t.Type] {
		*f = serverFrame{Type: t.Type}
		return nil
	}
	return err
}

// parseEventFrame decodes msg into f if it is an event frame laid out as tidings writes it:
// {"type":"event","id":N,"event":{"type":"T","data":D,"time":"RFC 3339"}}, with a type free of
// escapes and valid JSON data. It reports false, leaving f in any state, for anything else.
func parseEventFrame(msg []byte, f *serverFrame) bool {
	rest, ok := bytes.CutPrefix(msg, []byte(`{"type":"event","id":`))
	if !ok {
		return false
	}
	n := 0
	for n < len(rest) && n < 19 && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	if n == 0 || (rest[0] == '0' && n > 1) {
		return false
	}
	id, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	if err != nil {
		return false
	}
	if rest, ok = bytes.CutPrefix(rest[n:], []byte(`,"event":{"type":"`)); !ok {
		return false
	}
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return false
	}
	typ := rest[:end]
	for _, c := range typ {
		if c < 0x20 || c == '\\' || c >= 0x80 {
			return false // escapes, controls and non-ASCII: encoding/json knows best
		}
	}
	if rest, ok = bytes.CutPrefix(rest[end+1:], []byte(`,"data":`)); !ok {
		return false
	}
	if rest, ok = bytes.CutSuffix(rest, []byte(`"}}`)); !ok {
		return false
	}
	cut := bytes.LastIndex(rest, []byte(`,"time":"`))
	if cut < 0 {
		return false
	}
	data, stamp := bytes.Trim(rest[:cut], " \t\r\n"), rest[cut+len(`,"time":"`):]
	if !json.Valid(data) || bytes.IndexByte(stamp, '"') >= 0 || bytes.IndexByte(stamp, '\\') >= 0 {
		return false
	}
	t, err := time.Parse(time.RFC3339Nano, string(stamp))
	if err != nil {
		return false
	}
	*f = serverFrame{Type: "event", ID: id}
	f.Event.Type = string(typ)
	f.Event.Data = bytes.Clone(data)
	f.Event.Time = t
	return true
}
