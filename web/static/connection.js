// @ts-check
// The connection manager: one event stream at a time, resumed from the last id it saw, with
// the close-code rules of PROTOCOL.md section 2 and exponential backoff with full jitter.

export const subprotocol = 'tidings.v1';

/**
 * @typedef {'connecting'|'live'|'reconnecting'|'offline'} ConnState
 * @typedef {{retryIn?: number, reason?: string, fatal?: boolean}} ConnDetail
 * @typedef {{type: string, [k: string]: any}} Frame
 * @typedef {{
 *   url: (lastEventId: number) => string,
 *   lastEventId: number,
 *   onFrame: (frame: Frame) => void,
 *   onState?: (state: ConnState, detail: ConnDetail) => void,
 *   onSessionLost?: (code: number, reason: string) => Promise<void>,
 *   WebSocket?: any,
 *   random?: () => number,
 *   setTimeout?: (fn: () => void, ms: number) => any,
 *   clearTimeout?: (t: any) => void,
 *   baseDelay?: number,
 *   maxDelay?: number,
 *   publishTimeout?: number,
 * }} ConnectionOptions
 */

/** A publish that the server refused, or that got no answer. */
export class PublishError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export class Connection {
  /** @param {ConnectionOptions} o */
  constructor(o) {
    this.url = o.url;
    /** The id of the last event seen: a reconnect resumes after it. */
    this.lastEventId = o.lastEventId;
    this.onFrame = o.onFrame;
    this.onState = o.onState ?? (() => {});
    this.onSessionLost = o.onSessionLost ?? (async () => {});
    this.WebSocket = o.WebSocket ?? globalThis.WebSocket;
    this.random = o.random ?? Math.random;
    this.setTimeout = o.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this.clearTimeout = o.clearTimeout ?? ((t) => globalThis.clearTimeout(t));
    this.baseDelay = o.baseDelay ?? 250;
    this.maxDelay = o.maxDelay ?? 10000;
    this.publishTimeout = o.publishTimeout ?? 10000;

    /** @type {ConnState} */ this.state = 'offline';
    /** @type {any} */ this.ws = null;
    /** @type {any} */ this.timer = null;
    this.stopped = true;
    this.everLive = false;
    /** Closes since the last ready frame: the backoff's exponent. */
    this.failures = 0;
    this.refs = 0;
    this.signalRefs = 0;
    /** @type {Map<string, {resolve: (id: number) => void, reject: (e: Error) => void, timer: any}>} */
    this.pending = new Map();
  }

  /** Opens the stream, unless it is open or opening. */
  start() {
    this.stopped = false;
    if (!this.ws && this.timer === null) this.#open();
  }

  /** Drops the current stream and opens a new one from lastEventId (a new page state). @param {number} lastEventId */
  restart(lastEventId) {
    this.#drop('restart');
    this.lastEventId = lastEventId;
    this.failures = 0;
    this.stopped = false;
    this.#open();
  }

  /** Closes the stream and stays offline until start. @param {string} [reason] */
  stop(reason) {
    this.stopped = true;
    this.#drop(reason ?? 'stopped');
    this.#setState('offline', { reason });
  }

  /** Skips a pending backoff (the browser came back online, or the person asked). */
  reconnectNow() {
    if (this.stopped || this.ws) return;
    this.#open();
  }

  /**
   * Sends a publish frame and resolves with the id of the stored event, or rejects with a
   * PublishError: the server's code, "offline" (no open stream), "timeout", or "disconnected"
   * (the stream closed before the answer: the event may or may not have been stored).
   * @param {{type: string, data: any}} event
   * @returns {Promise<number>}
   */
  publish(event) {
    return new Promise((resolve, reject) => {
      const ws = this.ws;
      if (!ws || ws.readyState !== 1) {
        reject(new PublishError('offline', 'not connected; try again when live'));
        return;
      }
      const ref = `r${++this.refs}`;
      const timer = this.setTimeout(() => {
        if (this.pending.delete(ref)) reject(new PublishError('timeout', 'the server did not answer'));
      }, this.publishTimeout);
      this.pending.set(ref, { resolve, reject, timer });
      ws.send(JSON.stringify({ type: 'publish', ref, event }));
    });
  }

  /**
   * Sends an ephemeral signal (PROTOCOL.md section 8), best effort: success is silent, and a
   * refusal (rate-limited, say) is dropped without a word. Returns whether it was sent.
   * @param {{type: string, data: any}} signal
   * @returns {boolean}
   */
  signal(signal) {
    const ws = this.ws;
    if (!ws || ws.readyState !== 1 || this.state !== 'live') return false;
    ws.send(JSON.stringify({ type: 'signal', ref: `s${++this.signalRefs}`, signal }));
    return true;
  }

