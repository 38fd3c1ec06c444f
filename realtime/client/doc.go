// Package client is the Go client of a tidings stream: it connects with a cookie jar, follows
// the log from a last event id, reconnects with exponential backoff and full jitter, resumes
// where it left off, applies the close codes of the protocol, and publishes with acks.
//
// A resilient stream in a few lines:
//
//	c := client.New(client.Config{URL: "http://127.0.0.1:8080"})
//	go c.Run(ctx)
//	for ev := range c.Events() {
//		if ev.Reset {
//			refetch() // events were lost: fetch the state again; events after ev.ID follow
//			continue
//		}
//		fmt.Println(ev.ID, ev.Type, string(ev.Data))
//	}
//
// Example, in example_test.go, is the same program in full: it runs against a real server, stops
// by cancelling ctx (Run then closes Events), and go test checks its output. ExampleClient_Publish
// signs in through Config.HTTPClient's cookie jar and publishes over the stream.
//
// A program that keeps the session's token itself, such as a desktop wrapper on an origin of
// its own, uses a bearer session (docs/protocol.md, "Bearer sessions"): Login or Register gives
// the token, Config.Token hands it to the client, which sends it as Authorization: Bearer on
// every upgrade and on Do, Session and Logout, and Config.OnToken receives each successor the
// server hands over, to be kept in its place. ExampleLogin is such a program.
//
// Events arrive exactly once, in id order, across reconnects: the client resumes from the last
// id it delivered. A reset (the server pruned what the client missed, or the client is ahead
// of the log) arrives through Events too, in its place among the events, as an Event with
// Reset set: the events before it are those the caller's state was built from, which it
// fetches again; the events after it follow the reset's ID.
//
// Run retries what is temporary: a network failure, a refused dial, and an upgrade answered
// 408, 429 (too-many-streams) or 5xx, after the backoff and any Retry-After; it ends when ctx
// does. An upgrade refused with another 4xx (403 forbidden-origin, 404) ends it with an
// *UpgradeError.
//
// A signed-in stream also receives presence and signals (docs/protocol.md section 8), which are
// not events: Config.OnPresence has the whole set of online users after each (re)connection,
// Config.OnPresenceChange each change after it, Config.OnSignal each signal. Client.Signal
// sends one and reports the server's refusal, if any. Frames of types the client does not
// know are ignored, whatever they hold.
package client
