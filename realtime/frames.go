package realtime

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"tidings/data"
)

// Event is an event as the hub holds it: its id, what the audience rule needs, and its frame,
// encoded once for every socket.
type Event struct {
	ID       int64
	Type     string
	Audience data.Audience
	Wire     []byte    // {"type":"event","id":…,"event":{…}} as a WebSocket text frame, header included: what sockets are sent
	At       time.Time // when the hub read it
	Time     time.Time // when it was stored: tells it from another event with its id
	// Control is set for control events, which no client sees; Close is what one asks.
	Control bool
	Close   *data.CloseStreams
}

// NewEvent encodes a stored event into the frame that every stream sends.
func NewEvent(e data.Event) *Event {
	if data.IsControl(e.Type) {
		ev := &Event{ID: e.ID, Type: e.Type, Control: true, At: time.Now(), Time: e.Time}
		if e.Type == data.ControlCloseStreams {
			var c data.CloseStreams
			if json.Unmarshal(e.Data, &c) == nil {
				ev.Close = &c
			}
		}
		return ev
	}
	payload := AppendEventFrame(nil, e)
	wire := appendWireFrame(make([]byte, 0, len(payload)+10), payload)
	return &Event{ID: e.ID, Type: e.Type, Audience: e.Audience, Wire: wire, At: time.Now(), Time: e.Time}
}

