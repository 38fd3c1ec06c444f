package web

import (
	"bufio"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"
	"unicode/utf8"
)

// maxLoggedPath bounds the path an access line carries: a stranger chooses it.
const maxLoggedPath = 512

// AccessLog logs one line through log, at Info, for every request once next has answered it
// (docs/protocol.md section 5, TIDINGS_ACCESS_LOG): method, path (never the query string,
// which may carry secrets; at most 512 bytes), status, bytes of the body, duration, the request
// id (the answer's X-Request-Id, which the handler sets) and the client address (ClientIP with
// trusted, as the per-address limits see it). A stream's line says 101 and the time its
// upgrade took, when the upgrade is done.
func AccessLog(next http.Handler, log *slog.Logger, trusted []netip.Prefix) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &recorder{ResponseWriter: w}
		defer func() {
			path := r.URL.Path
			if len(path) > maxLoggedPath {
				cut := maxLoggedPath // at a character's first byte, not in the middle of one
				for cut > maxLoggedPath-utf8.UTFMax && !utf8.RuneStart(path[cut]) {
					cut--
				}
				path = path[:cut] + "…"
			}
			status := rec.status
			if status == 0 {
				status = http.StatusOK // nothing written: net/http answers 200
			}
			log.LogAttrs(r.Context(), slog.LevelInfo, "request",
				slog.String("method", r.Method),
				slog.String("path", path),
				slog.Int("status", status),
				slog.Int64("bytes", rec.bytes),
				slog.Float64("durationMs", float64(time.Since(start).Microseconds())/1000),
				slog.String("requestId", w.Header().Get("X-Request-Id")),
				slog.String("client", logAddr(ClientIP(r.RemoteAddr, r.Header, trusted), r.RemoteAddr)),
			)
		}()
		next.ServeHTTP(rec, r)
	})
}

// recorder is a ResponseWriter that notes the status and counts the body's bytes. It can be
// hijacked (the stream's upgrade), and Unwrap lets http.ResponseController reach the
// connection (deadlines, flushes).
type recorder struct {
	http.ResponseWriter
	status int   // the first final status (or 101) written; 0: none yet
	bytes  int64 // of the body
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Hijack hands over the connection, as the stream's upgrade asks.
func (r *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(r.ResponseWriter).Hijack()
}

// Flush sends what is buffered.
func (r *recorder) Flush() { http.NewResponseController(r.ResponseWriter).Flush() }

// Unwrap returns the ResponseWriter underneath, for http.ResponseController.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }
