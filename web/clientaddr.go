package web

import (
	"net"
	"net/http"
)

// clientAddr is the address of the client that sent r, the key of the per-address limits:
// the host part of the connection's remote address.
func (h *Handler) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