  #open() {
    this.timer = null;
    const ws = new this.WebSocket(this.url(this.lastEventId), [subprotocol]);
    this.ws = ws;
    this.#setState(this.everLive ? 'reconnecting' : 'connecting', {});
    ws.onmessage = (/** @type {{data: any}} */ m) => {
      if (this.ws !== ws) return;
      let f;
      try {
        f = JSON.parse(m.data);
      } catch {
        return;
      }
      this.#frame(f);
    };
    ws.onclose = (/** @type {{code: number, reason: string}} */ e) => {
      if (this.ws !== ws) return; // a stream we dropped on purpose
      this.ws = null;
      this.#closed(e.code, e.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  /** @param {any} f */
  #frame(f) {
    // Anything but an object with a type is no frame; types not known here go on to onFrame,
    // which ignores those it does not know either (PROTOCOL.md section 2).
    if (f === null || typeof f !== 'object' || Array.isArray(f) || typeof f.type !== 'string') return;
    switch (f.type) {
      case 'event':
        if (typeof f.id !== 'number' || f.id <= this.lastEventId) return; // seen already
        this.lastEventId = f.id;
        this.onFrame(f);
        return;
      case 'reset':
        this.lastEventId = f.lastEventId;
        this.onFrame(f);
        return;
      case 'ready':
        this.lastEventId = Math.max(this.lastEventId, f.lastEventId);
        this.failures = 0;
        this.everLive = true;
        this.#setState('live', {});
        return;
      case 'ack':
      case 'error': {
        if (typeof f.ref === 'string' && /^s\d+$/.test(f.ref)) return; // a refused signal: best effort
        const p = f.ref === null ? undefined : this.pending.get(f.ref);
        if (!p) {
          this.onFrame(f);
          return;
        }
        this.pending.delete(f.ref);
        this.clearTimeout(p.timer);
        if (f.type === 'ack') p.resolve(f.id);
        else p.reject(new PublishError(f.code, f.message));
        return;
      }
      default:
        this.onFrame(f);
    }
  }

  /** @param {number} code @param {string} reason */
  async #closed(code, reason) {
    this.#failPending();
    if (this.stopped) return;
    this.failures++;
    switch (code) {
      case 1000: // normal: nothing to do
        this.stop('closed');
        return;
      case 1008: // policy violation
      case 1009: // message too big
        this.stopped = true;
        this.#setState('offline', { reason: `the server refused this client (${code}${reason ? ` ${reason}` : ''})`, fatal: true });
        return;
      case 4002: // session rotated: the upgrade carries the new cookie
        this.#retry(this.failures <= 1 ? 0 : this.#backoff());
        return;
      case 4001: // session expired
      case 4003: // logout, access-changed, user-deleted, session-taken
        this.#setState('reconnecting', { reason });
        try {
          await this.onSessionLost(code, reason);
        } catch {
          this.#retry(this.#backoff()); // could not ask: the network or the server is down
          return;
        }
        if (this.stopped || this.ws || this.timer !== null) return; // restarted meanwhile
        this.#retry(this.failures <= 1 ? 0 : this.#backoff());
        return;
      case 4004: // too slow: a short pause, then resume
        this.#retry(250 + this.random() * 750);
        return;
      default: // 1001 going away, 1011 internal error, 1006 no connection, ...
        this.#retry(this.#backoff());
    }
  }

  /** Full jitter: a random delay up to base * 2^failures, capped. @returns {number} */
  #backoff() {
    const ceiling = Math.min(this.maxDelay, this.baseDelay * 2 ** Math.min(this.failures, 30));
    return this.random() * ceiling;
  }

  /** @param {number} ms */
  #retry(ms) {
    if (this.stopped) return;
    this.#setState('reconnecting', { retryIn: ms });
    this.timer = this.setTimeout(() => this.#open(), ms);
  }

  /** @param {string} why */
  #drop(why) {
    if (this.timer !== null) this.clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      try {
        ws.close(1000, why.slice(0, 100));
      } catch {
        // already closing
      }
    }
    this.#failPending();
  }

  #failPending() {
    for (const [ref, p] of this.pending) {
      this.clearTimeout(p.timer);
      p.reject(new PublishError('disconnected', 'the connection closed before the server answered; it may have been sent'));
      this.pending.delete(ref);
    }
  }

  /** @param {ConnState} state @param {ConnDetail} detail */
  #setState(state, detail) {
    this.state = state;
    this.onState(state, detail);
  }
}
