package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/realtime"
	"tidings/web"
)

func TestClientFrames(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	c := s.dialLive(t)

	c.send(`{"type":"ping","ref":"p1"}`)
	if f := c.expect("pong"); f.Ref == nil || *f.Ref != "p1" {
		t.Fatalf("pong: got %+v", f)
	}
	c.send(`{"type":"publish","ref":"r1","event":{"type":"message","data":{"text":"hi"}}}`)
	if f := c.expect("error"); f.Code != "unauthenticated" || f.Ref == nil || *f.Ref != "r1" || f.Message == "" {
		t.Fatalf("anonymous publish: got %+v", f)
	}
	for _, bad := range []string{`{nope`, `{"type":"subscribe"}`, `{"type":"publish","ref":"r2"}`, `[]`} {
		c.send(bad)
		f := c.expect("error")
		if f.Code != "invalid-frame" {
			t.Fatalf("%s: got %+v, want invalid-frame", bad, f)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.conn.Write(ctx, websocket.MessageBinary, []byte{1, 2, 3})
	if f := c.expect("error"); f.Code != "invalid-frame" || f.Ref != nil {
		t.Fatalf("binary: got %+v", f)
	}
	// The stream carries on after refusals.
	c.send(`{"type":"ping","ref":"p2"}`)
	if f := c.expect("pong"); *f.Ref != "p2" {
		t.Fatalf("pong after errors: got %+v", f)
	}
	s.publishN(t, 1, "still-live")
	c.expectEvents(1)
}

func TestTooBigMessageCloses1009(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	c := s.dialLive(t)
	c.send(`{"type":"ping","ref":"` + strings.Repeat("x", 65<<10) + `"}`)
	c.expectClose(websocket.StatusMessageTooBig, "")
}

func TestRepeatedInvalidFramesClose1008(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	c := s.dialLive(t)
	for range 10 {
		c.send(`not json`)
	}
	c.expectClose(websocket.StatusPolicyViolation, "")
}

func TestShutdownClosesStreamsWithGoingAway(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	c := s.dialLive(t)
	waitFor(t, "subscribed", func() bool { return s.hub.Subscribers() == 1 })
	done := make(chan struct{})
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.handler.Shutdown(ctx)
	}()
	c.expectClose(websocket.StatusGoingAway, "going-away")
	<-done
	if n := s.hub.Subscribers(); n != 0 {
		t.Fatalf("got %d subscribers after shutdown, want 0", n)
	}
	// New streams are refused the same way.
	c2 := s.dial(t, "", nil)
	c2.expectClose(websocket.StatusGoingAway, "going-away")
}

func TestStreamsLeaveNothingBehind(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	for range 20 {
		c := s.dial(t, "lastEventId=0", nil)
		c.expect("session")
		c.conn.Close(websocket.StatusNormalClosure, "")
	}
	waitFor(t, "every subscription gone", func() bool { return s.hub.Subscribers() == 0 })
}

func TestPublishAPI(t *testing.T) {
	t.Parallel()
	post := func(s *testServer, key, body string, header ...string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL+"/api/publish", strings.NewReader(body))
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	off := newServer(t, serverOptions{})
	if code, body := post(off, "k", `{"type":"a"}`); code != 404 || !strings.Contains(body, `"error"`) {
		t.Fatalf("no key configured: got %d %s", code, body)
	}

	s := newServer(t, serverOptions{web: web.Config{APIKey: "secret"}})
	c := s.dialLive(t)
	for _, key := range []string{"", "wrong"} {
		if code, _ := post(s, key, `{"type":"a"}`); code != 401 {
			t.Fatalf("key %q: got %d, want 401", key, code)
		}
	}
	if code, body := post(s, "secret", `{"type":"a","data":{"x":1}}`, "Origin", "http://evil.example", "Content-Type", "text/plain"); code != 200 || body != "{\"ids\":[1]}\n" {
		t.Fatalf("one event: got %d %s", code, body)
	}
	code, body := post(s, "secret", `[{"type":"b"},{"type":"hidden","audience":{"kind":"signed-in"}},{"type":"c","audience":null}]`)
	if code != 200 || body != "{\"ids\":[2,3,4]}\n" {
		t.Fatalf("array: got %d %s", code, body)
	}
	// The anonymous stream sees everyone's events only.
	c.expectEvents(1, 2, 4)

	for _, bad := range []string{`{"type":"a","audience":{"kind":"user"}}`, `{"type":""}`, `nope`, `[{"type":"a"},{"type":"b","audience":{"kind":"Everyone"}}]`} {
		if code, body := post(s, "secret", bad); code != 400 || !strings.Contains(body, `"code"`) {
			t.Fatalf("%s: got %d %s, want 400", bad, code, body)
		}
	}
	if code, _ := post(s, "secret", `{"type":"a","data":"`+strings.Repeat("x", 1<<20)+`"}`); code != 413 {
		t.Fatalf("large body: got %d, want 413", code)
	}
	if wm := getWatermark(t, s); wm != 4 {
		t.Fatalf("refused publishes stored something: watermark %d, want 4", wm)
	}
}

func TestAPIErrorsAndHealth(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	get := func(path string) (int, map[string]any) {
		resp, err := s.Client().Get(s.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body
	}
	if code, body := get("/api/nothing-here"); code != 404 || body["error"] == nil {
		t.Fatalf("unknown api path: got %d %v", code, body)
	}
	if code, body := get("/healthz"); code != 200 || body["status"] != "ok" {
		t.Fatalf("healthz: got %d %v", code, body)
	}
	if code, body := get("/readyz"); code != 200 || body["status"] != "ready" {
		t.Fatalf("readyz: got %d %v", code, body)
	}
	if code, body := get("/api/last-event-id"); code != 200 || body["lastEventId"] != float64(0) {
		t.Fatalf("last-event-id: got %d %v", code, body)
	}
	req, _ := http.NewRequest("POST", s.URL+"/api/anything", bytes.NewReader([]byte(`{}`)))
	req.Header.Set("Origin", "http://evil.example")
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("foreign-origin POST: got %d, want 403", resp.StatusCode)
	}
	req, _ = http.NewRequest("POST", s.URL+"/api/anything", strings.NewReader(`a=b`))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 415 {
		t.Fatalf("form POST: got %d, want 415", resp.StatusCode)
	}
}

func TestRequestIDs(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	get := func(header string) string {
		req, _ := http.NewRequest("GET", s.URL+"/healthz", nil)
		if header != "" {
			req.Header.Set("X-Request-Id", header)
		}
		resp, err := s.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("X-Request-Id")
	}
	if a, b := get(""), get(""); len(a) != 16 || a == b {
		t.Fatalf("generated ids: got %q and %q, want two different 16-character ids", a, b)
	}
	if got := get("proxy-42"); got != "proxy-42" {
		t.Fatalf("a proxy's id: got %q, want it kept", got)
	}
	if got := get("bad id"); got == "bad id" || len(got) != 16 {
		t.Fatalf("an unusable id: got %q, want a fresh one", got)
	}
}

// TestStreamLimits: a session's streams and a client address's streams are limited, anonymous
// ones included; behind a trusted proxy each client has its own address, an IPv6 client its
// /64; loopback clients are not limited by address.
func TestStreamLimits(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{MaxStreamsPerSession: 2, MaxStreamsPerAddress: 3,
		TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}}})
	from := func(addr string) http.Header { return http.Header{"X-Forwarded-For": {addr}} }
	refused := func(what string, hc *http.Client, header http.Header) {
		t.Helper()
		if c, err := s.tryDialAs(t, hc, "", header); err == nil || c.resp == nil || c.resp.StatusCode != 429 {
			t.Fatalf("%s: got %v, want 429", what, err)
		}
	}
	b := s.browser(t)
	b.register("wes")
	first := b.stream("")
	b.stream("")
	refused("third stream of one session", b.client, nil)

	for range 3 {
		s.dial(t, "", from("203.0.113.7")) // anonymous streams count
	}
	refused("fourth stream of one address", nil, from("203.0.113.7"))
	s.dial(t, "", from("203.0.113.8")) // another client behind the same proxy

	for i := range 3 {
		s.dial(t, "", from(fmt.Sprintf("2001:db8:1:2::%d", i+1)))
	}
	refused("fourth stream of one IPv6 /64", nil, from("2001:db8:1:2:ffff::1"))
	s.dial(t, "", from("2001:db8:1:3::1")) // the next /64

	for range 4 {
		s.dial(t, "", nil) // the proxy's own address, loopback: no limit
	}

	first.conn.Close(websocket.StatusNormalClosure, "")
	waitFor(t, "a place freed", func() bool {
		c, err := s.tryDialAs(t, b.client, "", nil)
		if err == nil {
			c.conn.CloseNow()
		}
		return err == nil
	})
}

func TestAccountPublishLimitSpansSockets(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{web: web.Config{Stream: realtime.StreamConfig{AccountPublishRate: 0.001, AccountPublishBurst: 3}}})
	b := s.browser(t)
	b.register("xia")
	one, two := b.stream(""), b.stream("")
	for _, c := range []*client{one, two} {
		c.next()
		c.expect("ready")
	}
	answers := map[string]int{}
	for i := range 4 {
		c := []*client{one, two}[i%2]
		c.send(fmt.Sprintf(`{"type":"publish","ref":"x%d","event":{"type":"message","data":{"text":"t"}}}`, i))
		for {
			f := c.next()
			if f.Type == "ack" || f.Type == "error" {
				answers[f.Type+f.Code]++
				break
			}
		}
	}
	if answers["ack"] != 3 || answers["errorrate-limited"] != 1 {
		t.Fatalf("got %v, want 3 acks and 1 rate-limited across the account's two sockets", answers)
	}
}
