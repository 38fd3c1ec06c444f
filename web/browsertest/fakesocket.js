// A fake WebSocket for the client's unit tests in node: it records what the client sends and
// lets a test deliver frames, raw messages and closes as the server would.

export class FakeSocket {
  /** Every socket made since the test reset it, the newest last. */
  static all = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.readyState = 1;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  send(s) {
    this.sent.push(JSON.parse(s));
  }
  close() {
    this.readyState = 3;
  }
  /** Delivers a message as it came off the wire. */
  raw(data) {
    this.onmessage({ data });
  }
  /** Delivers a frame. */
  frame(f) {
    this.raw(JSON.stringify(f));
  }
  /** Closes the socket from the server's side. */
  serverClose(code, reason = '') {
    this.readyState = 3;
    return this.onclose({ code, reason });
  }
}
