package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
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

// TestPatchRateLimit renames one account as fast as it can: the first 10 pass, and one is
// refused with 429, Retry-After and a JSON error within as many more as seconds passed (the
// bucket refills 1 per second). Another account on the same address is not held.
func TestPatchRateLimit(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	ann := s.browser(t)
	id := ann.register("ann").Account.ID
	before := getWatermark(t, s)
	start := time.Now()
	passed := 0
	for i := range 40 {
		code, body, resp := ann.do("PATCH", fmt.Sprintf("/api/users/%d", id), map[string]string{"name": fmt.Sprint("ann", i)})
		if code == 200 {
			passed++
			continue
		}
		var e struct {
			Error struct{ Code, Message string }
		}
		json.Unmarshal(body, &e)
		if code != 429 || e.Error.Code != "rate-limited" || e.Error.Message == "" {
			t.Fatalf("PATCH %d: got %d %s, want 200 or 429 rate-limited", i+1, code, body)
		}
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s != 1 {
			t.Fatalf("Retry-After: got %q, want 1 (a token a second)", resp.Header.Get("Retry-After"))
		}
		break
	}
	refills := int(time.Since(start) / time.Second)
	if passed < 10 || passed > 10+refills {
		t.Fatalf("got %d renames before a 429 in %v, want 10 to %d", passed, time.Since(start), 10+refills)
	}
	if w := getWatermark(t, s); w != before+int64(passed) {
		t.Fatalf("watermark: got %d, want %d (one event per rename that passed)", w, before+int64(passed))
	}
	bob := s.browser(t)
	bobID := bob.register("bob").Account.ID
	if code, body, _ := bob.do("PATCH", fmt.Sprintf("/api/users/%d", bobID), map[string]string{"name": "robert"}); code != 200 {
		t.Fatalf("another account from the same address: got %d %s", code, body)
	}
}

// TestPatchAddressLimit renames four accounts in turn from one (non-loopback) client address,
// as fast as it can: the address's 30 pass, and one is refused with 429 within as many more as
// refills (3 per second) had time to add, while no account has spent its own 10.
func TestPatchAddressLimit(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	type account struct {
		id     int64
		cookie string
	}
	var accounts []account
	for _, name := range []string{"amy", "ben", "cat", "dan"} {
		b := s.browser(t)
		id := b.register(name).Account.ID
		accounts = append(accounts, account{id, b.cookie()})
	}
	host := strings.TrimPrefix(s.URL, "http://")
	if u, err := url.Parse(s.URL); err == nil {
		host = u.Host
	}
	start := time.Now()
	passed := 0
	for i := range 60 {
		a := accounts[i%len(accounts)]
		r := httptest.NewRequest("PATCH", fmt.Sprintf("/api/users/%d", a.id), strings.NewReader(fmt.Sprintf(`{"name":"u%d"}`, i)))
		r.RemoteAddr = "192.0.2.1:40000"
		r.Host = host
		r.Header.Set("Content-Type", "application/json")
		r.AddCookie(&http.Cookie{Name: "tidings-session", Value: a.cookie})
		w := httptest.NewRecorder()
		s.handler.ServeHTTP(w, r)
		if w.Code == 200 {
			passed++
			continue
		}
		if w.Code != 429 || !strings.Contains(w.Body.String(), `"rate-limited"`) || w.Header().Get("Retry-After") == "" {
			t.Fatalf("PATCH %d: got %d %s (Retry-After %q), want 200 or 429 rate-limited", i+1, w.Code, w.Body, w.Header().Get("Retry-After"))
		}
		break
	}
	refills := int(3 * time.Since(start).Seconds())
	if passed < 30 || passed > 30+refills {
		t.Fatalf("got %d renames from one address before a 429 in %v, want 30 to %d", passed, time.Since(start), 30+refills)
	}
	if passed/len(accounts)+1 >= 10 {
		t.Fatalf("%d renames over %d accounts: an account's own limit may have been met first", passed, len(accounts))
	}
}
