package web

import (
	"net"
	"net/http"
)

// clientAddr is the address of the client that sent r, for limits and logs: the host part of
// its RemoteAddr.
func (h *Handler) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
