package web

import (
	"net/http"
	"strings"
)

// CORS for apps served from another origin that TIDINGS_ALLOWED_ORIGINS lists (a web app on its
// own site, a desktop wrapper's app:// or tauri:// page): docs/protocol.md, "Cross-origin
// requests". The origin is echoed exactly, never "*"; an origin that is not allowed gets no CORS
// header at all, and keeps its 403 on mutations and on the stream's upgrade.
const (
	corsExposed = "Tidings-Session-Token, Retry-After"
	corsMethods = "GET, POST, PATCH, DELETE"
	corsHeaders = "Authorization, Content-Type"
	corsMaxAge  = "600"
)

// corsPath reports whether CORS applies to path: the API and the browser library.
func corsPath(path string) bool {
	return strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/client/")
}

// cors sets the CORS headers of r's response, and answers a preflight of an allowed origin
// itself: it reports true when it has answered.
func (h *Handler) cors(w http.ResponseWriter, r *http.Request) bool {
	if !corsPath(r.URL.Path) || !h.origins.listed() {
		return false
	}
	hdr := w.Header()
	// Responses differ by Origin whenever a list is configured: a cache must keep them apart,
	// the ones without CORS headers (same origin, or none) included.
	hdr.Add("Vary", "Origin")
	origin, ok := h.origins.crossOrigin(r)
	if !ok {
		return false
	}
	hdr.Set("Access-Control-Allow-Origin", origin)
	hdr.Set("Access-Control-Allow-Credentials", "true")
	hdr.Set("Access-Control-Expose-Headers", corsExposed)
	if r.Method != http.MethodOptions || !strings.HasPrefix(r.URL.Path, "/api/") {
		return false
	}
	hdr.Set("Access-Control-Allow-Methods", corsMethods)
	hdr.Set("Access-Control-Allow-Headers", corsHeaders)
	hdr.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
	return true
}
