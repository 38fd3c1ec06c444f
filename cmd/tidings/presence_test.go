package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"tidings/data/datatest"
)

// TestPresenceOfAKilledNode: the users of a node killed with SIGKILL, which never says it
// leaves, go offline on the other nodes once TIDINGS_PRESENCE_TIMEOUT has passed (the grace
// here is an hour: nothing else can take them offline).
func TestPresenceOfAKilledNode(t *testing.T) {
	t.Parallel()
	bin := buildTidings(t, t.TempDir())
	env := map[string]string{
		"DATABASE_URL":             datatest.NewDatabase(t),
		"TIDINGS_DEV":              "true",
		"TIDINGS_PRESENCE_GRACE":   "1h",
		"TIDINGS_PRESENCE_TIMEOUT": "1s",
	}
	a := startNode(t, "A", env)
	b := startProcess(t, bin, env)
	ann, _ := registerOn(t, a.url, "ann")
	bob, bobID := registerOn(t, a.url, "bob")
	watch := openPresence(t, ann, a.url)
	openPresence(t, bob, b.url)
	watch.want(t, fmt.Sprint(bobID, " on"))
	b.kill(t)
	killed := time.Now()
	watch.want(t, fmt.Sprint(bobID, " off"))
	t.Logf("bob went offline on A %v after B was killed", time.Since(killed).Round(time.Millisecond))
}

// registerOn registers name on the node at url and returns a client holding its session.
func registerOn(t *testing.T, url, name string) (*http.Client, int64) {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	body := fmt.Sprintf(`{"name":%q,"password":"password-%s"}`, name, name)
	resp, err := hc.Post(url+"/api/auth/register", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct {
		Account struct {
			ID int64 `json:"id"`
		} `json:"account"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("register %s: got %d, %v", name, resp.StatusCode, err)
	}
	return hc, s.Account.ID
}

// presenceStream is a signed-in stream read for its presence changes.
type presenceStream struct{ *websocket.Conn }

// openPresence opens a stream with hc's session and reads it up to its presence frame.
func openPresence(t *testing.T, hc *http.Client, url string) presenceStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http")+"/api/events", &websocket.DialOptions{HTTPClient: hc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	s := presenceStream{c}
	for _, want := range []string{"session", "ready", "presence"} {
		if typ, _ := s.next(t); typ != want {
			t.Fatalf("got a %s frame, want %s", typ, want)
		}
	}
	return s
}

func (s presenceStream) next(t *testing.T) (string, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, msg, err := s.Read(ctx)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	var f struct {
		Type string `json:"type"`
	}
	json.Unmarshal(msg, &f)
	return f.Type, msg
}

// want reads the next frame, which must be the presence change "7 on" or "7 off".
func (s presenceStream) want(t *testing.T, change string) {
	t.Helper()
	typ, msg := s.next(t)
	var f struct {
		UserID int64 `json:"userId"`
		Online bool  `json:"online"`
	}
	json.Unmarshal(msg, &f)
	got := fmt.Sprint(f.UserID, map[bool]string{true: " on", false: " off"}[f.Online])
	if typ != "presence-change" || got != change {
		t.Fatalf("got %s, want the presence change %q", msg, change)
	}
}
