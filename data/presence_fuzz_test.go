package data_test

import (
	"bytes"
	"slices"
	"testing"

	"tidings/data"
)

// FuzzPresencePayload feeds the decoder of ephemeral notifications what any role could
// NOTIFY: unsigned payloads must all be refused; signed ones (only a node can sign) must never
// crash it, and what it accepts must be one of the three shapes and come back the same once
// encoded and signed again. A signature is bound to its channel.
func FuzzPresencePayload(f *testing.F) {
	for _, seed := range []string{
		`{"node":"a","seq":1,"on":[1,2],"off":[3]}`,
		`{"node":"a","seq":2,"full":true}`,
		`{"node":"a","seq":-3}`,
		`{"gone":["a","b"]}`,
		`{"gone":[]}`,
		`{"gone":["a"],"node":"b"}`,
		`{"node":"a","full":true,"on":[1]}`,
		`{"node":"","seq":1}`,
		`{"NODE":"a","Seq":1}`,
		`{"node":"a\u0000"}`,
		`{"node":"a","on":[1.5]}`,
		`{"node":"a","on":null,"off":[]}`,
		`{"node":"a","other":1}`,
		`{"node":"a"} {}`,
		`{"node":"a","seq":99999999999999999999}`,
		`[`, `null`, ``, `{}`,
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	key := bytes.Repeat([]byte{7}, 32)
	f.Fuzz(func(t *testing.T, body string, signed bool) {
		payload := body
		if signed {
			payload = data.SignEphemeral(key, data.PresenceChannel, []byte(body))
		}
		m, err := data.DecodeEphemeral(key, data.PresenceChannel, payload)
		if !signed {
			if err == nil {
				t.Fatalf("unsigned payload %q accepted as %s", payload, describe(m))
			}
			return
		}
		// The same body, signed for signals: only that channel takes it, and whole.
		cross := data.SignEphemeral(key, data.SignalsChannel, []byte(body))
		if sm, err := data.DecodeEphemeral(key, data.PresenceChannel, cross); err == nil {
			t.Fatalf("a payload signed for signals accepted on presence: %s", describe(sm))
		}
		if sm, err := data.DecodeEphemeral(key, data.SignalsChannel, cross); err != nil || string(sm.Body) != body {
			t.Fatalf("signal %q: got %s, %v", body, describe(sm), err)
		}
		if err != nil {
			return
		}
		if m.Channel != data.PresenceChannel || m.Body != nil {
			t.Fatalf("%q: got %s, want a presence message", body, describe(m))
		}
		switch {
		case m.Gone != nil:
			if len(m.Gone) == 0 || m.Node != "" || m.Seq != 0 || m.Full || m.On != nil || m.Off != nil || slices.Contains(m.Gone, "") {
				t.Fatalf("%q: got %s, want nodes gone and nothing else", body, describe(m))
			}
		case m.Node != "":
			if m.Full && (m.On != nil || m.Off != nil) {
				t.Fatalf("%q: got %s, want full or a delta", body, describe(m))
			}
		default:
			t.Fatalf("%q: got %s, neither a node nor nodes gone", body, describe(m))
		}
		again, err := data.DecodeEphemeral(key, data.PresenceChannel, data.SignEphemeral(key, data.PresenceChannel, data.EncodePresence(m)))
		if err != nil || describe(again) != describe(m) {
			t.Fatalf("%q: decoded %s, encoded and decoded again %s, %v", body, describe(m), describe(again), err)
		}
	})
}
