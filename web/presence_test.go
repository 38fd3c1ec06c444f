package web_test

import (
	"encoding/json"
	"slices"
	"strconv"
	"testing"
	"time"

	"tidings/realtime"
)

// TestPresenceEndpointAndPage: GET /api/presence answers a signed-in session with who is online
// on any node (anonymous: 401), and the page embeds the same as online (anonymous: []); the
// stream's presence frame follows ready.
func TestPresenceEndpointAndPage(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{presence: &realtime.PresenceConfig{FlushEvery: 10 * time.Millisecond}})
	anon := s.browser(t)
	if code, body, _ := anon.do("GET", "/api/presence", nil); code != 401 {
		t.Fatalf("anonymous GET /api/presence: got %d %s, want 401", code, body)
	}
	if st, _, _ := anon.page(); string(st.Online) != "[]" {
		t.Fatalf("anonymous page: online %s, want []", st.Online)
	}
	kim := s.browser(t)
	kimID := kim.register("kim").Account.ID
	lee := s.browser(t)
	lee.register("lee")
	online := func(b *browser) []int64 {
		code, body, _ := b.do("GET", "/api/presence", nil)
		var got struct {
			Online []int64 `json:"online"`
		}
		if code != 200 || json.Unmarshal(body, &got) != nil || got.Online == nil {
			t.Fatalf("GET /api/presence: got %d %s", code, body)
		}
		return got.Online
	}
	if got := online(lee); len(got) != 0 {
		t.Fatalf("before any stream: got %v, want nobody", got)
	}
	c := kim.stream("")
	sessionOf(t, c.next())
	c.expect("ready")
	if f := c.expect("presence"); !slices.Equal(f.Online, []int64{kimID}) {
		t.Fatalf("kim's presence frame: got %v, want [%d]", f.Online, kimID)
	}
	waitFor(t, "kim online in the database", func() bool { return slices.Equal(online(lee), []int64{kimID}) })
	if st, _, _ := lee.page(); string(st.Online) != "["+strconv.FormatInt(kimID, 10)+"]" {
		t.Fatalf("lee's page: online %s, want [%d]", st.Online, kimID)
	}
}
