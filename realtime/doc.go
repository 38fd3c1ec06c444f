// Package realtime delivers the event log to WebSocket streams.
//
// A Hub follows the log for one node: one LISTEN connection wakes it, it reads every event with
// an id above its head from the table (never from the notification), keeps the most recent ones
// in memory, encoded once for every socket, and wakes the streams. A Stream serves one socket.
//
// Guarantees, for every stream between its session frame and its close:
//   - each event the viewer may see, with id above the stream's start, is sent exactly once, in
//     increasing id order, with no gap: a stream is a cursor over one gapless log, fed from the
//     recent-events cache or, for older ids, from the table;
//   - a notification lost while the listener reconnects costs nothing: after every reconnect,
//     and on a slow periodic poll, the hub reads the table from its head;
//   - a dead database connection, even one black-holed without a reset, holds no read of the
//     hub for longer than HubConfig.ReadTimeout: the read fails, the next one takes a fresh
//     connection, and Stalled says so meanwhile;
//   - a slow socket never slows the others: when it falls more than MaxLag events behind while
//     live, or a write stalls for WriteTimeout, it is closed with 4004 and resumes from its last
//     id on reconnect; the hub never waits for a socket and holds no per-socket queue;
//   - a frame handed over at CloseAt (StreamOptions.FinalFrame: a bearer session's successor
//     token) is written by the stream's writer before its close frame, whatever close was asked
//     meanwhile;
//   - every goroutine a stream starts is joined before Serve returns.
package realtime
