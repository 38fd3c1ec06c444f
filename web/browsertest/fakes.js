// Fakes for the library's unit tests in node: a client whose sockets, timers and HTTP answers
// the test drives.

import assert from 'node:assert/strict';
import { FakeSocket } from './fakesocket.js';
import { Tidings } from '../client/tidings.js';

/** Runs every microtask queued so far (the fakes answer at once, so nothing else is waited for). */
export const flush = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A fetch that answers with answer(url, init) ({status, body, headers}; default 200 with
 * {session: null, notice: null}) and records each request as {url, method, headers, body}.
 */
export function fakeFetch(answer = () => ({})) {
  const requests = [];
  const fetch = async (url, init) => {
    const req = { url, method: init.method, headers: { ...init.headers }, body: init.body === undefined ? undefined : JSON.parse(init.body), init };
    requests.push(req);
    const a = answer(req) ?? {};
    if (a.networkError) throw new TypeError('Failed to fetch');
    const status = a.status ?? 200;
    const body = status === 204 ? null : JSON.stringify(a.body ?? { session: null, notice: null });
    return new Response(body, { status, headers: { 'Content-Type': 'application/json', ...a.headers } });
  };
  return { fetch, requests };
}

/** A client on fake sockets, timers and fetch; options go to the client. */
export function setup({ random = () => 0.5, lastEventId = 10, answer, ...options } = {}) {
  FakeSocket.all = [];
  const timers = [];
  const events = [];
  const states = [];
  const sessions = [];
  const { fetch, requests } = fakeFetch(answer);
  const client = new Tidings({
    baseUrl: 'http://test',
    lastEventId,
    WebSocket: FakeSocket,
    fetch,
    random,
    setTimeout: (fn, ms) => {
      const t = { fn, ms, cleared: false };
      timers.push(t);
      return t;
    },
    clearTimeout: (t) => {
      if (t) t.cleared = true;
    },
    ...options,
  });
  client.on('event', (e) => events.push(e));
  client.on('state', (s, d) => states.push([s, d]));
  client.on('session', (s) => sessions.push(s));
  const sock = () => FakeSocket.all.at(-1);
  const pending = () => timers.filter((x) => !x.cleared && !x.fired);
  /** Runs the newest pending timer and returns its delay. */
  const fire = () => {
    const t = pending().at(-1);
    assert.ok(t, 'a timer is pending');
    t.fired = true;
    t.fn();
    return t.ms;
  };
  /** Runs the pending reconnect (the timer of the latest reconnecting state). */
  const reconnect = () => {
    const t = pending().find((x) => x.ms === states.at(-1)[1].retryIn);
    assert.ok(t, 'a reconnect is pending');
    t.fired = true;
    t.fn();
  };
  /** Makes the current socket live: its session frame, then ready. */
  const live = (session = null, id = client.lastEventId ?? 0) => {
    sock().frame({ type: 'session', session, notice: null });
    sock().frame({ type: 'ready', lastEventId: id });
  };
  return { client, timers, events, states, sessions, requests, sock, fire, pending, reconnect, live };
}

/** An ApiSession of account id (its session id sid). */
export const sessionOf = (id, sid = 100 + id, type = 'regular') => ({
  id: sid, account: { id, name: `user${id}`, type }, rotatesAt: '2026-01-01T00:00:00.000Z', expiresAt: '2026-01-02T00:00:00.000Z',
});
