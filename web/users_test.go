package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"tidings/data"
)

func TestTypeChangeAndDeletionCloseStreams(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	if _, err := s.auth.CreateUser(context.Background(), "root", "password-root", data.UserAdmin); err != nil {
		t.Fatal(err)
	}
	admin := s.browser(t)
	admin.login("root")
	bob := s.browser(t)
	bobID := bob.register("bob").Account.ID
	c := bob.stream("")
	sessionOf(t, c.next())
	c.expect("ready")

	if code, body, _ := bob.do("PATCH", fmt.Sprintf("/api/users/%d", bobID), map[string]string{"type": "admin"}); code != 403 {
		t.Fatalf("self-promotion: got %d %s", code, body)
	}
	if code, body, _ := admin.do("PATCH", fmt.Sprintf("/api/users/%d", bobID), map[string]string{"type": "crew"}); code != 200 || !strings.Contains(string(body), `"type":"crew"`) {
		t.Fatalf("promote: got %d %s", code, body)
	}
	c.expectClose(4003, "access-changed")
	c = bob.stream("")
	if got := sessionOf(t, c.next()); got.Session.Account.Type != "crew" {
		t.Fatalf("after promotion: got %+v", got.Session.Account)
	}
	c.expect("ready")
	if code, _, _ := bob.do("DELETE", fmt.Sprintf("/api/users/%d", bobID), nil); code != 403 {
		t.Fatalf("delete by non-admin: got %d", code)
	}
	if code, _, _ := admin.do("DELETE", fmt.Sprintf("/api/users/%d", bobID), nil); code != 204 {
		t.Fatalf("delete: got %d", code)
	}
	c.expectClose(4003, "user-deleted")
	if a := bob.session(); a.Session != nil {
		t.Fatalf("deleted user's session: got %+v", a)
	}
}

func TestUsersEndpoints(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	anon := s.browser(t)
	if code, _, _ := anon.do("GET", "/api/users", nil); code != 401 {
		t.Fatalf("anonymous list: got %d, want 401", code)
	}
	kim := s.browser(t)
	kimID := kim.register("kim").Account.ID
	lee := s.browser(t)
	leeID := lee.register("lee").Account.ID
	watch := kim.stream(fmt.Sprintf("lastEventId=%d", getWatermark(t, s)))
	sessionOf(t, watch.next())
	watch.expect("ready")

	code, body, _ := kim.do("GET", "/api/users", nil)
	var users []struct {
		ID   int64
		Name string
	}
	json.Unmarshal(body, &users)
	if code != 200 || len(users) != 2 || users[0].ID != kimID || users[1].ID != leeID {
		t.Fatalf("list: got %d %s", code, body)
	}
	if code, _, _ := kim.do("GET", "/api/users/999999", nil); code != 404 {
		t.Fatalf("missing user: got %d", code)
	}
	if code, _, _ := kim.do("GET", "/api/users/abc", nil); code != 404 {
		t.Fatalf("non-numeric id: got %d", code)
	}
	if code, _, _ := anon.do("GET", fmt.Sprintf("/api/users/%d", kimID), nil); code != 401 {
		t.Fatalf("anonymous get: got %d", code)
	}
	if code, body, _ := kim.do("PATCH", fmt.Sprintf("/api/users/%d", leeID), map[string]string{"name": "x"}); code != 403 {
		t.Fatalf("renaming another: got %d %s", code, body)
	}
	if code, body, _ := kim.do("PATCH", fmt.Sprintf("/api/users/%d", kimID), map[string]string{"name": "LEE"}); code != 409 {
		t.Fatalf("taking a name: got %d %s", code, body)
	}
	if code, body, _ := kim.do("PATCH", fmt.Sprintf("/api/users/%d", kimID), map[string]string{"role": "admin"}); code != 400 {
		t.Fatalf("unknown field: got %d %s", code, body)
	}
	if code, body, _ := kim.do("PATCH", fmt.Sprintf("/api/users/%d", kimID), map[string]string{"name": "kimberly"}); code != 200 || !strings.Contains(string(body), `"name":"kimberly"`) {
		t.Fatalf("own rename: got %d %s", code, body)
	}
	f := watch.expect("event")
	var e struct {
		Type string
		Data struct {
			ID   int64
			Name string
			Type string
		}
	}
	if json.Unmarshal(f.Event, &e); e.Type != "user-update" || e.Data.ID != kimID || e.Data.Name != "kimberly" || e.Data.Type != "regular" {
		t.Fatalf("user-update event: got %s", f.Event)
	}
}

