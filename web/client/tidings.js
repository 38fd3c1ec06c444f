// @ts-check
// tidings-client: the browser library of tidings. One ES module without dependencies; its
// declarations are tidings.d.ts beside it, its guide docs/clients.md.
// SPDX-License-Identifier: AGPL-3.0-only
//
// A Tidings client holds one event stream (docs/protocol.md section 2): it opens it after the
// last event id it was given, hands the replay, then `ready`, then live events to the app, each
// event exactly once and in id order, and after every close resumes from the last event it
// handed over, as the close-code table says (backoff with full jitter). Publishes are promises
// of the event id; each carries an idempotency key, so one that was in flight when the stream
// dropped is sent again after the reconnect and stored once. Its HTTP helpers speak the JSON
// API with the same session: the cookie, or a bearer token that it keeps current.

/** Subprotocols offered on a cookie (or anonymous) stream: the name docs/protocol.md gives, and the one of bearer streams. */
const cookieProtocols = ['tidings.v1', 'tidings'];
/** Offered on a bearer stream, followed by the token (the token is never in the URL). */
const bearerProtocol = 'tidings-bearer.';
/** How many publishes a stream has unanswered at most: the server refuses more (docs/protocol.md). */
export const maxInFlight = 8;
/** An idempotency key as the server takes it. */
const keyPattern = /^[A-Za-z0-9\-._~:+/=]{1,255}$/;
/** A bearer token: base64url without padding, so that it is a valid subprotocol name. */
const tokenPattern = /^[A-Za-z0-9_-]+$/;

/**
 * A refusal: an HTTP error ({"error":{"code","message"}} with its status), a network failure
 * (code "network", status 0), or a publish that was refused or could not be sent.
 */
export class TidingsError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{status?: number, key?: string|null, sent?: boolean}} [more]
   */
  constructor(code, message, more = {}) {
    super(message);
    this.name = 'TidingsError';
    this.code = code;
    /** The HTTP status, or 0 when there was no HTTP answer. */
    this.status = more.status ?? 0;
    /** A publish's idempotency key: publishing again with it stores the event at most once. */
    this.key = more.key ?? null;
    /** Whether a publish reached the server, so that it may have been stored. */
    this.sent = more.sent ?? false;
  }
}

/** @param {any} v @returns {boolean} */
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
/** @param {any} id @returns {boolean} */
const isUserId = (id) => Number.isSafeInteger(id) && id > 0;
/** @param {any} s @returns {number|null} */
const accountOf = (s) => (isObject(s) && isObject(s.account) && isUserId(s.account.id) ? s.account.id : null);

