package realtime

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	// PublishRate and PublishBurst shape the per-socket token bucket for publish frames
	// (defaults 10 per second, bursts of 20).
	PublishRate  float64
	PublishBurst int
	// AccountPublishRate and AccountPublishBurst shape the token bucket that all the streams
	// of one account share on a node (defaults 20 per second, bursts of 40).
	AccountPublishRate  float64
	AccountPublishBurst int
	// MaxInvalidFrames is how many invalid frames in a row close the socket with 1008
	// (default 10).
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
	// LastEventID is where the client is; nil starts live from the head.
	LastEventID *int64
	// Publish handles publish frames; nil refuses them as unauthenticated.
	Publish PublishFunc
	// Subscribed, if set, is called with the stream's subscription before anything is sent,
	// so that the caller can close it later (session rules).
	Subscribed func(*Subscription)
	// CloseAtOnce, if set, closes the stream with this reason right after the session frame.
	CloseAtOnce *CloseReason
	// CloseAt, if set, closes the stream at that time with CloseAtReason (session rotation
	// or expiry).
	CloseAt       time.Time
	CloseAtReason CloseReason
	// CheckedAt is the hub's head read before the viewer's session was: control events after
	// it that name the session or user close the stream.
	CheckedAt int64
}

// stream is one socket's delivery state.
type stream struct {
	// Set at construction.
	hub  *Hub
	conn *websocket.Conn
	cork *corkConn // nil when the socket cannot be corked
	cfg  StreamConfig
	opts StreamOptions
	sub  *Subscription

	mu       sync.Mutex
	controls [][]byte // guarded by mu: pong, ack and error frames waiting for the writer
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
	sub, head, err := h.Subscribe(ctx, opts.Viewer, opts.CheckedAt)
	if err != nil {
		if errors.Is(err, errShutdown) {
			conn.Close(CloseGoingAway.Code, CloseGoingAway.Reason)
			return nil
		}
		return err
	}
	defer sub.Unsubscribe()
	h.cfg.Metrics.streamOpened()
	defer h.cfg.Metrics.streamClosed()
	if opts.Subscribed != nil {
		opts.Subscribed(sub)
	}
	if opts.CloseAtOnce != nil {
		sub.Close(*opts.CloseAtOnce)
	}
	if !opts.CloseAt.IsZero() {
		timer := time.AfterFunc(time.Until(opts.CloseAt), func() { sub.Close(opts.CloseAtReason) })
		defer timer.Stop()
	}
	s := &stream{hub: h, conn: conn, cork: sock.cork, cfg: cfg, opts: opts, sub: sub}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var writeErr error
	wg.Go(func() {
		defer cancel()
		writeErr = s.writeLoop(ctx, head)
	})
	readErr := s.readLoop(ctx)
	cancel()
	wg.Wait()
	switch {
	case writeErr != nil:
		return writeErr
	case readErr != nil && !isNormalClose(readErr) && ctx.Err() == nil:
		return readErr
	}
	return nil
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
	s.sub.signal()
	return !full
}

func (s *stream) takeControls() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.controls
	s.controls = nil
	return c
}

// readLoop reads client frames until the socket fails or closes. It runs in Serve's goroutine.
func (s *stream) readLoop(ctx context.Context) error {
	bucket := newTokenBucket(s.cfg.PublishRate, s.cfg.PublishBurst, time.Now())
	invalid := 0
	for {
		typ, msg, err := s.conn.Read(ctx)
		if err != nil {
			return err
		}
		var frame []byte
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
			frame = s.publish(ctx, f, &bucket)
		}
		if err != nil {
			invalid++
		} else {
			invalid = 0
		}
		if invalid >= s.cfg.MaxInvalidFrames {
			s.sub.Close(ClosePolicy)
		}
		if !s.reply(frame) {
			s.sub.Close(CloseReason{websocket.StatusPolicyViolation, "too many frames unanswered"})
		}
	}
}

// publish handles one publish frame and returns the ack or error frame.
func (s *stream) publish(ctx context.Context, f ClientFrame, bucket *tokenBucket) []byte {
	if s.opts.Publish == nil {
		return errorFrame(f.Ref, CodeUnauthenticated, "sign in to publish")
	}
	now := time.Now()
	if !bucket.available(now) {
		return errorFrame(f.Ref, CodeRateLimited, fmt.Sprintf("at most %g events per second, bursts of %d", s.cfg.PublishRate, s.cfg.PublishBurst))
	}
	account := s.opts.Viewer.UserID
	if account != 0 && !s.hub.accounts.available(account, s.cfg.AccountPublishRate, s.cfg.AccountPublishBurst, now) {
		return errorFrame(f.Ref, CodeRateLimited, fmt.Sprintf("at most %g events per second per account, bursts of %d", s.cfg.AccountPublishRate, s.cfg.AccountPublishBurst))
	}
	id, err := s.opts.Publish(ctx, f.Event)
	if err != nil {
		var fe *FrameError
		if !errors.As(err, &fe) && ctx.Err() == nil {
			s.cfg.Logger.Error("publish from socket", "err", err)
		}
		return errorFrameFor(f.Ref, err)
	}
	bucket.take()
	if account != 0 {
		s.hub.accounts.take(account)
	}
	return ackFrame(f.Ref, id)
}

// errorFrameFor encodes err as an error frame: a *FrameError as it is, anything else as internal.
func errorFrameFor(ref *string, err error) []byte {
	var fe *FrameError
	if errors.As(err, &fe) {
		return errorFrame(ref, fe.Code, fe.Message)
	}
	return errorFrame(ref, CodeInternal, "the event could not be stored; try again")
}
