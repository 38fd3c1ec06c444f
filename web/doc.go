// Package web is tidings' HTTP face: the JSON API, the WebSocket upgrade with its origin check,
// and health endpoints. It decides who a request is and what it may do, and hands streams to
// realtime as plain values.
//
// Guarantees: every refusal is a JSON error {"error":{"code","message"}} with the status of
// PROTOCOL.md; no request body larger than 1 MiB is read; a stream's goroutines are all joined
// before Shutdown returns.
package web