func TestAudiences(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	if _, err := s.auth.CreateUser(context.Background(), "boss", "password-boss", data.UserAdmin); err != nil {
		t.Fatal(err)
	}
	admin := s.browser(t)
	admin.login("boss")
	reg := s.browser(t)
	regID := reg.register("pat").Account.ID
	base := getWatermark(t, s) // after the user-update events of the registrations

	publishAll := func() {
		s.publish(t,
			data.NewEvent{Type: "all"},
			data.NewEvent{Type: "members", Audience: data.Audience{Kind: data.AudienceSignedIn}},
			data.NewEvent{Type: "crew", Audience: data.Audience{Kind: data.AudienceMinType, Type: data.UserCrew}},
			data.NewEvent{Type: "pat-only", Audience: data.Audience{Kind: data.AudienceUser, UserID: regID}},
			data.NewEvent{Type: "admins", Audience: data.Audience{Kind: data.AudienceMinType, Type: data.UserAdmin}},
		)
	}
	want := map[string][]string{
		"anonymous": {"all"},
		"regular":   {"all", "members", "pat-only"},
		"admin":     {"all", "members", "crew", "admins"},
	}
	viewers := map[string]*browser{"anonymous": s.browser(t), "regular": reg, "admin": admin}
	live := map[string]*client{}
	for name, b := range viewers {
		c := b.stream(fmt.Sprintf("lastEventId=%d", base))
		sessionOf(t, c.next())
		c.expect("ready")
		live[name] = c
	}
	publishAll()
	wm := getWatermark(t, s)
	waitFor(t, "hub at the batch", func() bool { return s.hub.Head() == wm })
	for name, b := range viewers {
		// Replay of the first batch, then the same batch live, must show the same types.
		replay := b.stream(fmt.Sprintf("lastEventId=%d", base))
		sessionOf(t, replay.next())
		got := eventTypes(t, replay, "ready")
		if strings.Join(got, ",") != strings.Join(want[name], ",") {
			t.Errorf("%s replay: got %v, want %v", name, got, want[name])
		}
		var liveGot []string
		for range want[name] {
			liveGot = append(liveGot, eventType(t, live[name].expect("event")))
		}
		if strings.Join(liveGot, ",") != strings.Join(want[name], ",") {
			t.Errorf("%s live: got %v, want %v", name, liveGot, want[name])
		}
	}
	// A marker everyone sees proves nothing else was queued for anyone.
	s.publish(t, data.NewEvent{Type: "marker"})
	for name, c := range live {
		if got := eventType(t, c.expect("event")); got != "marker" {
			t.Errorf("%s: got %s after the batch, want marker", name, got)
		}
	}
}

func eventType(t *testing.T, f frame) string {
	t.Helper()
	var e struct{ Type string }
	json.Unmarshal(f.Event, &e)
	return e.Type
}

// eventTypes reads event frames until a frame of type until, and returns their types.
func eventTypes(t *testing.T, c *client, until string) []string {
	t.Helper()
	var out []string
	for {
		f := c.next()
		if f.Type == until {
			return out
		}
		out = append(out, eventType(t, f))
	}
}

func TestMessagesOverTheSocket(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	mia := s.browser(t)
	miaID := mia.register("mia").Account.ID
	ned := s.browser(t)
	ned.register("ned")
	from := fmt.Sprintf("lastEventId=%d", getWatermark(t, s))
	sender, reader, anon := mia.stream(from), ned.stream(from), s.browser(t).stream(from)
	for _, c := range []*client{sender, reader, anon} {
		c.next()
		c.expect("ready")
	}
	sender.send(`{"type":"publish","ref":"m1","event":{"type":"message","data":{"text":"  hello ned \n"}}}`)
	// The sender gets its ack and its own message, in either order.
	var ack frame
	var echoed int64
	for ack.Type == "" || echoed == 0 {
		switch f := sender.next(); f.Type {
		case "ack":
			ack = f
		case "event":
			echoed = f.ID
		}
	}
	if ack.Ref == nil || *ack.Ref != "m1" || ack.ID == 0 || echoed != ack.ID {
		t.Fatalf("ack: got %+v, own message %d", ack, echoed)
	}
	f := reader.expect("event")
	var e struct {
		Type string
		Data struct {
			UserID   int64
			UserName string
			Text     string
		}
	}
	json.Unmarshal(f.Event, &e)
	if f.ID != ack.ID || e.Type != "message" || e.Data.UserID != miaID || e.Data.UserName != "mia" || e.Data.Text != "hello ned" {
		t.Fatalf("message: got id %d %s", f.ID, f.Event)
	}
	for _, c := range []struct{ frame, code string }{
		{`{"type":"publish","ref":"x","event":{"type":"message","data":{"text":"   "}}}`, "invalid"},
		{`{"type":"publish","ref":"x","event":{"type":"message","data":{"text":"` + strings.Repeat("é", 4001) + `"}}}`, "invalid"},
		{`{"type":"publish","ref":"x","event":{"type":"message","data":{"body":"hi"}}}`, "invalid"},
		{`{"type":"publish","ref":"x","event":{"type":"message","data":{"text":5}}}`, "invalid"},
		{`{"type":"publish","ref":"x","event":{"type":"user-update","data":{}}}`, "forbidden"},
		{`{"type":"publish","ref":"x","event":{"type":"tidings.close-streams","data":{}}}`, "forbidden"},
	} {
		sender.send(c.frame)
		if got := sender.expect("error"); got.Code != c.code {
			t.Errorf("%s: got %+v, want %s", c.frame, got, c.code)
		}
	}
	// The anonymous stream saw nothing; a marker for everyone proves it.
	s.publish(t, data.NewEvent{Type: "marker"})
	if got := eventType(t, anon.expect("event")); got != "marker" {
		t.Fatalf("anonymous stream: got %s, want marker", got)
	}
	// The rate limit: a bucket of 20 that refills at 10 a second. Of 60 quick publishes, at
	// most 20 + 10 per second elapsed (+1 for the first message) are taken.
	start := time.Now()
	for i := range 60 {
		sender.send(fmt.Sprintf(`{"type":"publish","ref":"r%d","event":{"type":"message","data":{"text":"n%d"}}}`, i, i))
	}
	accepted, limited := 0, 0
	for accepted+limited < 60 { // acks and errors; the messages themselves pass by
		switch f := sender.next(); f.Type {
		case "ack":
			accepted++
		case "error":
			if f.Code != "rate-limited" {
				t.Fatalf("got error %+v, want rate-limited", f)
			}
			limited++
		}
	}
	allowed := 20 + int(10*time.Since(start).Seconds()) + 1
	if limited == 0 || accepted+1 > allowed {
		t.Fatalf("got %d accepted and %d rate-limited in %v, want at most %d accepted", accepted, limited, time.Since(start), allowed-1)
	}
}
