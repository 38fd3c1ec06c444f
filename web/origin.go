package web

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
)

// origins decides which Origin headers are allowed (docs/protocol.md section 2).
type origins struct {
	allowed map[string]bool // normalized "scheme://host[:port]" of http(s) origins
	exact   map[string]bool // other origins ("tauri://localhost"), exactly as listed
}

// newOrigins keeps the entries of list that CheckOrigin accepts; the others can match no
// request. An empty list (or one without a valid entry) allows the request's own origin only.
func newOrigins(list []string) origins {
	o := origins{allowed: map[string]bool{}, exact: map[string]bool{}}
	for _, s := range list {
		s = strings.TrimSpace(s)
		if CheckOrigin(s) != nil {
			continue
		}
		if n, ok := normalizeOrigin(s); ok {
			o.allowed[n] = true
		} else {
			o.exact[s] = true
		}
	}
	return o
}

// listed reports whether a list of origins replaces the default (the request's own origin).
func (o origins) listed() bool { return len(o.allowed) > 0 || len(o.exact) > 0 }

// allow reports whether r's Origin, when present, is allowed: one of the configured origins, or
// by default the request's own (its Host, over https when it came over TLS).
func (o origins) allow(r *http.Request) bool {
	values := r.Header.Values("Origin")
	if len(values) == 0 {
		return true // not a browser
	}
	_, ok := o.match(r, values)
	return ok
}

// match reports whether the Origin values of r (one or more, present) are one allowed origin,
// and whether that origin is another than the request's own (a listed origin of an app served
// elsewhere: CORS applies to it).
func (o origins) match(r *http.Request, values []string) (other, ok bool) {
	if len(values) != 1 {
		return false, false
	}
	got, ok := normalizeOrigin(values[0])
	if !ok {
		// Not http(s): allowed only when listed exactly as sent ("null" never is).
		return true, o.exact[values[0]]
	}
	own, ownOK := ownOrigin(r)
	if o.listed() {
		return !ownOK || got != own, o.allowed[got]
	}
	return false, ownOK && got == own
}

// crossOrigin returns r's Origin as sent when it is allowed and is not the request's own: the
// origin that CORS headers name.
func (o origins) crossOrigin(r *http.Request) (string, bool) {
	values := r.Header.Values("Origin")
	if len(values) == 0 || !o.listed() {
		return "", false
	}
	other, ok := o.match(r, values)
	if !ok || !other {
		return "", false
	}
	return values[0], true
}

// ownOrigin is the request's own origin, normalized: its Host, with https when it came over TLS.
func ownOrigin(r *http.Request) (string, bool) {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return normalizeOrigin(scheme + "://" + r.Host)
}

// normalizeOrigin returns scheme://host[:port] in lower case without a default port, or false
// for anything that is not an http(s) origin ("null" included).
func normalizeOrigin(s string) (string, bool) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
		u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", false
	}
	host := strings.ToLower(u.Host)
	if (u.Scheme == "http" && strings.HasSuffix(host, ":80")) || (u.Scheme == "https" && strings.HasSuffix(host, ":443")) {
		host = host[:strings.LastIndexByte(host, ':')]
	}
	return u.Scheme + "://" + host, true
}

// errOriginEntry says what an entry of TIDINGS_ALLOWED_ORIGINS must look like.
var errOriginEntry = errors.New("want scheme://host[:port], such as https://app.example or tauri://localhost")

// CheckOrigin reports whether s may be listed as an allowed origin: an http(s) origin
// (compared with the request's Origin case-insensitively, default ports dropped), or an origin
// of another scheme as a desktop wrapper sends it (app://main, tauri://localhost), which is
// matched exactly as written. "null", "*", a path, a query, a user or white space never are.
func CheckOrigin(s string) error {
	if _, ok := normalizeOrigin(s); ok {
		return nil
	}
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || scheme == "" || rest == "" || scheme == "http" || scheme == "https" {
		return errOriginEntry
	}
	for i := 0; i < len(scheme); i++ {
		c := scheme[i]
		letter := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if !letter && (i == 0 || !(c >= '0' && c <= '9' || c == '+' || c == '-' || c == '.')) {
			return errOriginEntry
		}
	}
	for i := 0; i < len(rest); i++ {
		c := rest[i]
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`/?#@\,*"`, c) >= 0 {
			return errOriginEntry
		}
	}
	return nil
}
