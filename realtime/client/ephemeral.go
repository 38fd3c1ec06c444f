package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Signal is an ephemeral message that a signed-in user sent to every signed-in stream
// (docs/protocol.md section 8): never stored, never replayed, delivered at most once.
type Signal struct {
	// From is the sender's user id, filled in by the server.
	From int64
	// Type is the signal type ("typing" is built in).
	Type string
	// Data is the signal's JSON object.
	Data json.RawMessage
}

// SignalError is the server's refusal of a signal: unauthenticated (an anonymous stream),
// forbidden (an unknown signal type), invalid (data not a JSON object, or over 1 KiB),
// rate-limited (5 per second per socket, bursts of 10), or invalid-frame from a server that
// does not know signals.
type SignalError struct {
	Code    string
	Message string
}

func (e *SignalError) Error() string {
	return "tidings: signal refused: " + e.Code + ": " + e.Message
}

// ErrNoAnswer: Signal's ping got no pong within Config.SignalTimeout; the signal may or may
// not have been sent on.
var ErrNoAnswer = errors.New("tidings: no answer from the server")

// Signal sends an ephemeral signal (docs/protocol.md section 8) of signalType with data, a value
// that encodes as a JSON object (nil sends {}), to every signed-in stream, this one included.
//
// The server answers a signal it accepts with nothing, and one it refuses with an error frame
// carrying the signal's ref. So Signal sends a ping right after the signal and waits for
// whichever comes first: the error, returned as a *SignalError, or the pong, which proves that
// no refusal is coming, since a stream answers the signal and ping frames of one socket in the
// order they came (the reader answers both at once, and its answers leave in the order it
// queued them, realtime/stream.go). Signal then returns nil: the signal was accepted, which
// does not promise delivery (signals are best effort). It waits at most until ctx ends or
// Config.SignalTimeout passes (ErrNoAnswer). ErrNotConnected and ErrConnectionLost say the socket was
// not there: after ErrConnectionLost the signal may or may not have been sent on.
func (c *Client) Signal(ctx context.Context, signalType string, data any) error {
	d := []byte("{}")
	if data != nil {
		var err error
		if d, err = json.Marshal(data); err != nil {
			return fmt.Errorf("tidings: encode signal data: %w", err)
		}
	}
	n := strconv.FormatInt(c.refs.Add(1), 10)
	sref, pref := "s"+n, "q"+n
	signal, _ := json.Marshal(map[string]any{"type": "signal", "ref": sref,
		"signal": map[string]any{"type": signalType, "data": json.RawMessage(d)}})
	ping, _ := json.Marshal(map[string]string{"type": "ping", "ref": pref})
	c.mu.Lock()
	cn := c.conn
	c.mu.Unlock()
	if cn == nil {
		return ErrNotConnected
	}
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.SignalTimeout, ErrNoAnswer)
	defer cancel()
	a, err := cn.requestUntil(ctx, sref, signal, pref, ping)
	switch {
	case err != nil && ctx.Err() != nil && errors.Is(context.Cause(ctx), ErrNoAnswer):
		return ErrNoAnswer
	case err != nil:
		return err
	case a.Type == "error":
		return &SignalError{Code: a.Code, Message: a.Message}
	}
	return nil
}

// presenceFrame acts on the frames of docs/protocol.md section 8, and reports false for any other.
func (c *Client) presenceFrame(f *serverFrame) (bool, error) {
	switch f.Type {
	case "presence":
		if c.cfg.OnPresence == nil {
			break
		}
		var online []int64
		if err := json.Unmarshal(f.Online, &online); err != nil {
			return true, fmt.Errorf("tidings: presence frame: online: %w", err)
		}
		c.cfg.OnPresence(online)
	case "presence-change":
		var online bool
		if err := json.Unmarshal(f.Online, &online); err != nil {
			return true, fmt.Errorf("tidings: presence-change frame: online: %w", err)
		}
		if c.cfg.OnPresenceChange != nil {
			c.cfg.OnPresenceChange(f.UserID, online)
		}
	case "signal":
		if c.cfg.OnSignal != nil {
			c.cfg.OnSignal(Signal{From: f.From, Type: f.Signal.Type, Data: f.Signal.Data})
		}
	default:
		return false, nil
	}
	return true, nil
}
