package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/auth"
	"tidings/web"
)

// Rotation, grace, lost responses and theft (docs/protocol.md sections 4.3 and 4.4) with bearer
// tokens: the successor in the Tidings-Session-Token header of a request, or in a token frame
// on the stream.

// dueBearer registers name on a as a bearer session and waits until it is due for rotation,
// without presenting it again; it returns the token.
func dueBearer(t *testing.T, a *app, name string) string {
	t.Helper()
	rotatesAt, err := time.Parse(time.RFC3339, a.signIn("/api/auth/register", name, 201).RotatesAt)
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "rotation due", func() bool { return time.Now().After(rotatesAt) })
	return a.token
}

// TestBearerRotationOverHTTP: a request with a due token gets its successor in the header, no
// cookie; the old token within its grace is the same account without another successor; the
// successor works.
func TestBearerRotationOverHTTP(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 300 * time.Millisecond, Grace: 10 * time.Second}})
	a := s.app(t, "")
	old := dueBearer(t, a, "rita")
	got, resp := a.session()
	successor, ok := tokenHeader(resp)
	if !ok || successor == "" || successor == old || got.Session == nil || got.Session.Account.Name != "rita" {
		t.Fatalf("due request: got %+v, %s %q", got, web.TokenHeader, successor)
	}
	if c := resp.Header.Values("Set-Cookie"); len(c) != 0 {
		t.Fatalf("a bearer rotation set a cookie: %q", c)
	}
	stale := s.app(t, "")
	stale.token = old
	if a, resp := stale.session(); a.Session == nil || a.Session.Account.Name != "rita" {
		t.Fatalf("old token within grace: got %+v", a)
	} else if _, ok := tokenHeader(resp); ok {
		t.Fatal("the old token within grace got another successor")
	}
	if again, resp := a.session(); again.Session == nil || again.Session.ID != got.Session.ID {
		t.Fatalf("the successor: got %+v, want session %d", again, got.Session.ID)
	} else if _, ok := tokenHeader(resp); ok {
		t.Fatal("the fresh successor was rotated again")
	}
}

// TestBearerStreamRotation: an upgrade with a due token sends the successor in a token frame
// right after the session frame; at the successor's rotatesAt the server rotates it itself and
// sends the next token just before 4002; the client reconnects with that token onto the new
// session. The pong to the server's ping after the token frame presented the successor.
func TestBearerStreamRotation(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: time.Second, Grace: 10 * time.Second}})
	a := s.app(t, "")
	old := dueBearer(t, a, "sam")
	c := a.dial("")
	first := sessionOf(t, c.next())
	f := c.expect("token")
	if f.Token == "" || f.Token == old || first.Session == nil {
		t.Fatalf("rotating upgrade: session %+v, token frame %+v", first, f)
	}
	a.token = f.Token
	ended := make(chan frame, 16)
	go func() { // reads on, answering pings, as a client does
		for {
			f, err := c.tryNext()
			if err != nil {
				var ce websocket.CloseError
				if asCloseError(err, &ce) {
					ended <- frame{Type: "close", ID: int64(ce.Code), Message: ce.Reason}
				}
				close(ended)
				return
			}
			ended <- f
		}
	}()
	waitFor(t, "the successor presented by the pong", func() bool { return s.presented(t, first.Session.ID) })
	var last frame
	for f := range ended {
		if f.Type == "token" {
			last = f
		}
		if f.Type == "close" && (f.ID != 4002 || f.Message != "session-rotated" || last.Token == "" || last.Token == a.token) {
			t.Fatalf("at rotatesAt: got close %d %q after token frame %+v", f.ID, f.Message, last)
		}
	}
	rotatesAt, _ := time.Parse(time.RFC3339, first.Session.RotatesAt)
	if time.Now().Before(rotatesAt) {
		t.Fatalf("closed before rotatesAt %v", rotatesAt)
	}
	a.token = last.Token
	c2 := a.dial("")
	second := sessionOf(t, c2.next())
	if second.Session == nil || second.Session.ID == first.Session.ID || second.Session.Account.Name != "sam" {
		t.Fatalf("reconnect with the token frame's token: got %+v, was %+v", second, first)
	}
	if f := c2.next(); f.Type == "token" {
		t.Fatal("the reconnect with a fresh token rotated it again")
	}
}