// appendWireFrame appends payload as one unmasked, unfragmented WebSocket text frame (RFC 6455
// section 5.2), as a server sends it.
func appendWireFrame(b, payload []byte) []byte {
	const finText = 0x81
	switch n := len(payload); {
	case n < 126:
		b = append(b, finText, byte(n))
	case n <= 0xFFFF:
		b = append(b, finText, 126, byte(n>>8), byte(n))
	default:
		b = append(b, finText, 127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	return append(b, payload...)
}

// visibleTo reports whether the event may be sent to v.
func (e *Event) visibleTo(v Viewer) bool { return v.canSeeEvent(e.Type, e.Audience) }

// AppendEventFrame appends the event frame of e to b.
func AppendEventFrame(b []byte, e data.Event) []byte {
	b = append(b, `{"type":"event","id":`...)
	b = strconv.AppendInt(b, e.ID, 10)
	b = append(b, `,"event":{"type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"data":`...)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	b = append(b, `,"time":"`...)
	b = AppendTime(b, e.Time)
	return append(b, `"}}`...)
}

// AppendTime appends t as the protocol writes times: RFC 3339 in UTC with milliseconds.
func AppendTime(b []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
}

func appendJSONString(b []byte, s string) []byte {
	enc, _ := json.Marshal(s) // a string always encodes
	return append(b, enc...)
}

// watermarkFrame encodes a reset or ready frame.
func watermarkFrame(typ string, id int64) []byte {
	b := append([]byte(`{"type":"`), typ...)
	b = append(b, `","lastEventId":`...)
	b = strconv.AppendInt(b, id, 10)
	return append(b, '}')
}

// refJSON is a frame's ref as it is echoed: a JSON string, or null.
func refJSON(ref *string) []byte {
	if ref == nil {
		return []byte("null")
	}
	return appendJSONString(nil, *ref)
}

func pongFrame(ref *string) []byte {
	b := append([]byte(`{"type":"pong","ref":`), refJSON(ref)...)
	return append(b, '}')
}

func ackFrame(ref *string, id int64) []byte {
	b := append([]byte(`{"type":"ack","ref":`), refJSON(ref)...)
	b = append(b, `,"id":`...)
	b = strconv.AppendInt(b, id, 10)
	return append(b, '}')
}

func errorFrame(ref *string, code, message string) []byte {
	b := append([]byte(`{"type":"error","ref":`), refJSON(ref)...)
	b = append(b, `,"code":`...)
	b = appendJSONString(b, code)
	b = append(b, `,"message":`...)
	b = appendJSONString(b, message)
	return append(b, '}')
}

// Client frame error codes (docs/protocol.md section 2).
const (
	CodeInvalidFrame    = "invalid-frame"
	CodeUnauthenticated = "unauthenticated"
	CodeForbidden       = "forbidden"
	CodeInvalid         = "invalid"
	CodeRateLimited     = "rate-limited"
	CodeInternal        = "internal"
	// CodeOutcomeUnknown: the publish was sent to the database but its answer was lost (or did
	// not come in time); it may have been stored. Retry with the same key.
	CodeOutcomeUnknown = "outcome-unknown"
	// CodeKeyReused: the publish's key was used before for another event.
	CodeKeyReused = "idempotency-key-reused"
)

// FrameError is a refusal sent to the client as an error frame; the stream carries on.
type FrameError struct {
	Code    string
	Message string
}

func (e *FrameError) Error() string { return e.Code + ": " + e.Message }

// ClientFrame is a frame a client sent, as ParseClientFrame reads it.
type ClientFrame struct {
	Type   string       // "ping", "publish" or "signal"
	Ref    *string      // nil when absent or null
	Event  ClientEvent  // publish only
	Signal ClientSignal // signal only
}

// ClientEvent is the event of a publish frame: only its type and data, and the frame's
// idempotency key; the server decides the rest.
type ClientEvent struct {
	Type string
	Data json.RawMessage
	// Key is the frame's idempotency key (data.ValidKey), empty when it has none.
	Key string
}

// MaxRefLen is the longest ref a client frame may carry, in bytes.
const MaxRefLen = 256

var errNotText = errors.New("binary messages are not frames")

// ParseClientFrame reads one client frame. A refusal is a *FrameError with code invalid-frame;
// the returned ref is whatever could be read of it, for the error frame.
func ParseClientFrame(msg []byte) (ClientFrame, error) {
	var raw struct {
		Type   *string         `json:"type"`
		Ref    json.RawMessage `json:"ref"`
		Event  json.RawMessage `json:"event"`
		Key    json.RawMessage `json:"key"`
		Signal json.RawMessage `json:"signal"`
	}
	invalid := func(f ClientFrame, msg string) (ClientFrame, error) {
		return f, &FrameError{Code: CodeInvalidFrame, Message: msg}
	}
	if err := json.Unmarshal(msg, &raw); err != nil {
		return invalid(ClientFrame{}, "a frame is one JSON object")
	}
	var f ClientFrame
	if len(raw.Ref) > 0 && !bytes.Equal(raw.Ref, []byte("null")) {
		var ref string
		if err := json.Unmarshal(raw.Ref, &ref); err != nil || len(ref) > MaxRefLen {
			return invalid(f, "ref must be a string of at most 256 bytes")
		}
		f.Ref = &ref
	}
	if raw.Type == nil {
		return invalid(f, `missing "type"`)
	}
	f.Type = *raw.Type
	switch f.Type {
	case "ping":
		return f, nil
	case "publish":
		var ev struct {
			Type *string         `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if len(raw.Event) == 0 || json.Unmarshal(raw.Event, &ev) != nil || bytes.Equal(raw.Event, []byte("null")) {
			return invalid(f, `publish needs an "event" object`)
		}
		if ev.Type == nil || *ev.Type == "" {
			return invalid(f, `publish needs "event.type"`)
		}
		f.Event = ClientEvent{Type: *ev.Type, Data: ev.Data}
		if len(raw.Key) > 0 && !bytes.Equal(raw.Key, []byte("null")) {
			if json.Unmarshal(raw.Key, &f.Event.Key) != nil || !data.ValidKey(f.Event.Key) {
				f.Event.Key = ""
				return invalid(f, `"key" must be 1 to 255 bytes of ASCII letters, digits and -._~:+/=`)
			}
		}
		return f, nil
	case "signal":
		var sig struct {
			Type *string         `json:"type"`
			Data json.RawMessage `json:"data"`
		}
		if len(raw.Signal) == 0 || bytes.Equal(raw.Signal, []byte("null")) || json.Unmarshal(raw.Signal, &sig) != nil {
			return invalid(f, `signal needs a "signal" object`)
		}
		if sig.Type == nil || *sig.Type == "" {
			return invalid(f, `signal needs "signal.type"`)
		}
		f.Signal = ClientSignal{Type: *sig.Type, Data: sig.Data}
		return f, nil
	}
	return invalid(f, "unknown frame type "+strconv.Quote(f.Type))
}
