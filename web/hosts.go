package web

import (
	"net/http"
	"net/netip"
	"strings"
)

// hostKey is one allowed Host: a name, and a port or "" for any port.
type hostKey struct{ name, port string }

// hosts decides which Host headers are answered (docs/protocol.md section 5,
// TIDINGS_ALLOWED_HOSTS).
type hosts struct {
	allowed  map[hostKey]bool // set at construction; empty: see loopback
	loopback bool             // with allowed empty: only loopback names; else any Host
}

func newHosts(list []string, loopbackListener bool) hosts {
	hs := hosts{allowed: map[hostKey]bool{}, loopback: loopbackListener}
	for _, s := range list {
		if s = strings.TrimSpace(s); s != "" {
			name, port := splitHost(s)
			hs.allowed[hostKey{name, port}] = true
		}
	}
	return hs
}

// allow reports whether the node answers a request for host (r.Host). A request without a
// Host (HTTP/1.0) is answered: DNS rebinding needs a browser, and browsers always send one.
func (hs hosts) allow(host string) bool {
	if host == "" {
		return true
	}
	name, port := splitHost(host)
	if len(hs.allowed) > 0 {
		return hs.allowed[hostKey{name, ""}] || (port != "" && hs.allowed[hostKey{name, port}])
	}
	if !hs.loopback {
		return true
	}
	if name == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(name)
	return err == nil && a.IsLoopback()
}

// splitHost splits a Host value into its name, in lower case without a trailing dot and with
// an IP address in its canonical form (IPv6 without brackets), and its port ("" when none).
func splitHost(h string) (name, port string) {
	h = strings.ToLower(h)
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return h, ""
		}
		name, port = h[1:end], strings.TrimPrefix(h[end+1:], ":")
	} else if i := strings.LastIndexByte(h, ':'); i >= 0 && strings.IndexByte(h, ':') == i {
		name, port = h[:i], h[i+1:]
	} else {
		name = h
	}
	name = strings.TrimSuffix(name, ".")
	if a, err := netip.ParseAddr(name); err == nil {
		name = a.Unmap().String()
	}
	return name, port
}

// RestrictHosts answers 421 misdirected-request, before anything else, to a request whose
// Host is not one of allowed ("name" for any port, or "name:port"); with allowed empty it lets
// any Host through, except that on a loopback listener only loopback names are answered
// (localhost, 127.0.0.0/8, [::1], any port). This stops DNS rebinding: a page of another site
// whose name was pointed at this address.
func RestrictHosts(next http.Handler, allowed []string, loopbackListener bool) http.Handler {
	hs := newHosts(allowed, loopbackListener)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hs.allow(r.Host) {
			writeError(w, errMisdirected)
			return
		}
		next.ServeHTTP(w, r)
	})
}
