package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/julienschmidt/httprouter"

	"tidings/auth"
	"tidings/data"
)

// static holds the page: its modules, style sheet and icon, and its template; and the browser
// library the page is built on (client.go serves it to other apps too).
//
//go:embed static client/tidings.js
var static embed.FS

// pageMessages is how many message events the page embeds (docs/protocol.md section 6).
const pageMessages = 50

// contentSecurityPolicy allows only this origin's scripts, styles, images and connections
// (WebSockets to the same host included); the embedded state is JSON, never run.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// assetTypes are the files of web/static and web/client served under /static/VERSION/, with
// their content types.
var assetTypes = map[string]string{
	".js":  "text/javascript; charset=utf-8",
	".css": "text/css; charset=utf-8",
	".svg": "image/svg+xml",
}

// asset is one served file.
type asset struct {
	body []byte
	etag string
}

// site is the page template and the static files, read once at construction.
type site struct {
	tmpl    *template.Template
	files   map[string]asset // by path under web/: static/app.js, client/tidings.js
	version string           // a hash of every file: the path prefix that makes them immutable
}

func newSite() *site {
	s := &site{files: map[string]asset{}}
	sum := sha256.New()
	// The files keep their places under web/, so that the page's modules import the library
	// as ../client/tidings.js both in the source tree and under /static/VERSION/.
	err := fs.WalkDir(static, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := static.ReadFile(name)
		if err != nil {
			return err
		}
		sum.Write([]byte(name))
		sum.Write(b)
		if _, ok := assetTypes[path.Ext(name)]; ok {
			fileSum := sha256.Sum256(b)
			s.files[name] = asset{body: b, etag: `"` + hex.EncodeToString(fileSum[:8]) + `"`}
		}
		return nil
	})
	if err != nil {
		panic("web: read embedded static files: " + err.Error()) // the files are built in
	}
	s.version = hex.EncodeToString(sum.Sum(nil))[:12]
	s.tmpl = template.Must(template.New("page.html").Funcs(template.FuncMap{
		// The time of day in UTC, said to be UTC: the page's script shows it in the reader's own
		// time zone, from the datetime attribute beside it.
		"clock": func(t string) string { // "2026-01-02T15:04:05.000Z" -> "15:04 UTC"
			if len(t) >= 16 {
				return t[11:16] + " UTC"
			}
			return t
		},
	}).ParseFS(static, "static/page.html"))
	return s
}

