package realtime

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// StreamConfig configures every stream of a hub. The zero value of each field means its default.
type StreamConfig struct {
	// MaxLag is how many events a live stream may have waiting before it is closed with 4004
	// (default 1,024), once the oldest of them has waited SlowAfter.
	MaxLag int
	// SlowAfter is how long the oldest waiting event of a stream over MaxLag may wait before
	// the stream counts as slow (default 1s). It spares healthy clients a burst of events
	// published at once, which every socket would otherwise see as a full queue.
	SlowAfter time.Duration
	// WriteTimeout bounds each write and ping; a stalled write closes the socket (default 10s).
	WriteTimeout time.Duration
	// PingInterval is how often an idle stream pings its peer to find dead ones (default 30s).
	PingInterval time.Duration
	// ReadLimit is the largest client message in bytes; a larger one closes with 1009
	// (default 64 KiB).
	ReadLimit int64
	// PublishTimeout bounds a publish from the socket, from the moment its frame is read until
	// its ack or error frame is queued (default 5s); one that cannot finish in time is answered
	// with internal (nothing stored) or outcome-unknown (it may have been stored).
	PublishTimeout time.Duration
	// PublishRate and PublishBurst shape the per-socket token bucket for publish frames
	// (defaults 10 per second, bursts of 20).
	PublishRate  float64
	PublishBurst int
	// AccountPublishRate and AccountPublishBurst shape the token bucket that all the streams
	// of one account share on a node (defaults 20 per second, bursts of 40).
	AccountPublishRate  float64
	AccountPublishBurst int
	// SignalRate and SignalBurst shape the per-socket token bucket for signal frames
	// (defaults 5 per second, bursts of 10; docs/protocol.md section 8).
	SignalRate  float64
	SignalBurst int
	// MaxInvalidFrames is how many invalid frames in a row close the socket with 1008
	// (default 10). A publish refused as invalid counts as an invalid frame, when it is
	// answered; any other answer ends the row.
	MaxInvalidFrames int
	// Logger receives stream failures; nil discards them.
	Logger *slog.Logger
}

