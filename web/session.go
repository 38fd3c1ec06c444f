package web

import (
	"encoding/json"
	"net/http"
	"time"

	"tidings/auth"
	"tidings/data"
	"tidings/realtime"
)

// Cookie names (docs/protocol.md section 4): the __Host- prefix binds the cookie to this host over
// https; development mode on plain http uses the plain name.
const (
	cookieName    = "__Host-tidings-session"
	devCookieName = "tidings-session"
)

// deviceCookieName is the device cookie's (docs/protocol.md section 4.1), in every mode: the
// protocol names it so. Secure outside development, like the session cookie.
const deviceCookieName = "tidings-device"

// ApiSession is a session as the wire carries it: never its token.
type ApiSession struct {
	ID        int64            `json:"id"`
	Account   *auth.ApiAccount `json:"account"`
	RotatesAt string           `json:"rotatesAt"`
	ExpiresAt string           `json:"expiresAt"`
}

// newApiSession is the wire form of s, or nil.
func newApiSession(s *auth.ServerSession) *ApiSession {
	if s == nil {
		return nil
	}
	account := auth.NewApiUser(s.Account)
	return &ApiSession{ID: s.ID, Account: &account, RotatesAt: wireTime(s.RotatesAt), ExpiresAt: wireTime(s.ExpiresAt)}
}

func wireTime(t time.Time) string { return string(realtime.AppendTime(nil, t)) }

// sessionBody is the answer of GET /api/session, and the session frame's fields.
type sessionBody struct {
	Session *ApiSession `json:"session"`
	Notice  *string     `json:"notice"`
}

func newSessionBody(res auth.Resolution) sessionBody {
	b := sessionBody{Session: newApiSession(res.Session)}
	if res.Notice != "" {
		b.Notice = &res.Notice
	}
	return b
}

// sessionFrame encodes the first frame of a stream.
func sessionFrame(res auth.Resolution) []byte {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		sessionBody
	}{"session", newSessionBody(res)})
	return b
}

func (h *Handler) cookieName() string {
	if h.cfg.Dev {
		return devCookieName
	}
	return cookieName
}

// token reads the session cookie of r.
func (h *Handler) token(r *http.Request) auth.Token { return readCookie(r, h.cookieName()) }

// setCookie sends the cookie of a session token that lives until expires.
func (h *Handler) setCookie(w http.ResponseWriter, token auth.Token, expires time.Time) {
	h.writeCookie(w, h.cookieName(), token, expires)
}

// clearCookie tells the browser to forget the session cookie.
func (h *Handler) clearCookie(w http.ResponseWriter) {
	h.writeCookie(w, h.cookieName(), "", time.Time{})
}

// deviceToken reads the device cookie of r.
func (h *Handler) deviceToken(r *http.Request) auth.Token { return readCookie(r, deviceCookieName) }

// setDeviceCookie sends the device cookie, which lives until expires; logout keeps it.
func (h *Handler) setDeviceCookie(w http.ResponseWriter, token auth.Token, expires time.Time) {
	h.writeCookie(w, deviceCookieName, token, expires)
}

// readCookie returns the value of r's cookie called name, or "".
func readCookie(r *http.Request, name string) auth.Token {
	c, err := r.Cookie(name)
	if err != nil {
		return ""
	}
	return auth.Token(c.Value)
}

// writeCookie sends a cookie of tidings: HttpOnly, SameSite=Lax, Path=/, Secure outside
// development. An empty token clears it; otherwise it lives until expires.
func (h *Handler) writeCookie(w http.ResponseWriter, name string, token auth.Token, expires time.Time) {
	c := &http.Cookie{
		Name: name, Value: string(token), Path: "/",
		HttpOnly: true, Secure: !h.cfg.Dev, SameSite: http.SameSiteLaxMode,
	}
	if token == "" {
		c.MaxAge = -1
	} else {
		c.Expires = expires.UTC()
	}
	http.SetCookie(w, c)
}

// resolve reads the session of an API request (its bearer token, else its cookie), rotating it
// when due, and hands the client what the resolution asks (handOver).
func (h *Handler) resolve(w http.ResponseWriter, r *http.Request) (auth.Resolution, error) {
	cred, err := h.credential(r, false)
	if err != nil {
		return auth.Resolution{}, err
	}
	return h.resolveAs(w, r, cred)
}

// resolveAs resolves cred's session and hands the client what the resolution asks.
func (h *Handler) resolveAs(w http.ResponseWriter, r *http.Request, cred credential) (auth.Resolution, error) {
	if cred.token == "" {
		return auth.Resolution{}, nil
	}
	res, err := h.deps.Auth.Resolve(r.Context(), cred.token)
	if err != nil {
		return res, err
	}
	h.handOver(w, cred, res)
	return res, nil
}

// handOver sets or clears the session's token in the response as res asks: the cookie, or for
// a bearer token the Tidings-Session-Token header (the successor, or empty: forget the token).
func (h *Handler) handOver(w http.ResponseWriter, cred credential, res auth.Resolution) {
	switch {
	case res.NewToken != "" && cred.bearer:
		w.Header().Set(TokenHeader, string(res.NewToken))
	case res.NewToken != "":
		h.setCookie(w, res.NewToken, res.Session.ExpiresAt)
	case res.ClearCookie && cred.bearer:
		w.Header()[TokenHeader] = []string{""}
	case res.ClearCookie:
		h.clearCookie(w)
	}
}

// viewerOf is what a session may see: the audience rules of realtime decide with it.
func viewerOf(s *auth.ServerSession) realtime.Viewer {
	return realtime.Viewer{SessionID: s.ID, UserID: s.Account.ID, Type: s.Account.Type}
}

// apiUsers is users as the API shows them.
func apiUsers(users []data.User) []auth.ApiUser {
	out := make([]auth.ApiUser, len(users))
	for i, u := range users {
		out[i] = auth.NewApiUser(u)
	}
	return out
}
