package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// These tests need no Centrifugo: they check the peer client against frames written after its
// JSON protocol, and against a small fake server that speaks it.

func TestParseReplies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		msg  string
		want []cfReply
	}{
		{"ping", `{}`, []cfReply{{}}},
		{"connect", `{"id":1,"connect":{"client":"c1","version":"6.9.1","ping":25,"pong":true}}`,
			[]cfReply{{ID: 1, Connect: &cfConnectResult{Client: "c1", Ping: 25, Pong: true}}}},
		{"recovered", `{"id":2,"subscribe":{"recoverable":true,"epoch":"ab","offset":7,"recovered":true,"was_recovering":true,"publications":[{"data":{"t":1},"offset":6},{"data":{"t":2},"offset":7}]}}`,
			[]cfReply{{ID: 2, Subscribe: &cfSubscribeResult{Recoverable: true, Epoch: "ab", Offset: 7, Recovered: true, WasRecovering: true,
				Publications: []cfPublication{{Data: json.RawMessage(`{"t":1}`), Offset: 6}, {Data: json.RawMessage(`{"t":2}`), Offset: 7}}}}}},
		{"batch of pushes", "{\"push\":{\"channel\":\"load:bench\",\"pub\":{\"data\":{\"t\":3},\"offset\":8}}}\n{\"push\":{\"channel\":\"load:bench\",\"pub\":{\"data\":{\"t\":4},\"offset\":9}}}\n",
			[]cfReply{
				{Push: &cfPush{Channel: "load:bench", Pub: &cfPublication{Data: json.RawMessage(`{"t":3}`), Offset: 8}}},
				{Push: &cfPush{Channel: "load:bench", Pub: &cfPublication{Data: json.RawMessage(`{"t":4}`), Offset: 9}}},
			}},
		{"error", `{"id":2,"error":{"code":103,"message":"permission denied"}}`,
			[]cfReply{{ID: 2, Error: &cfError{Code: 103, Message: "permission denied"}}}},
		{"unsubscribed", `{"push":{"channel":"load:bench","unsubscribe":{"code":2500,"reason":"insufficient state"}}}`,
			[]cfReply{{Push: &cfPush{Channel: "load:bench", Unsubscribe: json.RawMessage(`{"code":2500,"reason":"insufficient state"}`)}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseReplies([]byte(tc.msg))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := parseReplies([]byte("{}\nnot json")); err == nil {
		t.Fatal("a bad line was accepted")
	}
	if r, _ := parseReplies([]byte(`{}`)); !r[0].isPing() {
		t.Fatal("{} is not a ping")
	}
}

// fakeCentrifugo answers connect and subscribe like the peer's server: a first subscribe
// starts at offset 5; a recovering one gets the publications after its offset. Then it pings
// (and wants the pong), and pushes offsets 6, 6 (a duplicate), 4 (out of order) and 7 in one
// message.
type fakeCentrifugo struct {
	t    *testing.T
	subs chan map[string]any // each subscribe request
	pong chan struct{}
}

func (f *fakeCentrifugo) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer ws.CloseNow()
	ctx := r.Context()
	send := func(s string) { ws.Write(ctx, websocket.MessageText, []byte(s)) }
	read := func() map[string]any {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return nil
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}
	if m := read(); m == nil || m["connect"] == nil || m["id"] != 1.0 {
		f.t.Errorf("first command: got %v, want connect with id 1", m)
		return
	}
	send(`{"id":1,"connect":{"client":"c1","ping":25,"pong":true}}`)
	m := read()
	sub, _ := m["subscribe"].(map[string]any)
	if sub == nil || m["id"] != 2.0 {
		f.t.Errorf("second command: got %v, want subscribe with id 2", m)
		return
	}
	f.subs <- sub
	if sub["recover"] == true {
		send(`{"id":2,"subscribe":{"recoverable":true,"epoch":"ep","offset":9,"recovered":true,"publications":[{"data":{"n":8},"offset":8},{"data":{"n":9},"offset":9}]}}`)
		read() // until the client goes
		return
	}
	send(`{"id":2,"subscribe":{"recoverable":true,"epoch":"ep","offset":5}}`)
	send(`{}`)
	if m := read(); m == nil || len(m) != 0 {
		f.t.Errorf("pong: got %v, want {}", m)
	}
	f.pong <- struct{}{}
	send("{\"push\":{\"channel\":\"load:bench\",\"pub\":{\"data\":{\"n\":6},\"offset\":6}}}\n" +
		"{\"push\":{\"channel\":\"load:bench\",\"pub\":{\"data\":{\"n\":6},\"offset\":6}}}\n" +
		"{\"push\":{\"channel\":\"load:bench\",\"pub\":{\"data\":{\"n\":4},\"offset\":4}}}\n" +
		"{\"push\":{\"channel\":\"load:bench\",\"pub\":{\"data\":{\"n\":7},\"offset\":7}}}")
	read()
}

func TestCentrifugoStream(t *testing.T) {
	t.Parallel()
	f := &fakeCentrifugo{t: t, subs: make(chan map[string]any, 2), pong: make(chan struct{}, 1)}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := newCentrifugo(options{url: srv.URL, channel: "load:bench", apiKey: "k"})
	if c.wsURL != "ws"+srv.URL[len("http"):]+"/connection/websocket" {
		t.Fatalf("websocket address: got %s", c.wsURL)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var opened, ready int
	h := hooks{opened: func() { opened++ }, ready: func() { ready++ }}
	first := c.open(http.DefaultClient, 0, nil, h)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); first.Run(sctx) }()
	if sub := <-f.subs; sub["channel"] != "load:bench" || sub["recover"] != nil {
		t.Fatalf("first subscribe: got %v, want the channel and no recovery", sub)
	}
	var got []int64
	for ev := range first.Events() {
		got = append(got, ev.ID)
		if ev.Type != "load" || string(ev.Data) != `{"n":`+string(rune('0'+ev.ID))+`}` {
			t.Errorf("event %d: got %s %s", ev.ID, ev.Type, ev.Data)
		}
		if len(got) == 2 {
			break
		}
	}
	if !reflect.DeepEqual(got, []int64{6, 7}) {
		t.Fatalf("offsets: got %v, want [6 7]", got)
	}
	if st := first.Stats(); st.Duplicates != 1 || st.OutOfOrder != 1 {
		t.Fatalf("got %+v, want one duplicate and one out of order", st)
	}
	if opened != 1 || ready != 1 {
		t.Fatalf("got %d opened, %d ready; want 1, 1", opened, ready)
	}
	stop()
	<-done

	// The next stream recovers from the last offset and epoch.
	next := c.open(http.DefaultClient, 0, first, hooks{})
	nextDone := make(chan struct{})
	go func() { defer close(nextDone); next.Run(ctx) }()
	if sub := <-f.subs; sub["recover"] != true || sub["offset"] != 7.0 || sub["epoch"] != "ep" {
		t.Fatalf("recovering subscribe: got %v, want recover from offset 7 of epoch ep", sub)
	}
	got = nil
	for ev := range next.Events() {
		if got = append(got, ev.ID); len(got) == 2 {
			break
		}
	}
	if !reflect.DeepEqual(got, []int64{8, 9}) {
		t.Fatalf("recovered offsets: got %v, want [8 9]", got)
	}
	cancel()
	<-nextDone
}
