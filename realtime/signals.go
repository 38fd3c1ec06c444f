package realtime

import (
	"bytes"
	"context"
	"encoding/json"
	"strconv"
	"time"

	"tidings/data"
)

// Signals (docs/protocol.md section 8): ephemeral messages from a signed-in stream to every
// signed-in stream of every node, the sender's own included. A node gathers them for
// SignalDelay into one notification; every node, the sender's included, hears it and adds its
// frames to the ring. Best effort: at most once, never stored, never replayed.

// MaxSignalData is the largest signal data a client may send, in bytes of JSON.
const MaxSignalData = 1024

// maxQueuedSignals bounds the signals of a node waiting to be sent; beyond it they are refused
// as rate-limited.
const maxQueuedSignals = 1024

// signalTypes are the signal types clients may send.
var signalTypes = map[string]bool{"typing": true}

// ClientSignal is the signal of a signal frame.
type ClientSignal struct {
	Type string
	Data json.RawMessage
}

// signal handles a signal frame: the checks of docs/protocol.md section 8, then the node sends it.
// It returns the error frame to answer, or nil (success is silent), and whether the signal was
// refused as invalid.
func (s *stream) signal(f ClientFrame) (answer []byte, invalid bool) {
	refuse := func(code, msg string) ([]byte, bool) { return errorFrame(f.Ref, code, msg), code == CodeInvalid }
	p := s.hub.presence
	switch {
	case !s.opts.Viewer.SignedIn():
		return refuse(CodeUnauthenticated, "sign in to send signals")
	case p == nil:
		return refuse(CodeInternal, "signals are off on this node")
	case !signalTypes[f.Signal.Type]:
		return refuse(CodeForbidden, "unknown signal type "+strconv.Quote(f.Signal.Type))
	}
	data := bytes.TrimSpace(f.Signal.Data)
	switch {
	case len(data) == 0 || bytes.Equal(data, []byte("null")):
		data = []byte("{}")
	case len(data) > MaxSignalData:
		return refuse(CodeInvalid, "signal data is at most 1 KiB of JSON")
	case data[0] != '{':
		return refuse(CodeInvalid, "signal data must be a JSON object")
	}
	// typing carries nothing: whatever its object held, it is delivered as {}.
	data = []byte("{}")
	now := time.Now()
	if s.sigBucket.rate == 0 {
		s.sigBucket = newTokenBucket(s.cfg.SignalRate, s.cfg.SignalBurst, now)
	}
	if !s.sigBucket.available(now) {
		return refuse(CodeRateLimited, "too many signals; slow down")
	}
	if !p.send(s.opts.Viewer.UserID, f.Signal.Type, data) {
		return refuse(CodeRateLimited, "this node has too many signals waiting; try again")
	}
	s.sigBucket.take()
	return nil, false
}

// send queues a signal from user; false when the node's queue is full.
func (p *Presence) send(from int64, typ string, data []byte) bool {
	b := append([]byte(`{"type":"signal","from":`), strconv.FormatInt(from, 10)...)
	b = append(b, `,"signal":{"type":`...)
	b = appendJSONString(b, typ)
	b = append(b, `,"data":`...)
	b = append(b, data...)
	b = append(b, "}}"...)
	select {
	case p.signals <- b:
		return true
	default:
		p.cfg.Metrics.signal(false)
		return false
	}
}

// sendSignals sends the queued signals, gathered for SignalDelay into notifications of at most
// data.MaxSignalPayload bytes, one frame per line, until ctx ends.
func (p *Presence) sendSignals(ctx context.Context) {
	var body []byte
	gather := time.NewTimer(0)
	<-gather.C
	defer gather.Stop()
	send := func() {
		if len(body) == 0 {
			return
		}
		n := bytes.Count(body, []byte("\n")) + 1
		cctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
		err := p.store.Signal(cctx, body)
		cancel()
		p.cfg.Metrics.signalsSent(n, err == nil)
		if err != nil && ctx.Err() == nil {
			p.log.Warn("send signals", "signals", n, "err", err)
		}
		body = body[:0]
	}
	for {
		select {
		case <-ctx.Done():
			return
		case f := <-p.signals:
			if len(body)+1+len(f) > data.MaxSignalPayload {
				gather.Stop()
				send()
			}
			if len(body) == 0 {
				gather.Reset(p.cfg.SignalDelay)
			} else {
				body = append(body, '\n')
			}
			body = append(body, f...)
		case <-gather.C:
			send()
		}
	}
}

// received adds the signals of a notification to the ring. The notification is signed by a
// node: its frames are as that node encoded them.
func (p *Presence) received(body []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(body) > 0 {
		var f []byte
		f, body, _ = bytes.Cut(body, []byte("\n"))
		if len(f) > 0 {
			p.addLocked(ephFrame{payload: bytes.Clone(f)})
		}
	}
}
