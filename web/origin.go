package web

import (
	"net/http"
	"net/url"
	"strings"
)

// origins decides which Origin headers are allowed (PROTOCOL.md section 2).
type origins struct {
	allowed map[string]bool // normalized "scheme://host[:port]"; empty: the request's own origin
}

func newOrigins(list []string) origins {
	o := origins{allowed: map[string]bool{}}
	for _, s := range list {
		if n, ok := normalizeOrigin(strings.TrimSpace(s)); ok {
			o.allowed[n] = true
		}
	}
	return o
}

// allow reports whether r's Origin, when present, is allowed: one of the configured origins, or
// by default the request's own (its Host, over https when it came over TLS).
func (o origins) allow(r *http.Request) bool {
	values := r.Header.Values("Origin")
	if len(values) == 0 {
		return true // not a browser
	}
	if len(values) > 1 {
		return false
	}
	got, ok := normalizeOrigin(values[0])
	if !ok {
		return false
	}
	if len(o.allowed) > 0 {
		return o.allowed[got]
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	own, ok := normalizeOrigin(scheme + "://" + r.Host)
	return ok && got == own
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
