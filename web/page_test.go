package web_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"tidings/auth"
	"tidings/data"
)

// pageState is the state GET / embeds (docs/protocol.md section 6), decoded strictly enough that a
// null where an array belongs shows.
type pageState struct {
	LastEventID int64           `json:"lastEventId"`
	Session     *apiSession     `json:"session"`
	Notice      *string         `json:"notice"`
	Users       json.RawMessage `json:"users"`
	Messages    json.RawMessage `json:"messages"`
	Online      json.RawMessage `json:"online"`
}

type pageUser struct {
	ID   int64  `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}

type pageMessage struct {
	ID    int64 `json:"id"`
	Event struct {
		Type string `json:"type"`
		Data struct {
			UserID   int64  `json:"userId"`
			UserName string `json:"userName"`
			Text     string `json:"text"`
		} `json:"data"`
		Time string `json:"time"`
	} `json:"event"`
}

func (p pageState) users(t *testing.T) []pageUser {
	t.Helper()
	var u []pageUser
	if err := json.Unmarshal(p.Users, &u); err != nil || u == nil {
		t.Fatalf("users: got %s, want an array", p.Users)
	}
	return u
}

func (p pageState) messages(t *testing.T) []pageMessage {
	t.Helper()
	var m []pageMessage
	if err := json.Unmarshal(p.Messages, &m); err != nil || m == nil {
		t.Fatalf("messages: got %s, want an array", p.Messages)
	}
	return m
}

var stateElement = regexp.MustCompile(`(?s)<script type="application/json" id="tidings-state">(.*?)</script>`)

// page fetches GET / and returns its embedded state, its HTML and the response.
func (b *browser) page() (pageState, string, *http.Response) {
	b.t.Helper()
	resp, err := b.client.Get(b.s.URL + "/")
	if err != nil {
		b.t.Fatalf("GET /: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	html := string(body)
	if resp.StatusCode != 200 {
		b.t.Fatalf("GET /: got %d %s", resp.StatusCode, body)
	}
	m := stateElement.FindStringSubmatch(html)
	if m == nil {
		b.t.Fatalf("GET /: no state element in\n%s", html)
	}
	var st pageState
	if err := json.Unmarshal([]byte(m[1]), &st); err != nil {
		b.t.Fatalf("state %s: %v", m[1], err)
	}
	return st, html, resp
}

func TestPageAnonymous(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	s.publishN(t, 3, "note")
	s.browser(t).register("alice") // a user-update that an anonymous page must not show
	b := s.browser(t)
	st, html, resp := b.page()
	if got := resp.Header.Get("Content-Type"); got != "text/html; charset=utf-8" {
		t.Errorf("Content-Type: got %q", got)
	}
	for h, want := range map[string]string{
		"Cache-Control":           "no-store",
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "script-src 'self'",
	} {
		if got := resp.Header.Get(h); !strings.Contains(got, want) {
			t.Errorf("%s: got %q, want it to contain %q", h, got, want)
		}
	}
	mark, _ := s.events.Watermark(context.Background())
	if st.LastEventID != mark || st.Session != nil || st.Notice != nil {
		t.Fatalf("state: got %+v, want lastEventId %d and no session", st, mark)
	}
	if string(st.Users) != "[]" || string(st.Messages) != "[]" {
		t.Fatalf("anonymous: got users %s and messages %s, want [] and []", st.Users, st.Messages)
	}
	if !strings.Contains(html, `<form id="sign-in"`) || strings.Contains(html, "alice") {
		t.Fatalf("anonymous page: want the sign-in form and no user names:\n%s", html)
	}
}

// message is a message event as the server stores one.
func message(userID int64, name, text string, aud data.Audience) data.NewEvent {
	d, _ := json.Marshal(map[string]any{"userId": userID, "userName": name, "text": text})
	return data.NewEvent{Type: "message", Data: d, Audience: aud}
}

func TestPageSignedInLast50MessagesOldestFirst(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	alice := s.browser(t)
	a := alice.register("alice")
	bob := s.browser(t).register("bob")
	signedIn := data.Audience{Kind: data.AudienceSignedIn}
	var want []int64
	for i := range 60 {
		want = append(want, s.publish(t, message(a.Account.ID, "alice", fmt.Sprintf("m%d", i), signedIn))[0])
		// Between them: events of other types, and messages alice may not see (more than
		// the page reads at once, so that it reads on past them).
		forBob := message(bob.Account.ID, "bob", "for bob only", data.Audience{Kind: data.AudienceUser, UserID: bob.Account.ID})
		s.publish(t, data.NewEvent{Type: "note", Data: json.RawMessage(`{}`)}, forBob, forBob, forBob,
			message(0, "ops", "for admins", data.Audience{Kind: data.AudienceMinType, Type: data.UserAdmin}))
	}
	want = want[len(want)-50:]

	st, html, _ := alice.page()
	mark, _ := s.events.Watermark(context.Background())
	if st.LastEventID != mark || st.Session == nil || st.Session.Account == nil || st.Session.Account.Name != "alice" || st.Notice != nil {
		t.Fatalf("state: got %+v, want alice's session at watermark %d", st, mark)
	}
	users := st.users(t)
	if len(users) != 2 || users[0] != (pageUser{a.Account.ID, "alice", "regular"}) || users[1] != (pageUser{bob.Account.ID, "bob", "regular"}) {
		t.Fatalf("users: got %+v", users)
	}
	msgs := st.messages(t)
	if len(msgs) != 50 {
		t.Fatalf("got %d messages, want 50", len(msgs))
	}
	for i, m := range msgs {
		if m.ID != want[i] || m.Event.Type != "message" || m.Event.Data.Text != fmt.Sprintf("m%d", i+10) ||
			m.Event.Data.UserName != "alice" || m.Event.Data.UserID != a.Account.ID {
			t.Fatalf("message %d: got %+v, want id %d text m%d", i, m, want[i], i+10)
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z", m.Event.Time); err != nil {
			t.Fatalf("message %d: time %q is not RFC 3339 UTC with milliseconds", i, m.Event.Time)
		}
	}
	// The exact shape of one, as an event frame carries it.
	var raw struct {
		Messages []map[string]json.RawMessage `json:"messages"`
	}
	m := stateElement.FindStringSubmatch(html)
	json.Unmarshal([]byte(m[1]), &raw)
	var ev map[string]json.RawMessage
	json.Unmarshal(raw.Messages[0]["event"], &ev)
	if len(raw.Messages[0]) != 2 || len(ev) != 3 || ev["type"] == nil || ev["data"] == nil || ev["time"] == nil {
		t.Fatalf("message shape: got %s, want {\"id\",\"event\":{\"type\",\"data\",\"time\"}}", m[1][:200])
	}
	// The server-rendered feed shows the same messages.
	if !strings.Contains(html, ">m59<") || strings.Contains(html, ">m9<") || strings.Contains(html, "for bob only") {
		t.Fatalf("rendered feed: want m10..m59 and nothing for others")
	}
}

func TestPageStateIsEscaped(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	alice := s.browser(t)
	a := alice.register("alice")
	evil := "</script><script>alert(1)</script><!-- & \u2028 \u2029 ' \" </SCRIPT >"
	s.publish(t, message(a.Account.ID, "alice", evil, data.Audience{Kind: data.AudienceSignedIn}))
	st, html, _ := alice.page()
	if msgs := st.messages(t); len(msgs) != 1 || msgs[0].Event.Data.Text != evil {
		t.Fatalf("messages: got %+v, want the text back intact", msgs)
	}
	m := stateElement.FindStringSubmatch(html)
	for _, bad := range []string{"<", ">", "&", "\u2028", "\u2029"} {
		if strings.Contains(m[1], bad) {
			t.Errorf("the state element holds a raw %q: %s", bad, m[1])
		}
	}
	if strings.Count(strings.ToLower(html), "<script") != 2 || strings.Contains(html, "<script>alert") {
		t.Fatalf("the page has other script elements than its own:\n%s", html)
	}
}

// TestPageReadsWatermarkFirst: while users are created and messages published, every event at
// or below a page's lastEventId is reflected in what it embeds. Reading the entities before the
// watermark would miss the changes committed in between and still claim them.
func TestPageReadsWatermarkFirst(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	viewer := s.browser(t)
	viewer.register("viewer")
	ctx := context.Background()
	signedIn := data.Audience{Kind: data.AudienceSignedIn}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.auth.CreateUser(ctx, fmt.Sprintf("u%d", i), "password-x", data.UserRegular); err != nil {
				t.Errorf("create user: %v", err)
				return
			}
		}
	})
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := data.NewPublisher(s.pool, data.PublisherConfig{}).Publish(ctx, []data.NewEvent{message(0, "x", fmt.Sprint(i), signedIn)}); err != nil {
				t.Errorf("publish: %v", err)
				return
			}
		}
	})
	var pages []pageState
	for range 40 {
		st, _, _ := viewer.page()
		pages = append(pages, st)
	}
	close(stop)
	wg.Wait()

	all, err := s.events.After(ctx, 0, 1_000_000)
	if err != nil {
		t.Fatal(err)
	}
	for n, st := range pages {
		have := map[string]bool{}
		for _, u := range st.users(t) {
			have[u.Name] = true
		}
		var wantMsgs []int64
		for _, e := range all {
			if e.ID > st.LastEventID {
				break
			}
			switch e.Type {
			case "user-update":
				var u pageUser
				json.Unmarshal(e.Data, &u)
				if !have[u.Name] {
					t.Fatalf("page %d at lastEventId %d lacks user %q of event %d", n, st.LastEventID, u.Name, e.ID)
				}
			case "message":
				wantMsgs = append(wantMsgs, e.ID)
			}
		}
		wantMsgs = wantMsgs[max(0, len(wantMsgs)-50):]
		msgs := st.messages(t)
		if len(msgs) != len(wantMsgs) {
			t.Fatalf("page %d at %d: got %d messages, want %d", n, st.LastEventID, len(msgs), len(wantMsgs))
		}
		for i, m := range msgs {
			if m.ID != wantMsgs[i] {
				t.Fatalf("page %d at %d: message %d is event %d, want %d", n, st.LastEventID, i, m.ID, wantMsgs[i])
			}
		}
	}
	if first, last := pages[0].LastEventID, pages[len(pages)-1].LastEventID; first == last {
		t.Fatalf("the watermark never moved (%d): nothing was tested", first)
	}
}

func TestPageRotatesTheCookie(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 300 * time.Millisecond, Grace: 5 * time.Second}})
	b := s.browser(t)
	first := b.register("hank")
	old := b.cookie()
	var st pageState
	var resp *http.Response
	waitFor(t, "rotation", func() bool {
		st, _, resp = b.page()
		return b.cookie() != old
	})
	if !strings.Contains(resp.Header.Get("Set-Cookie"), "tidings-session=") {
		t.Fatalf("the page that rotated set no cookie")
	}
	if st.Session == nil || st.Session.ID == first.ID || st.Session.Account.Name != "hank" {
		t.Fatalf("after rotation: got %+v, want hank's successor session", st.Session)
	}
	if a := b.session(); a.Session == nil || a.Session.ID != st.Session.ID {
		t.Fatalf("the page's session %d is not the cookie's %+v", st.Session.ID, a.Session)
	}
}

func TestPageTellsOfATakenSession(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{auth: auth.Config{Rotate: 500 * time.Millisecond, Grace: 200 * time.Millisecond}})
	real := s.browser(t)
	real.register("ivy")
	stolen := real.cookie()
	taker := s.browser(t)
	taker.setCookie(stolen)
	waitFor(t, "the taker rotates", func() bool {
		taker.session()
		return taker.cookie() != stolen
	})
	taker.session() // presents the successor
	var st pageState
	var html string
	waitFor(t, "grace over", func() bool {
		st, html, _ = real.page()
		return st.Session == nil
	})
	if st.Notice == nil || *st.Notice != "session-taken" || string(st.Users) != "[]" || string(st.Messages) != "[]" {
		t.Fatalf("the real user's page: got %+v, want notice session-taken and empty arrays", st)
	}
	if !strings.Contains(html, "Your session was taken") || real.cookie() != "" {
		t.Fatalf("the page shows no banner, or the cookie %q was kept", real.cookie())
	}
}

func TestStaticFiles(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	_, html, _ := s.browser(t).page()
	m := regexp.MustCompile(`src="(/static/([0-9a-f]+)/static/app\.js)"`).FindStringSubmatch(html)
	if m == nil {
		t.Fatalf("no module script in the page:\n%s", html)
	}
	get := func(path string, header http.Header) (*http.Response, string) {
		t.Helper()
		resp, b := getPath(t, s, path, header)
		return resp, string(b)
	}
	resp, body := get(m[1], nil)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/javascript; charset=utf-8" ||
		!strings.Contains(resp.Header.Get("Cache-Control"), "immutable") || !strings.Contains(body, "import") {
		t.Fatalf("app.js: got %d %v", resp.StatusCode, resp.Header)
	}
	if r, _ := get(m[1], http.Header{"If-None-Match": {resp.Header.Get("ETag")}}); r.StatusCode != 304 {
		t.Errorf("revalidation: got %d, want 304", r.StatusCode)
	}
	if r, _ := get("/static/0000/static/app.css", nil); r.StatusCode != 200 || r.Header.Get("Cache-Control") != "no-cache" ||
		r.Header.Get("Content-Type") != "text/css; charset=utf-8" {
		t.Errorf("another version: got %d %v, want the current file, revalidated", r.StatusCode, r.Header)
	}
	for _, p := range []string{"/static/" + m[2] + "/static/page.html", "/static/" + m[2] + "/static/nope.js",
		"/static/" + m[2] + "/static/../page.go", "/static/" + m[2] + "/app.js", "/static/" + m[2] + "/client/tidings.d.ts",
		"/static/" + m[2] + "/client/package.json"} {
		if r, _ := get(p, nil); r.StatusCode != 404 {
			t.Errorf("%s: got %d, want 404", p, r.StatusCode)
		}
	}
}

// TestPageFormsPostToThePage checks that no form of the page can put what it holds in a URL:
// each posts to /, which answers a form sent before the scripts ran with 303 back to the page,
// without a session; a form from another origin is refused.
func TestPageFormsPostToThePage(t *testing.T) {
	t.Parallel()
	s := newServer(t, serverOptions{})
	anonymous := s.browser(t)
	_, html, _ := anonymous.page()
	signedIn := s.browser(t)
	signedIn.register("alice")
	_, html2, _ := signedIn.page()
	forms := regexp.MustCompile(`<form [^>]*>`).FindAllString(html+html2, -1)
	if len(forms) != 4 {
		t.Fatalf("got %d forms, want sign-in, register, composer and rename: %q", len(forms), forms)
	}
	for _, f := range forms {
		if !strings.Contains(f, ` method="post" action="/"`) {
			t.Errorf("%s: want method=\"post\" action=\"/\"", f)
		}
	}

	noRedirect := &http.Client{Jar: anonymous.jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	post := func(origin string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("POST", s.URL+"/", strings.NewReader("name=alice&password=password-alice"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("POST /: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := post(s.URL)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("POST / from the page: got %d to %q, want 303 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
	if got := anonymous.session(); got.Session != nil {
		t.Fatalf("POST / signed in: got %+v, want no session", got.Session)
	}
	if resp := post("http://elsewhere.example"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST / from another origin: got %d, want 403", resp.StatusCode)
	}
}
