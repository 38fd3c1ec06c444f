package client

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"tidings/data"
	"tidings/realtime"
)

// TestParseEventFrameReadsWhatTheServerWrites: the fast path decodes the server's own event
// frames, and agrees with encoding/json on them.
func TestParseEventFrameReadsWhatTheServerWrites(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 26, 1, 2, 3, 456789000, time.UTC)
	for _, e := range []data.Event{
		{ID: 1, Type: "message", Data: json.RawMessage(`{"text": "hi", "userId": 1}`), Time: at},
		{ID: 9007199254740993, Type: "user-update", Data: json.RawMessage(`[1, 2, {"time":"x"}]`), Time: at},
		{ID: 42, Type: "load", Data: json.RawMessage(`null`), Time: at},
		{ID: 7, Type: "x", Data: json.RawMessage(`"a\",\"time\":\"b"`), Time: at},
	} {
		frame := realtime.AppendEventFrame(nil, e)
		var fast serverFrame
		if !parseEventFrame(frame, &fast) {
			t.Fatalf("fast path refused the server's frame %s", frame)
		}
		var slow serverFrame
		if err := json.Unmarshal(frame, &slow); err != nil {
			t.Fatal(err)
		}
		if !sameFrame(fast, slow) {
			t.Fatalf("frame %s: fast path %+v, encoding/json %+v", frame, fast, slow)
		}
		if fast.ID != e.ID || fast.Event.Type != e.Type || !fast.Event.Time.Equal(at.Truncate(time.Millisecond)) { // the server writes milliseconds
			t.Fatalf("frame %s decoded as %+v", frame, fast)
		}
	}
}

// TestParseEventFrameLeavesTheRestToEncodingJSON: frames of another layout are refused, and
// decodeFrame still reads them.
func TestParseEventFrameLeavesTheRestToEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, msg := range []string{
		`{"type":"ready","lastEventId":3}`,
		`{"id":1,"type":"event","event":{"type":"m","data":1,"time":"2026-11-26T01:02:03Z"}}`,
		`{"type":"event","id":1,"event":{"type":"m\u00e9","data":1,"time":"2026-11-26T01:02:03Z"}}`,
		`{"type":"event","id":1,"event":{"type":"m","time":"2026-11-26T01:02:03Z","data":1}}`,
	} {
		var f serverFrame
		if parseEventFrame([]byte(msg), &f) {
			t.Errorf("fast path took %s", msg)
		}
		if err := decodeFrame([]byte(msg), &f); err != nil {
			t.Errorf("decode %s: %v", msg, err)
		}
	}
}

func sameFrame(a, b serverFrame) bool {
	return a.Type == b.Type && a.ID == b.ID && a.Event.Type == b.Event.Type &&
		bytes.Equal(a.Event.Data, b.Event.Data) && a.Event.Time.Equal(b.Event.Time)
}

// FuzzParseEventFrame: whatever the fast path accepts, encoding/json accepts too and decodes
// to the same frame.
func FuzzParseEventFrame(f *testing.F) {
	at := time.Date(2026, 11, 26, 1, 2, 3, 0, time.UTC)
	f.Add(realtime.AppendEventFrame(nil, data.Event{ID: 1, Type: "message", Data: json.RawMessage(`{"text": "hi"}`), Time: at}))
	f.Add([]byte(`{"type":"event","id":12,"event":{"type":"t","data": [1,"x"] ,"time":"2026-11-26T01:02:03.5+01:00"}}`))
	f.Add([]byte(`{"type":"event","id":3,"event":{"type":"t","data":"a","time":"b","time":"2026-11-26T01:02:03Z"}}`))
	f.Add([]byte(`{"type":"ready","lastEventId":3}`))
	f.Fuzz(func(t *testing.T, msg []byte) {
		var fast serverFrame
		if !parseEventFrame(msg, &fast) {
			return
		}
		var slow serverFrame
		if err := json.Unmarshal(msg, &slow); err != nil {
			t.Fatalf("fast path took %q, which encoding/json refuses: %v", msg, err)
		}
		if !sameFrame(fast, slow) {
			t.Fatalf("%q: fast path %+v, encoding/json %+v", msg, fast, slow)
		}
	})
}
