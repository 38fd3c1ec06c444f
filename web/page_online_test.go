package web_test

import (
	"encoding/json"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	"tidings/realtime"
)

// The People list of GET / shows who is online (docs/protocol.md section 8) from the embedded
// online set, with the client's markup (web/static/views.js), so that hydration, which renders
// the same set, changes nothing on the screen.

// userRow matches a rendered row of the People list: its id, data-online, and the words a
// screen reader hears.
var userRow = regexp.MustCompile(`<li class="user" data-id="(\d+)" data-type="[a-z]+" data-online="(true|false)">` +
	`<span class="online-dot" aria-hidden="true"></span><span class="name">([^<]*)</span>` +
	`<span class="online-label visually-hidden">(online|offline)</span> `)

// renderedRow is one row of the People list as the server rendered it.
type renderedRow struct {
	ID     int64
	Name   string
	Online string // data-online
	Label  string // the hidden word
}

func renderedRows(t *testing.T, html string) []renderedRow {
	t.Helper()
	var rows []renderedRow
	for _, m := range userRow.FindAllStringSubmatch(html, -1) {
		id, _ := strconv.ParseInt(m[1], 10, 64)
		rows = append(rows, renderedRow{ID: id, Online: m[2], Name: m[3], Label: m[4]})
	}
	return rows
}

// online decodes the state's online set, failing unless it is an array (never null).
func (p pageState) online(t *testing.T) []int64 {
	t.Helper()
	var ids []int64
	if err := json.Unmarshal(p.Online, &ids); err != nil || ids == nil {
		t.Fatalf("online: got %s, want an array", p.Online)
	}
	return ids
}

func TestPageRendersWhoIsOnline(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{presence: &realtime.PresenceConfig{FlushEvery: 10 * time.Millisecond}})
	alice := s.browser(t)
	a := alice.register("alice")
	c := s.browser(t).register("carol") // never opens a stream: offline
	bob := s.browser(t)
	b := bob.register("bob")

	check := func(html string, online []int64) {
		t.Helper()
		rows := renderedRows(t, html)
		if len(rows) != 3 {
			t.Fatalf("got %d rendered rows %+v, want 3 (alice, carol, bob):\n%s", len(rows), rows, html)
		}
		for _, r := range rows {
			on := slices.Contains(online, r.ID)
			wantLabel := map[bool]string{true: "online", false: "offline"}[on]
			if r.Online != strconv.FormatBool(on) || r.Label != wantLabel {
				t.Fatalf("row %+v: want data-online %t and %q, as the embedded online %v says", r, on, wantLabel, online)
			}
		}
	}

	// Nobody streams: an empty array, every row offline.
	st, html, _ := bob.page()
	if string(st.Online) != "[]" {
		t.Fatalf("nobody online: got %s, want []", st.Online)
	}
	check(html, nil)

	// alice opens a stream: bob's page shows her online, and carol and bob (no stream) offline.
	alice.stream("").readOn()
	var online []int64
	waitFor(t, "alice online in bob's page", func() bool {
		st, html, _ = bob.page()
		online = st.online(t)
		return slices.Contains(online, a.Account.ID)
	})
	if slices.Contains(online, c.Account.ID) || slices.Contains(online, b.Account.ID) {
		t.Fatalf("online %v: carol (%d) and bob (%d) have no stream", online, c.Account.ID, b.Account.ID)
	}
	check(html, online)
	if !regexp.MustCompile(`data-online="true"><span class="online-dot" aria-hidden="true"></span><span class="name">alice</span>`).MatchString(html) {
		t.Fatalf("alice's row is not rendered online:\n%s", html)
	}

	// An anonymous page says nobody, and lists nobody, while alice is online.
	if st, html, _ := s.browser(t).page(); string(st.Online) != "[]" || len(renderedRows(t, html)) != 0 {
		t.Fatalf("anonymous page: online %s and rows %+v, want [] and none", st.Online, renderedRows(t, html))
	}
}
