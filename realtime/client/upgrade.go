package client

import (
	"io"
	"net/http"
	"strconv"
	"time"
)

// UpgradeError is the server's answer to a stream's upgrade (GET /api/events) when it was not
// the upgrade: its status, and the error body's code and message and the Retry-After it gave,
// if any (docs/protocol.md, section 2). Run retries a temporary one (Temporary) with backoff,
// and returns any other. errors.As finds its APIError too.
type UpgradeError struct {
	APIError
}

func (e *UpgradeError) Error() string { return "tidings: stream upgrade refused: " + e.statusText() }

// Unwrap returns the refusal as an *APIError.
func (e *UpgradeError) Unwrap() error { return &e.APIError }

// Temporary reports whether waiting can fix the refusal, so that Run tries again: 408, 429
// (too-many-streams: the session or the address holds too many streams on the node, or a
// proxy's own limit), every 5xx (a node starting, stopping or overloaded, a proxy with no node
// behind it), and a status that is no error at all (something other than tidings answered).
// Every other 4xx is final, as retrying the same request changes nothing: 400 (the request is
// wrong), 401, 403 (forbidden-origin: Config.Header's Origin is not allowed), 404 (no tidings
// at Config.URL), 405, 410 and the like.
func (e *UpgradeError) Temporary() bool {
	switch s := e.Status; {
	case s == http.StatusRequestTimeout, s == http.StatusTooManyRequests:
		return true
	case s >= 400 && s < 500:
		return false
	}
	return true
}

// upgradeRefused reads the answer to an upgrade that was not the upgrade. The websocket
// library has already read at most 1 KiB of its body and closed it.
func upgradeRefused(resp *http.Response) *UpgradeError {
	var body []byte
	if resp.Body != nil {
		body, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		resp.Body.Close()
	}
	return &UpgradeError{*apiError(resp, body)}
}

// maxRetryAfter is the longest Retry-After the client waits: a server (or a proxy) that asks
// for an hour or a year gets tried again after this, like any long outage.
const maxRetryAfter = 5 * time.Minute

// retryAfter reads a Retry-After header: delay-seconds, or an HTTP date (relative to now), at
// most maxRetryAfter; 0 when it is absent, invalid or past.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseInt(v, 10, 32); err == nil {
		return min(time.Duration(max(s, 0))*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}
