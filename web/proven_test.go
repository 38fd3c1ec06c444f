package web_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/auth"
)

// A successor session whose cookie rode on a stream's 101 counts as presented only once the
// client shows that it received the 101 (docs/protocol.md section 4.4): these tests drive real
// sockets that drop right after the 101, answer the server's ping, or send a frame.

// readOn reads the stream in the background, as a page does, answering pings, until it ends;
// the channel receives the error that ended it.
func (c *client) readOn() <-chan error {
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := c.tryNext(); err != nil {
				done <- err
				return
			}
		}
	}()
	return done
}

// wantClose checks that err is a close with code and reason.
func wantClose(t *testing.T, err error, code websocket.StatusCode, reason string) {
	t.Helper()
	var ce websocket.CloseError
	if !asCloseError(err, &ce) || ce.Code != code || ce.Reason != reason {
		t.Fatalf("stream ended with %v, want close %d %q", err, code, reason)
	}
}

// dueRotation registers name on b and waits until its session is due for rotation, without
// presenting its cookie; it returns the cookie.
func dueRotation(t *testing.T, b *browser, name string) string {
	t.Helper()
	rotatesAt, err := time.Parse(time.RFC3339, b.register(name).RotatesAt)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rotation due", func() bool { return time.Now().After(rotatesAt) })
	return b.cookie()
}

// presented reports whether the session with id was presented.
func (s *testServer) presented(t *testing.T, id int64) bool {
	t.Helper()
	var p bool
	if err := s.pool.QueryRow(context.Background(), "SELECT presented_at IS NOT NULL FROM sessions WHERE id = $1", id).Scan(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// afterGrace presents an old cookie, from a browser of its own, until its grace is over, and
// returns the first answer given after it.
func (s *testServer) afterGrace(t *testing.T, cookie string) (sessionAnswer, *browser) {
	t.Helper()
	b := s.browser(t)
	b.setCookie(cookie)
	var a sessionAnswer
	waitFor(t, "grace over", func() bool {
		a = b.session()
		return a.Session == nil || b.cookie() != cookie // within grace: the same account, no new cookie
	})
	return a, b
}

// rawUpgrade asks for a stream with a session cookie over a bare TCP connection, reads the
// 101 and returns the cookie it sets, then drops the connection without reading or answering
// anything after the 101.
func rawUpgrade(t *testing.T, s *testServer, cookie string) string {
	t.Helper()
	u, _ := url.Parse(s.URL)
	conn, err := net.DialTimeout("tcp", u.Host, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	key := make([]byte, 16)
	rand.Read(key)
	fmt.Fprintf(conn, "GET /api/events HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: %s\r\nCookie: tidings-session=%s\r\n\r\n",
		u.Host, base64.StdEncoding.EncodeToString(key), cookie)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read the upgrade's response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: got status %d, want 101", resp.StatusCode)
	}
	for _, c := range resp.Cookies() {
		if c.Name == "tidings-session" && c.Value != "" {
			return c.Value
		}
	}
	t.Fatalf("the 101 set no session cookie (Set-Cookie %q)", resp.Header.Values("Set-Cookie"))
	return ""
}

// TestLostUpgradeResponseIsNoTheft: the upgrade rotates the cookie, and the connection drops
// right after the 101, the client never having answered anything. The old cookie, presented
// again after the grace, is a lost response: a fresh successor, not session-taken.
func TestLostUpgradeResponseIsNoTheft(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: time.Millisecond, Grace: 200 * time.Millisecond}})
	old := dueRotation(t, s.browser(t), "lena")
	lost := rawUpgrade(t, s, old)
	if lost == old {
		t.Fatal("the upgrade did not rotate the cookie")
	}
	a, b := s.afterGrace(t, old)
	if a.Session == nil || a.Session.Account == nil || a.Session.Account.Name != "lena" || a.Notice != nil {
		t.Fatalf("old cookie after a lost 101: got %+v, want lena signed in, no notice", a)
	}
	if got := b.cookie(); got == old || got == lost || got == "" {
		t.Fatalf("old cookie after a lost 101: got cookie %q, want a fresh successor", got)
	}
}

// TestPongToUpgradePingPresentsSuccessor: the client of a rotating upgrade reads its stream and
// so answers the server's ping, but sends no frame: that proves the 101 arrived, and the old
// cookie after the grace is a theft.
func TestPongToUpgradePingPresentsSuccessor(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 3 * time.Second, Grace: 200 * time.Millisecond}})
	taker := s.browser(t)
	old := dueRotation(t, taker, "mona")
	c := taker.stream("")
	successor := sessionOf(t, c.next())
	if successor.Session == nil || taker.cookie() == old {
		t.Fatalf("rotating upgrade: got %+v, cookie unchanged %t", successor, taker.cookie() == old)
	}
	ended := c.readOn()
	waitFor(t, "the successor presented by the pong", func() bool { return s.presented(t, successor.Session.ID) })
	if a, _ := s.afterGrace(t, old); a.Session != nil || a.Notice == nil || *a.Notice != auth.NoticeSessionTaken {
		t.Fatalf("old cookie after grace: got %+v, want session-taken", a)
	}
	wantClose(t, <-ended, 4003, "session-taken")
}

// TestFrameAfterUpgradePresentsSuccessor: the client of a rotating upgrade does not answer the
// server's ping, but sends a frame: that proves the 101 arrived, and the old cookie after the
// grace is a theft.
func TestFrameAfterUpgradePresentsSuccessor(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 3 * time.Second, Grace: 200 * time.Millisecond}})
	taker := s.browser(t)
	old := dueRotation(t, taker, "nora")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+s.URL[len("http"):]+"/api/events", &websocket.DialOptions{
		HTTPClient:     taker.client,
		Subprotocols:   []string{"tidings.v1"},
		OnPingReceived: func(context.Context, []byte) bool { return false }, // never a pong
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.CloseNow() })
	c := &client{t: t, conn: conn}
	successor := sessionOf(t, c.next())
	if successor.Session == nil || taker.cookie() == old {
		t.Fatalf("rotating upgrade: got %+v, cookie unchanged %t", successor, taker.cookie() == old)
	}
	// Nothing came from the client yet: no proof.
	if s.presented(t, successor.Session.ID) {
		t.Fatal("the successor counts as presented before the client answered anything")
	}
	c.send(`{"type":"ping","ref":"p1"}`)
	waitFor(t, "the successor presented by the frame", func() bool { return s.presented(t, successor.Session.ID) })
	if a, _ := s.afterGrace(t, old); a.Session != nil || a.Notice == nil || *a.Notice != auth.NoticeSessionTaken {
		t.Fatalf("old cookie after grace: got %+v, want session-taken", a)
	}
	c.expectClose(4003, "session-taken")
}
