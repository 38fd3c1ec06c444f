package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"tidings/data/datatest"
	"tidings/realtime"
	"tidings/realtime/client"
	"tidings/web"
	"tidings/web/webtest"
)

// watcher is a client whose presence and signals are read through channels.
type watcher struct {
	c        *client.Client
	id       int64 // its account's user id; 0 for an anonymous client
	presence chan []int64
	changes  chan string
	signals  chan client.Signal
	stop     func()
}

// watch registers name (none: anonymous) on the node at url and runs a client with its
// session.
func watch(t *testing.T, url, name string) *watcher {
	t.Helper()
	w := &watcher{presence: make(chan []int64, 16), changes: make(chan string, 64), signals: make(chan client.Signal, 64)}
	hc := newJarClient()
	if name != "" {
		resp, err := hc.Post(url+"/api/auth/register", "application/json", strings.NewReader(`{"name":"`+name+`","password":"password-`+name+`"}`))
		if err != nil || resp.StatusCode != http.StatusCreated {
			t.Fatalf("register %s: %v %v", name, resp, err)
		}
		var s struct{ Account struct{ ID int64 } }
		if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		w.id = s.Account.ID
	}
	w.c = client.New(client.Config{URL: url, HTTPClient: hc,
		OnPresence:       func(online []int64) { w.presence <- online },
		OnPresenceChange: func(id int64, online bool) { w.changes <- changeText(id, online) },
		OnSignal:         func(s client.Signal) { w.signals <- s },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.c.Run(ctx) }()
	go func() {
		for range w.c.Events() {
		}
	}()
	w.stop = func() { cancel(); <-done }
	t.Cleanup(w.stop)
	return w
}

func changeText(id int64, online bool) string {
	b, _ := json.Marshal(map[string]any{"userId": id, "online": online})
	return string(b)
}

// next reads one value of ch within a bound.
func next[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatalf("no %s within 10 s", what)
		panic("unreachable")
	}
}

// TestPresenceAndSignalsFromANode: against a node with presence, a signed-in client gets the
// online set after ready and every change after it; its signals reach every signed-in stream,
// its own included; and Signal reports each refusal of docs/protocol.md section 8 by its code.
func TestPresenceAndSignalsFromANode(t *testing.T) {
	t.Parallel()
	n, err := webtest.Start(datatest.NewPool(t), webtest.Options{Web: web.Config{Dev: true},
		Presence: &realtime.PresenceConfig{Grace: 200 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Stop()
	ctx := context.Background()

	ada := watch(t, n.URL, "ada")
	if got := next(t, ada.presence, "presence frame for ada"); len(got) != 1 || got[0] != ada.id {
		t.Fatalf("ada's presence frame: got %v, want [%d]", got, ada.id)
	}
	bob := watch(t, n.URL, "bob")
	if got := next(t, bob.presence, "presence frame for bob"); len(got) != 2 {
		t.Fatalf("bob's presence frame: got %v, want ada and bob", got)
	}
	if got, want := next(t, ada.changes, "bob's arrival"), changeText(bob.id, true); got != want {
		t.Fatalf("ada got %s, want %s", got, want)
	}

	if err := bob.c.Signal(ctx, "typing", nil); err != nil {
		t.Fatalf("typing: got %v, want nil", err)
	}
	for _, w := range []*watcher{ada, bob} {
		if s := next(t, w.signals, "bob's signal"); s.From != bob.id || s.Type != "typing" || string(s.Data) != "{}" {
			t.Fatalf("got %+v, want bob's typing with {}", s)
		}
	}
	refusal := func(w *watcher, typ string, data any, code string) {
		t.Helper()
		var se *client.SignalError
		if err := w.c.Signal(ctx, typ, data); !errors.As(err, &se) || se.Code != code {
			t.Fatalf("signal %q %v: got %v, want %s", typ, data, err, code)
		}
	}
	refusal(bob, "juggling", nil, "forbidden")
	refusal(bob, "typing", []int{1}, "invalid")
	refusal(bob, "typing", map[string]string{"pad": strings.Repeat("x", 2000)}, "invalid")
	anon := watch(t, n.URL, "")
	waitConnected(t, anon.c)
	refusal(anon, "typing", nil, "unauthenticated")

	// 5 per second, bursts of 10: a quick run of signals meets the limit.
	limited := 0
	for range 15 {
		var se *client.SignalError
		if err := ada.c.Signal(ctx, "typing", nil); errors.As(err, &se) && se.Code == "rate-limited" {
			limited++
		} else if err != nil {
			t.Fatalf("signal: %v", err)
		}
	}
	if limited == 0 {
		t.Fatal("15 signals at once: none rate-limited")
	}

	bob.stop()
	if got, want := next(t, ada.changes, "bob's departure"), changeText(bob.id, false); got != want {
		t.Fatalf("ada got %s, want %s", got, want)
	}
	select {
	case p := <-anon.presence:
		t.Fatalf("the anonymous stream got a presence frame: %v", p)
	case s := <-anon.signals:
		t.Fatalf("the anonymous stream got a signal: %+v", s)
	default:
	}
}
