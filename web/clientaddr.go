package web

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// clientAddr is the key of the request's client for every per-address limit: its IP address,
// or for IPv6 its /64 (a subscriber is usually given a whole /64, and can pick any address in
// it), such as "2001:db8:1:2::/64"; a loopback address stays whole, so that the key still says
// it is one. Behind a trusted proxy the address is the forwarded one (ClientIP).
func (h *Handler) clientAddr(r *http.Request) string {
	return addrKey(h.clientIP(r), r.RemoteAddr)
}

// clientIP is the full address of the request's client, for logs and the loopback rule.
func (h *Handler) clientIP(r *http.Request) netip.Addr {
	return ClientIP(r.RemoteAddr, r.Header, h.cfg.TrustedProxies)
}

// addrKey is clientAddr's key for the client address a of a request from remoteAddr.
func addrKey(a netip.Addr, remoteAddr string) string {
	switch {
	case a.Is6() && !a.IsLoopback():
		return netip.PrefixFrom(a, 64).Masked().String()
	case a.IsValid():
		return a.String()
	}
	return logAddr(a, remoteAddr)
}

// logAddr is how logs name the client address a of a request from remoteAddr: in full.
func logAddr(a netip.Addr, remoteAddr string) string {
	if a.IsValid() {
		return a.String()
	}
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// maxHops is how many forwarding hops ClientIP looks at, from the right: more trusted proxies
// in a row than this is a loop or a hostile header, and its left part is not read.
const maxHops = 32

// ClientIP returns the address of the client that sent a request with this remote address and
// header (docs/protocol.md section 5, TIDINGS_TRUSTED_PROXIES). It is the peer's address, unless
// the peer is in trusted: then it is the right-most hop of X-Forwarded-For (or, when the request
// has none, of Forwarded) that is not in trusted, since every hop to its right was written by a
// proxy of ours and every hop to its left may be the client's invention. When every hop is
// trusted it is the left-most; when a hop cannot be read (Forwarded's "unknown", an obfuscated
// name, garbage), the trusted proxy that wrote it could not name its client, and the answer is
// that proxy. The address is never zoned nor IPv4-mapped; it is invalid only when remoteAddr
// holds no IP address.
func ClientIP(remoteAddr string, header http.Header, trusted []netip.Prefix) netip.Addr {
	peer, ok := parseHop(remoteAddr)
	if !ok || !inPrefixes(peer, trusted) {
		return peer
	}
	var hops []string
	if xff := header.Values("X-Forwarded-For"); len(xff) > 0 {
		hops = lastHops(xff)
	} else if fwd := header.Values("Forwarded"); len(fwd) > 0 {
		hops = forwardedFor(fwd)
	}
	client := peer
	for i := len(hops) - 1; i >= 0; i-- {
		a, ok := parseHop(hops[i])
		if !ok {
			return client
		}
		client = a
		if !inPrefixes(a, trusted) {
			return a
		}
	}
	return client
}

// inPrefixes reports whether a lies in one of ps.
func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseHop reads one hop's address: "192.0.2.1", "192.0.2.1:80", "2001:db8::1",
// "[2001:db8::1]" or "[2001:db8::1]:80", with surrounding white space.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, perr := netip.ParseAddrPort(s)
		if perr != nil {
			if len(s) < 2 || s[0] != '[' || s[len(s)-1] != ']' {
				return netip.Addr{}, false
			}
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !a.Is6() {
				return netip.Addr{}, false
			}
		} else {
			a = ap.Addr()
		}
	}
	return a.Unmap().WithZone(""), true
}

// lastHops splits the values of X-Forwarded-For at their commas and returns the last maxHops
// hops, in order, without splitting what it does not return.
func lastHops(values []string) []string {
	var rev []string
	for i := len(values) - 1; i >= 0 && len(rev) < maxHops; i-- {
		v := values[i]
		for len(rev) < maxHops {
			j := strings.LastIndexByte(v, ',')
			rev = append(rev, v[j+1:])
			if j < 0 {
				break
			}
			v = v[:j]
		}
	}
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	return rev
}

// forwardedFor reads the "for" parameter of each element of the Forwarded header (RFC 7239)
// and returns the last maxHops of them, in order: "" for an element without one, and for what
// follows a syntax error, which cannot be told apart into hops.
func forwardedFor(values []string) []string {
	var hops []string
	keep := func(h string) {
		if len(hops) == 2*maxHops {
			hops = append(hops[:0], hops[maxHops:]...)
		}
		hops = append(hops, h)
	}
	for _, v := range values {
		for v != "" {
			elem, rest, ok := cutElement(v)
			if !ok {
				keep("")
				break
			}
			keep(forParam(elem))
			v = rest
		}
	}
	if len(hops) > maxHops {
		hops = hops[len(hops)-maxHops:]
	}
	return hops
}

// cutElement cuts s at its first comma outside a quoted string; ok is false when a quoted
// string does not end.
func cutElement(s string) (elem, rest string, ok bool) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == ',':
			return s[:i], s[i+1:], true
		}
	}
	return s, "", !quoted
}

// forParam returns the value of the "for" pair of one forwarded-element, unquoted, or "".
func forParam(elem string) string {
	for elem != "" {
		var pair string
		pair, elem = cutPair(elem)
		name, value, ok := strings.Cut(pair, "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "for") {
			continue
		}
		value = strings.TrimSpace(value)
		if len(value) >= 2 && value[0] == '"' && value[len(value)-1] == '"' {
			var b strings.Builder
			for i := 1; i < len(value)-1; i++ {
				if value[i] == '\\' && i+1 < len(value)-1 {
					i++
				}
				b.WriteByte(value[i])
			}
			return b.String()
		}
		return value
	}
	return ""
}

// cutPair cuts one forwarded-element at its first semicolon outside a quoted string.
func cutPair(s string) (pair, rest string) {
	quoted := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == ';':
			return s[:i], s[i+1:]
		}
	}
	return s, ""
}
