package realtime

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"tidings/data"
)

func TestEventFrame(t *testing.T) {
	t.Parallel()
	e := data.Event{ID: 57, Type: "message \"x\"", Data: json.RawMessage(`{"text":"hi"}`),
		Time: time.Date(2026, 1, 2, 3, 4, 5, 678_900_000, time.FixedZone("x", 3600))}
	got := string(AppendEventFrame(nil, e))
	want := `{"type":"event","id":57,"event":{"type":"message \"x\"","data":{"text":"hi"},"time":"2026-01-02T02:04:05.678Z"}}`
	if got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
	e.Data = nil
	if got := string(AppendEventFrame(nil, e)); !strings.Contains(got, `"data":null`) || !json.Valid([]byte(got)) {
		t.Fatalf("nil data: got %s", got)
	}
}

func TestParseClientFrame(t *testing.T) {
	t.Parallel()
	ref := func(s string) *string { return &s }
	valid := []struct {
		in   string
		want ClientFrame
	}{
		{`{"type":"ping","ref":"p1"}`, ClientFrame{Type: "ping", Ref: ref("p1")}},
		{`{"type":"ping"}`, ClientFrame{Type: "ping"}},
		{`{"type":"ping","ref":null}`, ClientFrame{Type: "ping"}},
		{`{"type":"publish","ref":"r1","event":{"type":"message","data":{"text":"hi"}}}`,
			ClientFrame{Type: "publish", Ref: ref("r1"), Event: ClientEvent{Type: "message", Data: json.RawMessage(`{"text":"hi"}`)}}},
		{`{"type":"publish","ref":"r2","key":"k-1:a/b+=","event":{"type":"message","data":{"text":"hi"}}}`,
			ClientFrame{Type: "publish", Ref: ref("r2"), Event: ClientEvent{Type: "message", Data: json.RawMessage(`{"text":"hi"}`), Key: "k-1:a/b+="}}},
		{`{"type":"publish","key":null,"event":{"type":"message"}}`, ClientFrame{Type: "publish", Event: ClientEvent{Type: "message"}}},
		{`{"type":"signal","ref":"s1","signal":{"type":"typing","data":{}}}`,
			ClientFrame{Type: "signal", Ref: ref("s1"), Signal: ClientSignal{Type: "typing", Data: json.RawMessage(`{}`)}}},
		{`{"type":"signal","signal":{"type":"wave"}}`, ClientFrame{Type: "signal", Signal: ClientSignal{Type: "wave"}}},
	}
	for _, tc := range valid {
		got, err := ParseClientFrame([]byte(tc.in))
		if err != nil {
			t.Errorf("%s: %v", tc.in, err)
			continue
		}
		if got.Type != tc.want.Type || (got.Ref == nil) != (tc.want.Ref == nil) || (got.Ref != nil && *got.Ref != *tc.want.Ref) ||
			got.Event.Type != tc.want.Event.Type || string(got.Event.Data) != string(tc.want.Event.Data) || got.Event.Key != tc.want.Event.Key ||
			got.Signal.Type != tc.want.Signal.Type || string(got.Signal.Data) != string(tc.want.Signal.Data) {
			t.Errorf("%s: got %+v, want %+v", tc.in, got, tc.want)
		}
	}
	invalid := []struct {
		in      string
		wantRef *string
	}{
		{`nope`, nil}, {`[]`, nil}, {`null`, nil}, {`{}`, nil}, {`{"ref":"a"}`, ref("a")},
		{`{"type":"subscribe","ref":"a"}`, ref("a")}, {`{"type":"publish","ref":"b"}`, ref("b")},
		{`{"type":"publish","ref":"c","event":null}`, ref("c")}, {`{"type":"publish","event":{"data":1}}`, nil},
		{`{"type":"publish","event":{"type":""}}`, nil}, {`{"type":"publish","event":"message"}`, nil},
		{`{"type":"ping","ref":5}`, nil}, {`{"type":7}`, nil},
		{`{"type":"ping","ref":"` + strings.Repeat("x", MaxRefLen+1) + `"}`, nil},
		{`{"type":"publish","ref":"k","key":"","event":{"type":"message"}}`, ref("k")},
		{`{"type":"publish","ref":"k","key":"a b","event":{"type":"message"}}`, ref("k")},
		{`{"type":"publish","ref":"k","key":7,"event":{"type":"message"}}`, ref("k")},
		{`{"type":"publish","ref":"k","key":"` + strings.Repeat("x", data.MaxKeyLen+1) + `","event":{"type":"message"}}`, ref("k")},
		{`{"type":"signal","ref":"s"}`, ref("s")}, {`{"type":"signal","signal":null}`, nil},
		{`{"type":"signal","signal":"typing"}`, nil}, {`{"type":"signal","signal":{"data":{}}}`, nil},
		{`{"type":"signal","signal":{"type":""}}`, nil}, {`{"type":"signal","signal":{"type":7}}`, nil},
	}
	for _, tc := range invalid {
		got, err := ParseClientFrame([]byte(tc.in))
		var fe *FrameError
		if !errors.As(err, &fe) || fe.Code != CodeInvalidFrame {
			t.Errorf("%s: got error %v, want invalid-frame", tc.in, err)
			continue
		}
		if (got.Ref == nil) != (tc.wantRef == nil) || (got.Ref != nil && *got.Ref != *tc.wantRef) {
			t.Errorf("%s: got ref %v, want %v", tc.in, got.Ref, tc.wantRef)
		}
	}
}

