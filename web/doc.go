// Package web is tidings' HTTP face: the JSON API, the WebSocket upgrade with its origin check,
// and health endpoints. It decides who a request is and what it may do, and hands streams to
// realtime as plain values.
//
// A request's session is its bearer token (Authorization: Bearer, or on the stream's upgrade the
// tidings-bearer subprotocol, bearer.go) or else its cookie; CORS answers the other origins that
// TIDINGS_ALLOWED_ORIGINS lists (cors.go).
//
// Guarantees: every refusal is a JSON error {"error":{"code","message"}} with the status of
// docs/protocol.md; no request body larger than 1 MiB is read; a session token is never written to
// a log, an error body or the selected subprotocol; a stream's goroutines are all joined before
// Shutdown returns.
package web