// serveStatic serves a file of the page or the library, as /static/VERSION/static/app.js or
// /static/VERSION/client/tidings.js. Under the current version its answer never changes, so
// browsers may keep it for a year; under any other (a page from before a deploy), it is the
// current file and must be revalidated.
func (s *site) serveStatic(w http.ResponseWriter, r *http.Request, ps httprouter.Params) {
	name := strings.TrimPrefix(ps.ByName("file"), "/")
	a, ok := s.files[name]
	if !ok {
		writeError(w, errNotFound)
		return
	}
	h := w.Header()
	h.Set("Content-Type", assetTypes[path.Ext(name)])
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("ETag", a.etag)
	if ps.ByName("version") == s.version {
		h.Set("Cache-Control", "public, max-age=31536000, immutable")
	} else {
		h.Set("Cache-Control", "no-cache")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}

// pageState is the state the page embeds for the client (docs/protocol.md section 6).
type pageState struct {
	LastEventID int64          `json:"lastEventId"`
	Session     *ApiSession    `json:"session"`
	Notice      *string        `json:"notice"`
	Users       []auth.ApiUser `json:"users"`
	Messages    []pageEvent    `json:"messages"`
	Online      []int64        `json:"online"` // docs/protocol.md section 8; empty when anonymous
}

// pageEvent is an event as an event frame carries it: {"id":57,"event":{"type","data","time"}}.
type pageEvent struct {
	ID    int64     `json:"id"`
	Event wireEvent `json:"event"`
}

type wireEvent struct {
	Type string          `json:"type"`
	Data json.RawMessage `json:"data"`
	Time string          `json:"time"`
}

// pageMessage is a message as the template shows it.
type pageMessage struct {
	ID       int64
	UserName string
	Text     string
	Time     string
}

// pageUser is a row of the People list as the template shows it: the same markup as the
// client's (web/static/views.js), so that hydration changes nothing.
type pageUser struct {
	auth.ApiUser
	Online bool // in the state's online set
	Me     bool // the viewer's account
}

// pageUsers joins the state's users with its online set for the People list.
func pageUsers(state pageState, account *auth.ApiAccount) []pageUser {
	online := make(map[int64]bool, len(state.Online))
	for _, id := range state.Online {
		online[id] = true
	}
	rows := make([]pageUser, 0, len(state.Users))
	for _, u := range state.Users {
		rows = append(rows, pageUser{ApiUser: u, Online: online[u.ID], Me: account != nil && account.ID == u.ID})
	}
	return rows
}

// page renders GET /: the watermark first, then the session, then what that session may see,
// so that the stream the client opens from the watermark brings every change the reads missed.
func (h *Handler) page(s *site) httprouter.Handle {
	return func(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
		hdr := w.Header()
		hdr.Set("Cache-Control", "no-store")
		hdr.Set("Content-Security-Policy", contentSecurityPolicy)
		hdr.Set("X-Content-Type-Options", "nosniff")
		hdr.Set("Referrer-Policy", "same-origin")
		hdr.Set("X-Frame-Options", "DENY")

		state, err := h.pageState(w, r)
		if err != nil {
			h.log.Error("render page", "err", err)
			hdr.Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte("tidings is unavailable: the database does not answer. Try again in a moment.\n"))
			return
		}
		stateJSON, err := json.Marshal(state)
		if err != nil {
			h.log.Error("render page: encode state", "err", err)
			writeError(w, errInternal)
			return
		}
		// json.Marshal already writes <, > and & as \u003c, \u003e and \u0026 (and U+2028 and
		// U+2029 escaped), so no "</script>" or "<!--" can appear; HTMLEscape says so again for
		// the raw event data it copied.
		var safe bytes.Buffer
		json.HTMLEscape(&safe, stateJSON)

		messages := make([]pageMessage, 0, len(state.Messages))
		for _, m := range state.Messages {
			var d struct {
				UserName string `json:"userName"`
				Text     string `json:"text"`
			}
			json.Unmarshal(m.Event.Data, &d)
			messages = append(messages, pageMessage{ID: m.ID, UserName: d.UserName, Text: d.Text, Time: m.Event.Time})
		}
		var account *auth.ApiAccount
		if state.Session != nil {
			account = state.Session.Account
		}
		var out bytes.Buffer
		err = s.tmpl.Execute(&out, map[string]any{
			"Assets":   "/static/" + s.version + "/static/",
			"Client":   "/static/" + s.version + "/client/",
			"State":    template.JS(safe.String()), // JSON, already escaped for a script element
			"Account":  account,
			"Admin":    account != nil && account.Type == data.UserAdmin,
			"Notice":   state.Notice,
			"Users":    pageUsers(state, account),
			"Messages": messages,
		})
		if err != nil {
			h.log.Error("render page: template", "err", err)
			writeError(w, errInternal)
			return
		}
		hdr.Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		w.Write(out.Bytes())
	}
}

// pageForm answers a form of the page submitted before the page's scripts ran (a slow network,
// or none): every form posts to /, so that nothing typed, a password least of all, can reach a
// URL (a form without a method would send GET /?name=…&password=…). It reads none of the body
// and sends the browser back to the page, whose scripts then send what the person types.
func (h *Handler) pageForm(w http.ResponseWriter, r *http.Request, _ httprouter.Params) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "same-origin")
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// pageState reads the page's state in the order of docs/protocol.md section 6: the watermark, then
// the session (which may rotate the cookie), then the users and the messages it may see, which
// are never older than the watermark.
func (h *Handler) pageState(w http.ResponseWriter, r *http.Request) (pageState, error) {
	ctx := r.Context()
	mark, err := h.deps.Events.Watermark(ctx)
	if err != nil {
		return pageState{}, err
	}
	// The page is the bundled client's, on the server's own origin: its session is the cookie's.
	res, err := h.resolveAs(w, r, credential{token: h.token(r)})
	if err != nil {
		return pageState{}, err
	}
	body := newSessionBody(res)
	state := pageState{
		LastEventID: mark, Session: body.Session, Notice: body.Notice,
		Users: []auth.ApiUser{}, Messages: []pageEvent{}, Online: []int64{},
	}
	sess := res.Session
	if sess == nil {
		return state, nil
	}
	users, err := h.deps.Auth.Users(ctx)
	if err != nil {
		return pageState{}, err
	}
	state.Users = apiUsers(users)
	if state.Online, err = h.online(ctx); err != nil {
		return pageState{}, err
	}
	viewer := viewerOf(sess)
	// Messages up to the watermark: the stream, opened from it, brings every later one.
	evs, err := data.RecentEvents(ctx, h.deps.Pool, "message", mark, pageMessages, viewer.CanSee)
	if err != nil {
		return pageState{}, err
	}
	for _, e := range evs {
		state.Messages = append(state.Messages, pageEvent{ID: e.ID, Event: wireEvent{Type: e.Type, Data: e.Data, Time: wireTime(e.Time)}})
	}
	return state, nil
}