// FuzzParseClientFrame checks that any message is either a frame the stream can answer or an
// invalid-frame refusal, and that the answer is always valid JSON.
func FuzzParseClientFrame(f *testing.F) {
	for _, s := range []string{`{"type":"ping","ref":"p1"}`, `{"type":"publish","ref":"r","event":{"type":"message","data":{"text":"hi"}}}`,
		`{"type":"publish"}`, `{}`, `[`, `{"type":"ping","ref":"\u00e9"}`,
		`{"type":"publish","key":"k1","event":{"type":"message"}}`, `{"type":"publish","key":"\u006b","event":{"type":"m"}}`,
		`{"type":"signal","ref":"s","signal":{"type":"typing","data":{}}}`, `{"type":"signal","signal":{"type":"typing","data":[1]}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		f, err := ParseClientFrame(msg)
		var reply []byte
		if err != nil {
			var fe *FrameError
			if !errors.As(err, &fe) || fe.Code != CodeInvalidFrame {
				t.Fatalf("%q: error %v is not invalid-frame", msg, err)
			}
			reply = errorFrameFor(f.Ref, err)
		} else {
			switch f.Type {
			case "ping":
				reply = pongFrame(f.Ref)
			case "publish":
				if f.Event.Type == "" {
					t.Fatalf("%q: publish without an event type", msg)
				}
				if f.Event.Key != "" && !data.ValidKey(f.Event.Key) {
					t.Fatalf("%q: accepted key %q, which the store refuses", msg, f.Event.Key)
				}
				reply = ackFrame(f.Ref, 1)
			case "signal":
				if f.Signal.Type == "" {
					t.Fatalf("%q: signal without a type", msg)
				}
				reply = errorFrame(f.Ref, CodeForbidden, "unknown signal type "+strconv.Quote(f.Signal.Type))
			default:
				t.Fatalf("%q: accepted frame type %q", msg, f.Type)
			}
		}
		if !json.Valid(reply) {
			t.Fatalf("%q: reply %s is not JSON", msg, reply)
		}
	})
}

func TestViewerCanSee(t *testing.T) {
	t.Parallel()
	anon := Viewer{}
	regular := Viewer{UserID: 1, Type: data.UserRegular}
	crew := Viewer{UserID: 2, Type: data.UserCrew}
	admin := Viewer{UserID: 3, Type: data.UserAdmin}
	cases := []struct {
		a    data.Audience
		want [4]bool // anon, regular, crew, admin
	}{
		{data.Audience{}, [4]bool{true, true, true, true}},
		{data.Audience{Kind: data.AudienceSignedIn}, [4]bool{false, true, true, true}},
		{data.Audience{Kind: data.AudienceMinType, Type: data.UserRegular}, [4]bool{false, true, true, true}},
		{data.Audience{Kind: data.AudienceMinType, Type: data.UserCrew}, [4]bool{false, false, true, true}},
		{data.Audience{Kind: data.AudienceMinType, Type: data.UserAdmin}, [4]bool{false, false, false, true}},
		{data.Audience{Kind: data.AudienceUser, UserID: 2}, [4]bool{false, false, true, false}},
		{data.Audience{Kind: "bogus"}, [4]bool{false, false, false, false}},
	}
	for _, tc := range cases {
		for i, v := range []Viewer{anon, regular, crew, admin} {
			if got := v.CanSee(tc.a); got != tc.want[i] {
				t.Errorf("viewer %+v, audience %+v: got %v, want %v", v, tc.a, got, tc.want[i])
			}
		}
	}
}

func TestTokenBucket(t *testing.T) {
	t.Parallel()
	now := time.Unix(0, 0)
	b := newTokenBucket(10, 20, now)
	for i := range 20 {
		if !b.available(now) {
			t.Fatalf("token %d of the burst missing", i)
		}
		b.take()
	}
	if b.available(now) {
		t.Fatal("a 21st token in the same instant")
	}
	if !b.available(now.Add(100 * time.Millisecond)) {
		t.Fatal("no token after 100ms at 10/s")
	}
	b.take()
	if b.available(now.Add(150 * time.Millisecond)) {
		t.Fatal("a token after only 50ms more")
	}
	if !b.available(now.Add(time.Hour)) || b.tokens != 20 {
		t.Fatalf("after an hour: got %v tokens, want the burst of 20", b.tokens)
	}
}

func TestWireFrameHeader(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		n      int
		header []byte
	}{
		{0, []byte{0x81, 0}},
		{125, []byte{0x81, 125}},
		{126, []byte{0x81, 126, 0, 126}},
		{65535, []byte{0x81, 126, 0xff, 0xff}},
		{65536, []byte{0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
	} {
		payload := make([]byte, c.n)
		got := appendWireFrame(nil, payload)
		if string(got[:len(c.header)]) != string(c.header) || len(got) != len(c.header)+c.n {
			t.Errorf("%d bytes: got header % x (%d bytes in all), want % x", c.n, got[:min(len(got), 10)], len(got), c.header)
		}
	}
}