/** A fresh idempotency key: 128 random bits in hex. */
function newKey() {
  const bytes = new Uint8Array(16);
  if (globalThis.crypto?.getRandomValues) globalThis.crypto.getRandomValues(bytes);
  else for (let i = 0; i < bytes.length; i++) bytes[i] = Math.floor(Math.random() * 256);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** Hands an error thrown by a listener to the page (an uncaught error), without stopping the client. @param {unknown} err */
function report(err) {
  queueMicrotask(() => {
    throw err;
  });
}

/**
 * @typedef {{event: {type: string, data?: unknown}, key: string, resolve: (id: number) => void,
 *   reject: (e: Error) => void, timer: any, sent: boolean}} Publish
 */

export class Tidings {
  // Set at construction.
  #base;
  #fetch;
  #WebSocket;
  #random;
  #setTimeout;
  #clearTimeout;
  #baseDelay;
  #maxDelay;
  #publishTimeout;
  #publishQueue;
  #credentials;
  #bearer;
  #onToken;

  // The session as the client knows it.
  /** @type {string|null} */ #token;
  /** @type {any} undefined: not known yet */ #session;

  // The stream.
  /** @type {number|null} the last event handed over; null: start live */ #lastEventId;
  /** @type {import('./tidings.js').ConnectionState} */ #state = 'offline';
  /** @type {any} */ #ws = null;
  /** @type {string|null} the token the stream was opened with */ #wsToken = null;
  /** @type {any} a pending reconnect */ #timer = null;
  #stopped = true;
  #everLive = false;
  /** Closes since the last ready frame: the backoff's exponent. */
  #failures = 0;
  /** Whether the current stream has said ready: a token frame before it is the upgrade's rotation. */
  #streamReady = false;
  #refs = 0;
  #signalRefs = 0;
  #watching = false;

  // Publishes: those sent on the current stream and not answered, by ref; those waiting.
  /** @type {Map<string, Publish>} */ #inFlight = new Map();
  /** @type {Publish[]} */ #queue = [];

  /** @type {Map<string, Set<Function>>} */ #listeners = new Map();

  /** @param {import('./tidings.js').TidingsOptions} [o] */
  constructor(o = {}) {
    const base = o.baseUrl ?? globalThis.location?.origin;
    if (!base) throw new TypeError('tidings: baseUrl is required outside a page');
    const u = new URL(base);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new TypeError(`tidings: baseUrl ${base} is not http(s)`);
    this.#base = `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
    this.#fetch = o.fetch ?? ((/** @type {any} */ url, /** @type {any} */ init) => globalThis.fetch(url, init));
    this.#WebSocket = o.WebSocket ?? null;
    this.#random = o.random ?? Math.random;
    this.#setTimeout = o.setTimeout ?? ((/** @type {() => void} */ fn, /** @type {number} */ ms) => globalThis.setTimeout(fn, ms));
    this.#clearTimeout = o.clearTimeout ?? ((/** @type {any} */ t) => globalThis.clearTimeout(t));
    this.#baseDelay = o.backoff?.base ?? 250;
    this.#maxDelay = o.backoff?.max ?? 10_000;
    this.#publishTimeout = o.publishTimeout ?? 30_000;
    this.#publishQueue = o.publishQueue ?? 16;
    this.#credentials = o.credentials ?? 'include';
    this.#onToken = o.onToken ?? null;
    this.#token = null;
    if (o.token !== undefined && o.token !== null) this.#token = checkToken(o.token);
    this.#bearer = o.bearer ?? this.#token !== null;
    this.#session = o.session;
    this.#lastEventId = o.lastEventId ?? null;
  }

  /** The connection's state: connecting, live (after ready), reconnecting, offline. */
  get state() {
    return this.#state;
  }

  /** The id of the last event handed to the app (or of the last ready or reset): a reconnect resumes after it. */
  get lastEventId() {
    return this.#lastEventId;
  }

  /** The session as last told by the stream or GET /api/session; undefined until then. */
  get session() {
    return this.#session;
  }

  /** The signed-in account of that session, or null. */
  get account() {
    return this.#session?.account ?? null;
  }

  /** The bearer token, or null (a cookie session, or none). */
  get token() {
    return this.#token;
  }

  /**
   * Listens for what the stream says; returns a function that stops listening.
   * @param {string} type @param {Function} fn @returns {() => void}
   */
  on(type, fn) {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, (set = new Set()));
    set.add(fn);
    return () => void set.delete(fn);
  }

  /** @param {string} type @param {...any} args */
  #emit(type, ...args) {
    const set = this.#listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        report(err);
      }
    }
  }

  // The stream.

  /** Opens the stream (after lastEventId, when given), unless it is open or opening. @param {number|null} [lastEventId] */
  connect(lastEventId) {
    if (this.#stopped && lastEventId !== undefined) this.#lastEventId = lastEventId;
    this.#stopped = false;
    this.#watch(true);
    if (!this.#ws && this.#timer === null) this.#open();
  }

  /**
   * Drops the stream and opens a new one after lastEventId (the app took a new snapshot), or
   * after the last event handed over. Publishes not answered yet are refused ("closed").
   * @param {number|null} [lastEventId]
   */
  restart(lastEventId) {
    this.#drop('restart');
    this.#failPublishes('closed', 'the stream was restarted before the server answered');
    if (lastEventId !== undefined) this.#lastEventId = lastEventId;
    this.#failures = 0;
    this.#stopped = false;
    this.#watch(true);
    this.#open();
  }

  /** Closes the stream and stays offline until connect; publishes not answered are refused ("closed"). */
  disconnect() {
    this.#stopped = true;
    this.#watch(false);
    this.#drop('disconnect');
    this.#failPublishes('closed', 'the client was disconnected before the server answered');
    this.#setState('offline', {});
  }

  /** Skips a pending backoff (the network is back, or the person asked). */
  reconnectNow() {
    if (this.#stopped || this.#ws) return;
    if (this.#timer !== null) this.#clearTimeout(this.#timer);
    this.#open();
  }

  #onOnline = () => this.reconnectNow();

  /**
   * The browser lost the network: the stream is dead or soon will be, though its close may be
   * minutes away. Drop it now, keep what was in flight to send again, and open a new one when
   * the network is back (the online event), or after the longest backoff.
   */
  #onOffline = () => {
    if (this.#stopped) return;
    this.#drop('offline');
    this.#requeue();
    this.#retry(this.#maxDelay, { offline: true });
  };

  /** @param {boolean} on */
  #watch(on) {
    if (on === this.#watching || typeof globalThis.addEventListener !== 'function') return;
    this.#watching = on;
    const change = on ? globalThis.addEventListener : globalThis.removeEventListener;
    change.call(globalThis, 'online', this.#onOnline);
    change.call(globalThis, 'offline', this.#onOffline);
  }

  #open() {
    this.#timer = null;
    const url = new URL(`${this.#base}/api/events`);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (this.#lastEventId !== null) url.search = `lastEventId=${this.#lastEventId}`;
    const token = this.#token;
    const WS = this.#WebSocket ?? globalThis.WebSocket;
    const ws = new WS(url.href, token ? ['tidings', bearerProtocol + token] : cookieProtocols);
    this.#ws = ws;
    this.#wsToken = token;
    this.#streamReady = false;
    this.#setState(this.#everLive ? 'reconnecting' : 'connecting', {});
    ws.onmessage = (/** @type {{data: any}} */ m) => {
      if (this.#ws !== ws) return;
      let f;
      try {
        f = JSON.parse(m.data);
      } catch {
        return;
      }
      this.#frame(f);
    };
    ws.onclose = (/** @type {{code: number, reason: string}} */ e) => {
      if (this.#ws !== ws) return; // a stream dropped on purpose
      this.#ws = null;
      this.#closed(e.code, e.reason);
    };
    ws.onerror = () => {}; // a close event follows
  }

  /** @param {any} f */
  #frame(f) {
    // Anything but an object with a type is no frame; frame types not known here are ignored
    // (docs/protocol.md section 2), after the "frame" listeners saw them.
    if (!isObject(f) || typeof f.type !== 'string') return;
    this.#emit('frame', f);
    switch (f.type) {
      case 'session':
        this.#sessionFrame(f);
        return;
      case 'event':
        if (!Number.isSafeInteger(f.id) || (this.#lastEventId !== null && f.id <= this.#lastEventId)) return; // seen already
        this.#lastEventId = f.id;
        if (isObject(f.event) && typeof f.event.type === 'string') this.#emit('event', { id: f.id, event: f.event });
        return;
      case 'reset':
        if (!Number.isSafeInteger(f.lastEventId) || f.lastEventId < 0) return;
        this.#lastEventId = f.lastEventId;
        this.#emit('reset', { lastEventId: f.lastEventId });
        return;
      case 'ready':
        if (Number.isSafeInteger(f.lastEventId)) this.#lastEventId = Math.max(this.#lastEventId ?? 0, f.lastEventId);
        this.#failures = 0;
        this.#streamReady = true;
        this.#everLive = true;
        this.#setState('live', {});
        this.#emit('ready', { lastEventId: this.#lastEventId });
        this.#flush();
        return;
      case 'ack':
      case 'error':
        this.#answer(f);
        return;
      case 'presence':
        if (Array.isArray(f.online)) this.#emit('presence', { online: f.online.filter(isUserId) });
        return;
      case 'presence-change':
        if (isUserId(f.userId) && typeof f.online === 'boolean') this.#emit('presence-change', { userId: f.userId, online: f.online });
        return;
      case 'signal':
        if (isUserId(f.from) && isObject(f.signal) && typeof f.signal.type === 'string') {
          this.#emit('signal', { from: f.from, signal: { type: f.signal.type, data: f.signal.data ?? {} } });
        }
        return;
      case 'token':
        // Only a bearer stream is sent one: the successor of its token, stored before the 4002
        // (after ready), or, right after the session frame, that of the upgrade's own rotation,
        // which the client presents at once (docs/protocol.md section 4.4) now that it holds it.
        if (this.#wsToken === null || typeof f.token !== 'string' || !tokenPattern.test(f.token)) return;
        this.#setToken(f.token);
        if (!this.#streamReady) this.fetchSession().catch(() => {});
    }
  }

  /** @param {any} f */
  #sessionFrame(f) {
    const next = isObject(f.session) ? f.session : null;
    const notice = typeof f.notice === 'string' ? f.notice : null;
    const prev = this.#session;
    this.#session = next;
    this.#forgetDead(this.#wsToken, next);
    if (prev !== undefined && accountOf(prev) !== accountOf(next)) {
      // Publishes waiting from the stream of another account must not go out as this one.
      this.#failPublishes('closed', 'the session changed before it was sent');
    }
    this.#emit('session', { session: next, notice, source: 'stream' });
    const account = accountOf(next);
    if (account !== null && account === accountOf(prev) && prev.id !== next.id && this.#wsToken === null) {
      // The upgrade rotated the session: present its successor (the cookie of the 101) at once
      // (docs/protocol.md section 4.4), so that a stolen copy of the old one reveals the theft.
      // A bearer stream's successor comes in the token frame that follows: presented there, for
      // a request now would carry the old token.
      this.fetchSession().catch(() => {});
    }
  }

  /** An ack or error frame: the answer to one of this client's publishes, or to a signal. @param {any} f */
  #answer(f) {
    if (typeof f.ref !== 'string') return; // an answer to no frame of ours (invalid-frame)
    if (f.ref.startsWith('s')) return; // a refused signal: best effort, dropped
    const p = this.#inFlight.get(f.ref);
    if (!p) return;
    this.#inFlight.delete(f.ref);
    this.#clearTimeout(p.timer);
    if (f.type === 'ack' && Number.isSafeInteger(f.id)) p.resolve(f.id);
    else {
      const code = typeof f.code === 'string' ? f.code : 'invalid-answer';
      p.reject(new TidingsError(code, typeof f.message === 'string' ? f.message : code, { key: p.key, sent: true }));
    }
    this.#flush();
  }

  /** @param {number} code @param {string} reason */
  async #closed(code, reason) {
    if (this.#stopped) return;
    this.#failures++;
    const detail = { code, reason };
    switch (code) {
      case 1000: // normal: nothing to do
        this.#stop({ ...detail });
        return;
      case 1008: // policy violation: fix the client
      case 1009: // message too big
        this.#stop({ ...detail, fatal: true });
        return;
      case 4002: // the session rotated: reconnect now, with the successor
        this.#requeue();
        this.#retry(this.#failures <= 1 ? 0 : this.#backoff(), detail);
        return;
      case 4001: // the session expired
      case 4003: // logout, access-changed, user-deleted, session-taken
        this.#failPublishes('closed', `the session ended (${reason || code}) before the server answered`);
        this.#setState('reconnecting', detail);
        try {
          await this.fetchSession({ closeCode: code, closeReason: reason });
        } catch {
          this.#retry(this.#backoff(), detail); // the network or the server is down: the stream says it later
          return;
        }
        if (this.#stopped || this.#ws || this.#timer !== null) return; // restarted meanwhile
        this.#retry(this.#failures <= 1 ? 0 : this.#backoff(), detail);
        return;
      case 4004: // too slow: a short pause, then resume
        this.#requeue();
        this.#retry(250 + this.#random() * 750, detail);
        return;
      default: // 1001 going away, 1011 internal error, 1006 no connection, ...
        this.#requeue();
        this.#retry(this.#backoff(), detail);
    }
  }

  /** Full jitter: a random delay up to base * 2^failures, capped. */
  #backoff() {
    return this.#random() * Math.min(this.#maxDelay, this.#baseDelay * 2 ** Math.min(this.#failures, 30));
  }

  /** @param {number} ms @param {import('./tidings.js').StateDetail} detail */
  #retry(ms, detail) {
    if (this.#stopped) return;
    this.#setState('reconnecting', { ...detail, retryIn: ms });
    this.#timer = this.#setTimeout(() => this.#open(), ms);
  }

  /** A final close: offline until connect. @param {import('./tidings.js').StateDetail} detail */
  #stop(detail) {
    this.#stopped = true;
    this.#watch(false);
    this.#failPublishes('closed', `the stream was closed (${detail.code}) before the server answered`);
    this.#setState('offline', detail);
  }

  /** @param {string} why */
  #drop(why) {
    if (this.#timer !== null) this.#clearTimeout(this.#timer);
    this.#timer = null;
    const ws = this.#ws;
    this.#ws = null;
    if (ws) {
      try {
        ws.close(1000, why);
      } catch {
        // already closing
      }
    }
  }

  /** @param {import('./tidings.js').ConnectionState} state @param {import('./tidings.js').StateDetail} detail */
  #setState(state, detail) {
    this.#state = state;
    this.#emit('state', state, detail);
  }

  // Publishing.

  /**
   * Publishes an event; resolves with its id once stored, rejects with a TidingsError.
   * @param {{type: string, data?: unknown}} event
   * @param {{key?: string}} [options]
   * @returns {Promise<number>}
   */
  publish(event, options = {}) {
    if (!isObject(event) || typeof event.type !== 'string') return Promise.reject(new TypeError('tidings: publish needs {type, data}'));
    const key = options.key ?? newKey();
    if (typeof key !== 'string' || !keyPattern.test(key)) return Promise.reject(new TypeError('tidings: a key is 1 to 255 of A-Z a-z 0-9 - . _ ~ : + / ='));
    return new Promise((resolve, reject) => {
      /** @type {Publish} */
      const p = { event: { type: event.type, data: event.data }, key, resolve, reject, timer: null, sent: false };
      const live = this.#state === 'live' && this.#ws?.readyState === 1;
      if (this.#stopped || (this.#queue.length >= this.#publishQueue && !(live && this.#inFlight.size < maxInFlight))) {
        const offline = this.#stopped || !live;
        reject(new TidingsError(offline ? 'offline' : 'queue-full',
          offline ? 'not connected, and no room to wait for the stream' : 'too many publishes are waiting', { key }));
        return;
      }
      p.timer = this.#setTimeout(() => {
        if (!this.#forget(p)) return;
        reject(new TidingsError('timeout', p.sent ? 'the server did not answer in time; it may have been stored' : 'the stream was not back in time',
          { key, sent: p.sent }));
      }, this.#publishTimeout);
      this.#queue.push(p);
      this.#flush();
    });
  }

  /** Sends waiting publishes while the stream is live and has room. */
  #flush() {
    const ws = this.#ws;
    while (this.#queue.length > 0 && this.#state === 'live' && ws?.readyState === 1 && this.#inFlight.size < maxInFlight) {
      const p = /** @type {Publish} */ (this.#queue.shift());
      const ref = `r${++this.#refs}`;
      this.#inFlight.set(ref, p);
      p.sent = true;
      try {
        ws.send(JSON.stringify({ type: 'publish', ref, key: p.key, event: p.event }));
      } catch {
        return; // closing: the close puts it back in the queue
      }
    }
  }

  /** The stream dropped: what was in flight waits again, first and in order, to be sent with the same key. */
  #requeue() {
    this.#queue.unshift(...this.#inFlight.values());
    this.#inFlight.clear();
  }

  /** Removes a publish from the queue or the stream; false when it was settled already. @param {Publish} p */
  #forget(p) {
    const i = this.#queue.indexOf(p);
    if (i >= 0) {
      this.#queue.splice(i, 1);
      return true;
    }
    for (const [ref, q] of this.#inFlight) {
      if (q === p) {
        this.#inFlight.delete(ref);
        return true;
      }
    }
    return false;
  }

  /** @param {string} code @param {string} message */
  #failPublishes(code, message) {
    const all = [...this.#inFlight.values(), ...this.#queue];
    this.#inFlight.clear();
    this.#queue = [];
    for (const p of all) {
      this.#clearTimeout(p.timer);
      p.reject(new TidingsError(code, p.sent ? `${message}; it may have been stored` : message, { key: p.key, sent: p.sent }));
    }
  }

  /**
   * Sends an ephemeral signal (docs/protocol.md section 8), best effort: only on a live stream,
   * and a refusal is dropped. Returns whether it was sent.
   * @param {{type: string, data?: object}} signal
   */
  signal(signal) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1 || this.#state !== 'live') return false;
    ws.send(JSON.stringify({ type: 'signal', ref: `s${++this.#signalRefs}`, signal: { type: signal.type, data: signal.data ?? {} } }));
    return true;
  }

  // Bearer tokens.

  /** Sets the bearer token (null: none); the next stream and requests carry it. @param {string|null} token */
  setToken(token) {
    this.#setToken(token === null ? null : checkToken(token));
  }

  /** @param {string|null} token */
  #setToken(token) {
    if (token === this.#token) return;
    this.#token = token;
    if (token !== null) this.#bearer = true;
    if (this.#onToken) {
      try {
        this.#onToken(token);
      } catch (err) {
        report(err);
      }
    }
    this.#emit('token', token);
  }

  /**
   * A bearer token that the server resolved to no session (expired, logged out, taken) is
   * dead: it is forgotten, unless the client holds another one by now.
   * @param {string|null} sent the token the server was shown @param {any} session its answer
   */
  #forgetDead(sent, session) {
    if (sent !== null && sent === this.#token && session === null) this.#setToken(null);
  }

  // HTTP.

  /**
   * A request to the JSON API with this client's session; resolves with the decoded answer
   * (null for 204), rejects with a TidingsError.
   * @param {string} method @param {string} path @param {unknown} [body]
   */
  async request(method, path, body) {
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const token = this.#token;
    if (token) headers.Authorization = `Bearer ${token}`;
    let res;
    try {
      res = await this.#fetch(this.#base + path, {
        method, headers, credentials: this.#credentials, cache: 'no-store',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new TidingsError('network', 'the server cannot be reached');
    }
    // A rotation's successor, or "" (forget the token): only about the token this request carried.
    const next = res.headers.get('Tidings-Session-Token');
    if (token && next !== null && token === this.#token) {
      if (next === '') this.#setToken(null);
      else if (tokenPattern.test(next)) this.#setToken(next);
    }
    if (res.status === 204) return null;
    let data = null;
    try {
      data = await res.json();
    } catch {
      // not JSON: the status says it
    }
    if (!res.ok) {
      throw new TidingsError(data?.error?.code ?? `http-${res.status}`, data?.error?.message ?? res.statusText, { status: res.status });
    }
    return data;
  }

  /**
   * GET /api/session: who this session is now (it rotates a session that is due). Tells the
   * "session" listeners.
   * @param {{closeCode?: number, closeReason?: string}} [why] the close that made the client ask
   */
  async fetchSession(why = {}) {
    const sent = this.#token;
    const body = await this.request('GET', '/api/session');
    const session = isObject(body?.session) ? body.session : null;
    const notice = typeof body?.notice === 'string' ? body.notice : null;
    this.#session = session;
    this.#forgetDead(sent, session);
    this.#emit('session', { session, notice, source: 'http', ...why });
    return { session, notice };
  }

  /**
   * @param {string} path @param {string} name @param {string} password
   * @param {{bearer?: boolean, reconnect?: boolean}} o
   */
  async #signIn(path, name, password, o) {
    const bearer = o.bearer ?? this.#bearer;
    const res = await this.request('POST', path, bearer ? { name, password, bearer: true } : { name, password });
    const { token, ...session } = res ?? {};
    if (bearer && typeof token === 'string' && tokenPattern.test(token)) this.#setToken(token);
    if (o.reconnect ?? true) this.#reopen();
    return session;
  }

  /** POST /api/auth/login; resolves with the ApiSession. */
  login(/** @type {string} */ name, /** @type {string} */ password, o = {}) {
    return this.#signIn('/api/auth/login', name, password, o);
  }

  /** POST /api/auth/register; resolves with the ApiSession of the new user. */
  register(/** @type {string} */ name, /** @type {string} */ password, o = {}) {
    return this.#signIn('/api/auth/register', name, password, o);
  }

  /** POST /api/auth/logout: ends the session, forgets the token. @param {{reconnect?: boolean}} [o] */
  async logout(o = {}) {
    await this.request('POST', '/api/auth/logout');
    this.#setToken(null);
    if (o.reconnect ?? true) this.#reopen();
  }

  /** The session changed: a running stream reopens with it, from the last event handed over. */
  #reopen() {
    if (!this.#stopped) this.restart();
  }

  /** GET /api/users: every user (signed in only). */
  users() {
    return this.request('GET', '/api/users');
  }

  /** GET /api/users/:id. @param {number} id */
  user(id) {
    return this.request('GET', `/api/users/${id}`);
  }

  /** PATCH /api/users/:id with {name?, type?}. @param {number} id @param {{name?: string, type?: string}} patch */
  updateUser(id, patch) {
    return this.request('PATCH', `/api/users/${id}`, patch);
  }

  /** DELETE /api/users/:id (admins). @param {number} id */
  async deleteUser(id) {
    await this.request('DELETE', `/api/users/${id}`);
  }

  /** GET /api/presence: the ids of the users online (signed in only). */
  async presence() {
    const body = await this.request('GET', '/api/presence');
    return Array.isArray(body?.online) ? body.online.filter(isUserId) : [];
  }

  /** GET /api/last-event-id: the watermark to read a snapshot after (docs/protocol.md section 1). */
  async watermark() {
    const body = await this.request('GET', '/api/last-event-id');
    return body.lastEventId;
  }
}

/** @param {string} token */
function checkToken(token) {
  if (typeof token !== 'string' || !tokenPattern.test(token)) throw new TypeError('tidings: a bearer token is base64url without padding');
  return token;
}

// Stores: optional helpers that keep a value current from a client's events.

/**
 * A value that listeners follow.
 * @template T
 */
export class Store {
  /** @type {T} */ #value;
  /** @type {Set<(value: T) => void>} */ #subs = new Set();

  /** @param {T} value */
  constructor(value) {
    this.#value = value;
  }

  /** @returns {T} */
  get() {
    return this.#value;
  }

  /** @param {T} value */
  set(value) {
    this.#value = value;
    for (const fn of [...this.#subs]) {
      try {
        fn(value);
      } catch (err) {
        report(err);
      }
    }
  }

  /** Calls fn with every new value; returns a function that stops it. @param {(value: T) => void} fn */
  subscribe(fn) {
    this.#subs.add(fn);
    return () => void this.#subs.delete(fn);
  }
}

/**
 * A collection of values with numeric ids that events change, as an array sorted by id. A
 * snapshot may be older than the events applied while it was fetched: those are applied again
 * over it (applying an event twice changes nothing), and a snapshot that another replaced
 * meanwhile is dropped.
 * @template {{id: number}} V
 * @extends {Store<V[]>}
 */
export class KeyedStore extends Store {
  /** @type {Map<number, V>} */ map = new Map();
  /** @type {import('./tidings.js').EventFrame[]|null} events applied since a refetch began */ #buffer = null;
  #snapshots = 0;

  constructor() {
    super([]);
  }

  /** Applies an event; returns whether the store changed. @param {import('./tidings.js').EventFrame} frame */
  apply(frame) {
    if (this.#buffer) this.#buffer.push(frame);
    const changed = this.applyOne(frame);
    if (changed) this.publish();
    return changed;
  }

  /** Applies one event to map; the subclass's rule. @param {import('./tidings.js').EventFrame} _frame @returns {boolean} */
  applyOne(_frame) {
    return false;
  }

  /** Takes a snapshot, then the events applied since a refetch began. @param {V[]} values */
  replaceWith(values) {
    this.#snapshots++;
    this.map.clear();
    for (const v of values) this.map.set(v.id, v);
    for (const f of this.#buffer ?? []) this.applyOne(f);
    this.#buffer = null;
    this.publish();
  }

  /**
   * Fetches a snapshot with load and takes it; resolves with false when another snapshot
   * came first (this one is dropped).
   * @param {() => Promise<V[]>} load
   */
  async refetch(load) {
    const mine = ++this.#snapshots;
    this.#buffer = [];
    let values;
    try {
      values = await load();
    } catch (err) {
      if (mine === this.#snapshots) this.#buffer = null;
      throw err;
    }
    if (mine !== this.#snapshots) return false;
    this.replaceWith(values);
    return true;
  }

  /** Publishes the map as an array sorted by id. */
  publish() {
    this.set([...this.map.values()].sort((a, b) => a.id - b.id));
  }
}

/** @param {any} d @returns {boolean} */
function isUser(d) {
  return isObject(d) && isUserId(d.id) && typeof d.name === 'string' && typeof d.type === 'string';
}

/**
 * Every user, by id, for a signed-in session: a GET /api/users snapshot (or the one given),
 * kept current by user-update and user-delete events, fetched again after a reset and when
 * the account changes, emptied when the session is anonymous.
 * @extends {KeyedStore<import('./tidings.js').ApiUser>}
 */
export class UsersStore extends KeyedStore {
  #client;
  /** @type {number|null|undefined} the account the store holds the users for */ #account;
  /** @type {(() => void)[]} */ #unsubscribe = [];
  #given;

  /** @param {Tidings} client @param {{users?: import('./tidings.js').ApiUser[]}} [o] */
  constructor(client, o = {}) {
    super();
    this.#client = client;
    this.#account = client.session === undefined ? undefined : accountOf(client.session);
    this.#unsubscribe = [
      client.on('event', (/** @type {any} */ f) => this.apply(f)),
      client.on('reset', () => this.#load()),
      client.on('session', (/** @type {any} */ s) => this.#sessionChanged(s.session)),
    ];
    this.#given = o.users !== undefined;
    if (o.users) this.replaceWith(o.users);
    else this.#load();
  }

  /** Fetches the snapshot again (signed in only); a failure leaves the store as it is. */
  reload() {
    return this.#load();
  }

  async #load() {
    if (!this.#client.account) return false;
    try {
      return await this.refetch(() => this.#client.users());
    } catch {
      return false;
    }
  }

  /** @param {any} session */
  #sessionChanged(session) {
    const id = accountOf(session);
    const was = this.#account;
    this.#account = id;
    if (was === id) return;
    if (id === null) {
      if (this.map.size > 0) this.replaceWith([]);
    } else if (!(was === undefined && this.#given)) this.#load(); // a snapshot given is the first session's
  }

  /** @param {import('./tidings.js').EventFrame} frame */
  applyOne(frame) {
    const { type, data } = /** @type {{type: string, data: any}} */ (frame.event);
    if (type === 'user-update' && isUser(data)) {
      const old = this.map.get(data.id);
      if (old && old.name === data.name && old.type === data.type) return false;
      this.map.set(data.id, { id: data.id, name: data.name, type: data.type });
      return true;
    }
    if (type === 'user-delete' && isObject(data) && isUserId(data.id)) return this.map.delete(data.id);
    return false;
  }

  /** Stops following the client. */
  dispose() {
    for (const u of this.#unsubscribe) u();
    this.#unsubscribe = [];
  }
}

/**
 * The ids of the users online (docs/protocol.md section 8): a stream's presence frame replaces
 * the whole set, presence-change frames change it, an anonymous session empties it.
 * @extends {Store<ReadonlySet<number>>}
 */
export class PresenceStore extends Store {
  /** @type {(() => void)[]} */ #unsubscribe = [];

  /** @param {Tidings|null} [client] @param {{online?: number[]}} [o] the ids known to be online so far */
  constructor(client, o = {}) {
    super(new Set());
    this.replaceWith(o.online);
    if (client) {
      this.#unsubscribe = [
        client.on('presence', (/** @type {any} */ p) => this.replaceWith(p.online)),
        client.on('presence-change', (/** @type {any} */ c) => this.change(c.userId, c.online)),
        client.on('session', (/** @type {any} */ s) => {
          if (accountOf(s.session) === null) this.replaceWith([]);
        }),
      ];
    }
  }

  /** Takes a whole set; anything but an array is nobody, and ids that are not ids are left out. @param {any} online */
  replaceWith(online) {
    const next = new Set(Array.isArray(online) ? online.filter(isUserId) : []);
    const now = this.get();
    if (next.size === now.size && [...next].every((id) => now.has(id))) return;
    this.set(next);
  }

  /** Applies one change; a malformed one changes nothing. @param {any} userId @param {any} online */
  change(userId, online) {
    if (!isUserId(userId) || typeof online !== 'boolean' || this.get().has(userId) === online) return;
    const next = new Set(this.get());
    if (online) next.add(userId);
    else next.delete(userId);
    this.set(next);
  }

  /** @param {number} id */
  has(id) {
    return this.get().has(id);
  }

  /** Stops following the client. */
  dispose() {
    for (const u of this.#unsubscribe) u();
    this.#unsubscribe = [];
  }
}