func (c StreamConfig) withDefaults() StreamConfig {
	if c.MaxLag <= 0 {
		c.MaxLag = 1024
	}
	if c.SlowAfter <= 0 {
		c.SlowAfter = time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 30 * time.Second
	}
	if c.ReadLimit <= 0 {
		c.ReadLimit = 64 << 10
	}
	if c.PublishTimeout <= 0 {
		c.PublishTimeout = 5 * time.Second
	}
	if c.PublishRate <= 0 {
		c.PublishRate = 10
	}
	if c.PublishBurst <= 0 {
		c.PublishBurst = 20
	}
	if c.AccountPublishRate <= 0 {
		c.AccountPublishRate = 20
	}
	if c.AccountPublishBurst <= 0 {
		c.AccountPublishBurst = 40
	}
	if c.SignalRate <= 0 {
		c.SignalRate = 5
	}
	if c.SignalBurst <= 0 {
		c.SignalBurst = 10
	}
	if c.MaxInvalidFrames <= 0 {
		c.MaxInvalidFrames = 10
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// PublishFunc stores an event that a client published and returns its id. A *FrameError is
// sent to the client as it is; any other error as an internal error.
type PublishFunc func(ctx context.Context, ev ClientEvent) (int64, error)

// StreamOptions describe one socket's stream.
type StreamOptions struct {
	// Viewer decides which events the stream may send.
	Viewer Viewer
	// SessionFrame is the first frame, already encoded.
	SessionFrame []byte
	// LastEventID is where the client is; nil starts live from the watermark.
	LastEventID *int64
	// Publish handles publish frames; nil refuses them as unauthenticated.
	Publish PublishFunc
	// CloseAtOnce, if set, closes the stream with this reason right after the session frame.
	CloseAtOnce *CloseReason
	// CloseAt, if set, closes the stream at that time with CloseAtReason (session rotation
	// or expiry).
	CloseAt       time.Time
	CloseAtReason CloseReason
	// Watermark, when set, is the log's watermark read with the viewer's session (in the same
	// transaction, after its rows were locked): the stream replays up to it before ready, and
	// it is the cut-off for control events: one after it that names the session or user closes
	// the stream, one at or below it is reflected in the viewer already. Nil: the stream reads
	// the watermark itself when it opens; a signed-in viewer must come with one.
	Watermark *int64
	// OnProven, if set, is called at most once, from a goroutine the stream owns and joins,
	// when the client first shows that it received the upgrade: its first frame read (a close
	// frame too), or the pong to a ping that the stream sends as it starts when OnProven is
	// set (beside the session frame; the two may leave in either order). A 101 written is no
	// proof: the connection can drop before the client reads it. With TokenFrame set, only the
	// pong to a ping sent after the token frame is proof: a frame of the client may have
	// crossed the token frame on its way.
	OnProven func()
	// TokenFrame, if set, is sent right after the session frame: a bearer stream whose upgrade
	// rotated its session hands the successor's token over this way (docs/protocol.md,
	// "Bearer sessions").
	TokenFrame []byte
	// FinalFrame, if set, is called by the stream's writer when CloseAt comes, with a context
	// bounded by the write timeout; the frame it returns, if any, is sent just before the
	// close with CloseAtReason. A bearer stream rotates its session there and hands the
	// successor's token over. It is not called when the stream closes for another reason
	// first.
	FinalFrame func(ctx context.Context) []byte
}

// stream is one socket's delivery state.
//
// A stream's writes are made by one of two parties at a time. While the stream replays, or has
// replies, a close or a ping to send, or its socket is backed up, a writer goroutine (a drive)
// owns them. Once the stream is live and has nothing else to send, the drive parks the stream
// and ends: the hub then writes each new event to the socket itself, without blocking, and
// starts a drive again only when the socket does not take it at once, or when something
// else must be sent. An idle stream thus costs no goroutine of its own but its reader, and an
// event reaches a current socket without waking any goroutine.
type stream struct {
	// Set at construction.
	hub    *Hub
	conn   *websocket.Conn
	cork   *corkConn
	cfg    StreamConfig
	opts   StreamOptions
	sub    *Subscription
	ctx    context.Context // ends when the stream does
	cancel context.CancelFunc
	w      *writer // owned by the drive while one runs, else by the hub under mu

	ping      *time.Timer
	pingDue   atomic.Bool    // a ping is due
	finalDue  atomic.Bool    // CloseAt came: the writer asks FinalFrame, then closes
	drives    sync.WaitGroup // the drive, while one runs
	framed    chan struct{}  // closed by the reader at the client's first frame, if OnProven is set
	tokenSent chan struct{}  // closed by the writer once TokenFrame is written, if OnProven is set

	pubs      *publishes  // owned by the reader: made at the stream's first publish
	sigBucket tokenBucket // owned by the reader: made at the stream's first signal

	// invalid counts the client's invalid frames and invalid publishes in a row: the reader
	// counts the frames it refuses, the publishes' goroutine the publishes refused as invalid
	// (answered after the reader went on); any other answer resets it.
	invalid atomic.Int32

	mu       sync.Mutex
	controls [][]byte // guarded by mu: pong, ack and error frames waiting for the writer
	parked   bool     // guarded by mu: no drive runs; the hub writes new events
	done     bool     // guarded by mu: the stream is over; nothing may start a drive
	writeErr error    // guarded by mu: why the last drive ended the stream
}

// maxControls bounds the replies waiting for the writer; a client that sends faster than it
// reads is closed with 1008.
const maxControls = 64

// Serve runs one stream on an accepted socket until the socket closes or ctx ends: the session
// frame, then replay or reset, ready, and live events, while reading client frames. It closes
// conn and returns only when every goroutine it started has finished.
func (h *Hub) Serve(ctx context.Context, sock *Socket, cfg StreamConfig, opts StreamOptions) error {
	cfg = cfg.withDefaults()
	conn := sock.ws
	defer conn.CloseNow()
	conn.SetReadLimit(cfg.ReadLimit)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &stream{hub: h, conn: conn, cork: sock.cork, cfg: cfg, opts: opts, ctx: ctx, cancel: cancel}
	if opts.OnProven != nil {
		s.framed = make(chan struct{})
		if opts.TokenFrame != nil {
			s.tokenSent = make(chan struct{})
		}
	}
	s.w = &writer{stream: s}
	var cutoff int64
	if opts.Watermark != nil {
		cutoff = *opts.Watermark
	}
	sub, _, err := h.subscribe(ctx, opts.Viewer, cutoff, s)
	if err != nil {
		if errors.Is(err, errShutdown) {
			conn.Close(CloseGoingAway.Code, CloseGoingAway.Reason)
			return nil
		}
		return err
	}
	defer sub.Unsubscribe()
	s.mu.Lock()
	s.sub = sub
	s.mu.Unlock()
	h.cfg.Metrics.streamOpened()
	defer h.cfg.Metrics.streamClosed()
	if opts.CloseAtOnce != nil {
		sub.Close(*opts.CloseAtOnce)
	} else if p := h.presence; p != nil && opts.Viewer.SignedIn() {
		p.opened(opts.Viewer.UserID) // online while the stream is open, on any node
		defer p.closed(opts.Viewer.UserID)
	}
	if !opts.CloseAt.IsZero() {
		timer := time.AfterFunc(time.Until(opts.CloseAt), func() {
			if opts.FinalFrame == nil {
				sub.Close(opts.CloseAtReason)
				return
			}
			s.finalDue.Store(true) // the writer sends the final frame, then closes
			s.kick()
		})
		defer timer.Stop()
	}
	s.ping = time.AfterFunc(cfg.PingInterval, func() {
		s.pingDue.Store(true)
		s.kick()
	})
	defer s.ping.Stop()
	s.startDrive(false)
	go s.drive(true)
	var proving sync.WaitGroup
	if opts.OnProven != nil {
		proving.Go(func() { s.prove(ctx) })
	}
	readErr := s.readLoop(ctx)
	cancel()
	s.pubs.stop()
	s.mu.Lock()
	s.done = true
	s.mu.Unlock()
	s.drives.Wait()
	proving.Wait()
	switch {
	case s.writeErr != nil:
		return s.writeErr
	case readErr != nil && !isNormalClose(readErr) && ctx.Err() == nil:
		return readErr
	}
	return nil
}

// startDrive accounts for a drive about to start; restart says that the stream was parked.
func (s *stream) startDrive(restart bool) {
	s.drives.Add(1)
	s.hub.writers.Add(1)
	if restart {
		s.hub.restarts.Add(1)
	}
	s.hub.cfg.Metrics.writer(1, restart)
}

// drive runs the writer until it parks the stream or ends it.
func (s *stream) drive(first bool) {
	defer func() {
		s.hub.writers.Add(-1)
		s.hub.cfg.Metrics.writer(-1, false)
		s.drives.Done()
	}()
	err, parked := s.w.run(first)
	if parked {
		return
	}
	s.mu.Lock()
	s.done = true
	s.writeErr = err
	s.mu.Unlock()
	s.cancel() // the reader stops too
}

// kick starts a drive if the stream is parked. It never blocks.
func (s *stream) kick() {
	s.mu.Lock()
	if s.parked && !s.done {
		s.unparkLocked()
	}
	s.mu.Unlock()
}

// unparkLocked takes the stream's writes back from the hub: it starts a drive.
func (s *stream) unparkLocked() {
	s.parked = false
	s.startDrive(true)
	go s.drive(false)
}

// runLimit bounds the bytes the hub offers a socket in one write, so that a socket that takes
// only part leaves at most this much for its writer to finish.
const runLimit = 16 << 10

// deliver writes the events of the page that the parked stream has not seen, as far as the
// socket takes them without blocking, and starts a drive for the rest. Each run of consecutive
// events the stream may see leaves in one write. It returns how many events it wrote. A stream
// with a drive running is left to it: the drive reads the hub's head before it parks.
func (s *stream) deliver(p *outPage) int {
	s.mu.Lock()
	if !s.parked || s.done {
		s.mu.Unlock()
		return 0
	}
	w := s.w
	evs := p.events
	sent, drive := 0, false
	i := int(w.cursor + 1 - evs[0].ID) // the first event the stream has not seen
	switch {
	case i < 0: // history the hub skipped: the drive sorts it out
		drive = true
	case i >= len(evs):
		i = len(evs)
	}
	for !drive && i < len(evs) {
		if !evs[i].visibleTo(s.opts.Viewer) {
			w.cursor = evs[i].ID
			i++
			continue
		}
		start := i
		for i++; i < len(evs) && p.offs[i+1]-p.offs[start] <= runLimit && evs[i].visibleTo(s.opts.Viewer); i++ {
		}
		written, backlog, err := s.cork.tryWrite(p.wire[p.offs[start]:p.offs[i]])
		if err != nil || !written {
			drive = true
			break
		}
		w.cursor = evs[i-1].ID
		w.sent = true
		sent += i - start
		drive = backlog
	}
	if drive {
		s.unparkLocked()
	}
	s.mu.Unlock()
	return sent
}

// isNormalClose reports whether err is how a socket ends in the ordinary course of things.
func isNormalClose(err error) bool {
	if errors.Is(err, context.Canceled) {
		return true
	}
	switch websocket.CloseStatus(err) {
	case websocket.StatusNormalClosure, websocket.StatusGoingAway, websocket.StatusNoStatusRcvd:
		return true
	}
	return false
}

// reply queues a control frame for the writer. It reports false when too many are waiting.
func (s *stream) reply(frame []byte) bool {
	s.mu.Lock()
	full := len(s.controls) >= maxControls
	if !full {
		s.controls = append(s.controls, frame)
	}
	s.mu.Unlock()
	s.kick()
	return !full
}

func (s *stream) takeControls() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.controls
	s.controls = nil
	return c
}

// prove calls OnProven once the client shows that it received the upgrade: a frame read, or
// the pong to the ping it sends at once. With a token frame, only the pong to a ping sent after
// it counts. It returns once it has and its ping is over (answered, timed out, or ended with the
// stream), or when the stream ends.
func (s *stream) prove(ctx context.Context) {
	framed := s.framed
	if s.tokenSent != nil {
		select {
		case <-s.tokenSent:
		case <-ctx.Done():
			return
		}
		framed = nil // a frame sent before the client read the token frame proves nothing
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.WriteTimeout)
	defer cancel()
	pinged := make(chan struct{})
	var pingErr error // set before pinged is closed
	go func() {
		defer close(pinged)
		pingErr = s.conn.Ping(pctx)
	}()
	// The ping is not cut short when a frame proves the upgrade first: the websocket library
	// closes a connection whose write is cancelled midway, and the ping may be being written.
	// The stream's end still ends it.
	defer func() { <-pinged }()
	pong := pinged
	for {
		select {
		case <-framed:
		case <-pong:
			if pingErr != nil {
				pong = nil // no pong in time: only a frame can show it now
				if framed == nil {
					return
				}
				continue
			}
		case <-ctx.Done():
			// A frame or a pong that came just before the end still counts.
			if !isClosed(framed) && (pong == nil || !isClosed(pong) || pingErr != nil) {
				return
			}
		}
		s.opts.OnProven()
		return
	}
}

// isClosed reports whether ch is closed, without waiting.
func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// closeUnanswered closes a stream whose client sends faster than it reads the answers.
var closeUnanswered = CloseReason{websocket.StatusPolicyViolation, "too many frames unanswered"}

// readLoop reads client frames until the socket fails or closes. It runs in Serve's goroutine
// and never waits on the database: publishes run in their own goroutine (publish.go).
func (s *stream) readLoop(ctx context.Context) error {
	shown := s.framed == nil // nobody waits for the first frame
	for {
		typ, msg, err := s.conn.Read(ctx)
		if !shown && (err == nil || websocket.CloseStatus(err) != -1) {
			close(s.framed) // a frame, or the client's close: it received the upgrade
			shown = true
		}
		if err != nil {
			return err
		}
		var frame []byte
		invalid := false // the frame's content was refused as invalid
		f, err := ParseClientFrame(msg)
		if typ != websocket.MessageText {
			err = &FrameError{Code: CodeInvalidFrame, Message: errNotText.Error()}
		}
		switch {
		case err != nil:
			frame = errorFrameFor(f.Ref, err)
		case f.Type == "ping":
			frame = pongFrame(f.Ref)
		case f.Type == "publish":
			frame = s.publish(f) // nil: queued, answered when it ran
		case f.Type == "signal":
			frame, invalid = s.signal(f) // nil: sent; success is silent
		}
		switch {
		case err != nil, invalid:
			s.countInvalid(true)
		case frame != nil: // answered at once; a queued publish counts when it is answered
			s.countInvalid(false)
		}
		if frame != nil && !s.reply(frame) {
			s.sub.Close(closeUnanswered)
		}
	}
}

// countInvalid counts an answer to the client: invalid (an invalid frame, or a publish refused
// as invalid) or not. MaxInvalidFrames invalid answers in a row close the stream with 1008.
func (s *stream) countInvalid(invalid bool) {
	if !invalid {
		s.invalid.Store(0)
		return
	}
	if s.invalid.Add(1) >= int32(s.cfg.MaxInvalidFrames) {
		s.sub.Close(ClosePolicy)
	}
}

// errorFrameFor encodes err as an error frame: a *FrameError as it is, anything else as internal.
func errorFrameFor(ref *string, err error) []byte {
	var fe *FrameError
	if errors.As(err, &fe) {
		return errorFrame(ref, fe.Code, fe.Message)
	}
	return errorFrame(ref, CodeInternal, "the event could not be stored; try again")
}