// TestBearerLostRotationResponse: the header that carried the successor never arrived; the old
// token after the grace gets a new successor, signed in, no notice. The same for a token frame
// that never arrived: the connection dropped without a pong.
func TestBearerLostRotationResponse(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 300 * time.Millisecond, Grace: 300 * time.Millisecond}})
	check := func(what string, a *app, old, lost string) {
		t.Helper()
		a.token = old
		var got sessionAnswer
		waitFor(t, "grace over", func() bool {
			got, _ = a.session()
			return a.token != old
		})
		if got.Session == nil || got.Session.Account == nil || got.Notice != nil || a.token == "" || a.token == lost {
			t.Fatalf("%s: got %+v, token changed to %q; want signed in with a fresh successor", what, got, a.token)
		}
	}

	a := s.app(t, "")
	old := dueBearer(t, a, "tess")
	a.session() // rotates; the header is as good as lost: the old token comes back
	lost := a.token
	if lost == old {
		t.Fatal("no rotation")
	}
	check("lost header", a, old, lost)

	b := s.app(t, "")
	old = dueBearer(t, b, "tom")
	c, err := b.tryDial("", &websocket.DialOptions{OnPingReceived: func(context.Context, []byte) bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	sessionOf(t, c.next())
	lost = c.expect("token").Token // read, but never acknowledged by a pong: the connection drops
	c.conn.CloseNow()
	check("lost token frame", b, old, lost)
}

// TestBearerTheft: a taker holding a copy of the token uses it first when it is due, gets the
// successor and streams with it; once the grace is over, the real holder's old token reveals the
// theft: it is answered anonymous with session-taken and told to forget its token, the taker's
// stream closes with 4003 session-taken, and the taker is told too.
func TestBearerTheft(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: time.Second, Grace: 200 * time.Millisecond}})
	real := s.app(t, "")
	stolen := dueBearer(t, real, "uri")
	taker := s.app(t, "")
	taker.token = stolen
	if a, _ := taker.session(); a.Session == nil || taker.token == stolen {
		t.Fatalf("taker's due request: got %+v", a)
	}
	c := taker.dial("") // presents the successor
	if got := sessionOf(t, c.next()); got.Session == nil || got.Session.Account.Name != "uri" {
		t.Fatalf("taker's stream: got %+v", got)
	}
	c.expect("ready")
	var told sessionAnswer
	waitFor(t, "grace over", func() bool {
		told, _ = real.session()
		return told.Session == nil
	})
	if told.Notice == nil || *told.Notice != auth.NoticeSessionTaken || real.token != "" {
		t.Fatalf("real holder: got %+v, token %q; want session-taken and the token forgotten", told, real.token)
	}
	c.expectClose(4003, "session-taken")
	if a, _ := taker.session(); a.Session != nil || a.Notice == nil || *a.Notice != auth.NoticeSessionTaken || taker.token != "" {
		t.Fatalf("taker after: got %+v, token %q", a, taker.token)
	}
	// The old token on a stream: anonymous, session-taken, and the stream opens anyway.
	again := s.app(t, "")
	again.token = stolen
	ac := again.dial("")
	if got := sessionOf(t, ac.next()); got.Session != nil || got.Notice == nil || *got.Notice != auth.NoticeSessionTaken {
		t.Fatalf("the old token's stream: got %+v", got)
	}
	ac.expect("ready")
}

// TestBearerTheftWhenTheTakerOnlyStreams: the taker's successor arrives in the token frame of a
// rotating upgrade and is never presented in a request; the pong to the server's ping after that
// frame proves it arrived, so the real holder's old token still reveals the theft rather than
// pass for a lost response; the owner's stream then closes 4003 session-taken.
func TestBearerTheftWhenTheTakerOnlyStreams(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 3 * time.Second, Grace: 200 * time.Millisecond}})
	real := s.app(t, "")
	stolen := dueBearer(t, real, "val")
	taker := s.app(t, "")
	taker.token = stolen
	c := taker.dial("")
	successor := sessionOf(t, c.next())
	if f := c.expect("token"); f.Token == "" || successor.Session == nil {
		t.Fatalf("rotating upgrade: got %+v, token frame %+v", successor, f)
	}
	ended := c.readOn()
	waitFor(t, "the successor presented by the pong", func() bool { return s.presented(t, successor.Session.ID) })
	var told sessionAnswer
	waitFor(t, "grace over", func() bool {
		told, _ = real.session()
		return told.Session == nil
	})
	if told.Notice == nil || *told.Notice != auth.NoticeSessionTaken {
		t.Fatalf("real holder: got %+v, want session-taken", told)
	}
	wantClose(t, <-ended, 4003, "session-taken")
}
