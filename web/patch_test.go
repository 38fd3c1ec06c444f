package web_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// TestPatchThatChangesNothingEmitsNothing sends PATCHes that change nothing (an empty one, the
// name the user has): each answers 200 with the user and adds nothing to the log; the stream's
// first event is the one of the real rename that follows.
func TestPatchThatChangesNothingEmitsNothing(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	kim := s.browser(t)
	id := kim.register("kim").Account.ID
	before := getWatermark(t, s)
	watch := kim.stream(fmt.Sprintf("lastEventId=%d", before))
	sessionOf(t, watch.next())
	watch.expect("ready")
	path := fmt.Sprintf("/api/users/%d", id)
	for _, body := range []any{map[string]string{}, map[string]string{"name": "kim"}} {
		code, answer, _ := kim.do("PATCH", path, body)
		var u struct {
			ID   int64
			Name string
			Type string
		}
		if json.Unmarshal(answer, &u); code != 200 || u.ID != id || u.Name != "kim" || u.Type != "regular" {
			t.Fatalf("PATCH %v: got %d %s, want 200 and the user", body, code, answer)
		}
	}
	if w := getWatermark(t, s); w != before {
		t.Fatalf("PATCHes that change nothing moved the watermark from %d to %d", before, w)
	}
	if n := s.count(t, "SELECT count(*) FROM events WHERE type = 'user-update'"); n != 1 {
		t.Fatalf("got %d user-update events, want 1 (the registration's)", n)
	}
	if code, _, _ := kim.do("PATCH", path, map[string]string{"name": "kimberly"}); code != 200 {
		t.Fatalf("rename: got %d", code)
	}
	f := watch.expect("event")
	if f.ID != before+1 || !strings.Contains(string(f.Event), `"kimberly"`) {
		t.Fatalf("first event after the PATCHes: got %d %s, want %d, the rename", f.ID, f.Event, before+1)
	}
}
