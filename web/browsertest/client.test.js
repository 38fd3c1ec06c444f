// Unit tests of the library's stream (web/client/tidings.js) and of the page's message store,
// in node, with a fake WebSocket, fake timers and a fake fetch: the close-code table, backoff,
// resume, exactly once in order, publish answers and the publish queue.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeSocket } from './fakesocket.js';
import { flush, sessionOf, setup } from './fakes.js';
import { TidingsError, maxInFlight } from '../client/tidings.js';
import { MessagesStore, keepMessages, toMessage } from '../static/stores.js';

const ev = (id, type = 'x', data = 1) => ({ type: 'event', id, event: { type, data, time: '2026-01-01T00:00:00.000Z' } });

test('opens after the given id offering the subprotocols, skips events already seen, resumes after the last', () => {
  const { client, events, sock, fire, states } = setup();
  client.connect();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=10');
  assert.deepEqual(sock().protocols, ['tidings.v1', 'tidings']);
  assert.equal(states.at(-1)[0], 'connecting');
  sock().frame({ type: 'session', session: null, notice: null });
  for (const id of [9, 10, 11, 11, 12]) sock().frame(ev(id));
  sock().frame({ type: 'ready', lastEventId: 12 });
  assert.deepEqual(events.map((e) => e.id), [11, 12]);
  assert.deepEqual(events[0], { id: 11, event: { type: 'x', data: 1, time: '2026-01-01T00:00:00.000Z' } });
  assert.equal(states.at(-1)[0], 'live');
  sock().frame(ev(13));
  sock().serverClose(1001, 'going-away');
  assert.equal(states.at(-1)[0], 'reconnecting');
  fire();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=13');
  sock().frame(ev(12)); // a node that replays from an older id: nothing twice
  sock().frame(ev(14));
  assert.deepEqual(events.map((e) => e.id), [11, 12, 13, 14]);
  assert.equal(client.lastEventId, 14);
});

test('without an id the stream starts live, and resumes from the ready id', () => {
  const { client, sock, fire } = setup({ lastEventId: null });
  client.connect();
  assert.equal(sock().url, 'ws://test/api/events');
  sock().frame({ type: 'ready', lastEventId: 40 });
  sock().serverClose(1011);
  fire();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=40');
});

test('dropped mid-replay, the stream resumes from the last event handed over: each once, in order', () => {
  const { client, events, sock, fire } = setup({ lastEventId: 0 });
  client.connect();
  sock().frame({ type: 'session', session: null, notice: null });
  for (let id = 1; id <= 5; id++) sock().frame(ev(id));
  sock().serverClose(1006); // no ready: mid-replay
  fire();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=5');
  sock().frame({ type: 'session', session: null, notice: null });
  for (let id = 6; id <= 9; id++) sock().frame(ev(id));
  sock().frame({ type: 'ready', lastEventId: 9 });
  assert.deepEqual(events.map((e) => e.id), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
});

test('a reset moves the resume point (down too) and is passed on before ready', () => {
  const { client, sock, fire } = setup({ lastEventId: 900 });
  const seen = [];
  client.on('reset', (r) => seen.push(['reset', r.lastEventId]));
  client.on('ready', (r) => seen.push(['ready', r.lastEventId]));
  const events = [];
  client.on('event', (e) => events.push(e.id));
  client.connect();
  sock().frame({ type: 'reset', lastEventId: 500 });
  sock().frame({ type: 'ready', lastEventId: 500 });
  sock().frame(ev(501));
  assert.deepEqual(seen, [['reset', 500], ['ready', 500]]);
  assert.deepEqual(events, [501]);
  sock().serverClose(1011);
  fire();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=501');
});

test('the close-code table', async (t) => {
  const cases = [
    // code, reason, what happens: [delay range] or 'stop', whether it asks /api/session first
    [1000, '', 'stop'],
    [1008, '', 'stop'],
    [1009, '', 'stop'],
    [1001, 'going-away', [0, 500]],
    [1011, '', [0, 500]],
    [1006, '', [0, 500]],
    [4002, 'session-rotated', [0, 0]],
    [4001, 'session-expired', [0, 0], true],
    [4003, 'logout', [0, 0], true],
    [4003, 'access-changed', [0, 0], true],
    [4003, 'user-deleted', [0, 0], true],
    [4003, 'session-taken', [0, 0], true],
    [4004, 'too-slow', [250, 1000]],
  ];
  for (const [code, reason, want, asks] of cases) {
    await t.test(`${code} ${reason}`, async () => {
      const { client, sock, requests, sessions, pending, states } = setup({ random: () => 0.999 });
      client.connect();
      sock().frame({ type: 'ready', lastEventId: 10 });
      sock().serverClose(code, reason);
      await flush();
      assert.deepEqual(requests.map((r) => `${r.method} ${r.url}`), asks ? ['GET http://test/api/session'] : []);
      if (asks) assert.deepEqual(sessions.at(-1), { session: null, notice: null, source: 'http', closeCode: code, closeReason: reason });
      if (want === 'stop') {
        assert.equal(pending().length, 0, 'no reconnect');
        assert.equal(client.state, 'offline');
        assert.deepEqual(states.at(-1), ['offline', { code, reason, ...(code === 1000 ? {} : { fatal: true }) }]);
        return;
      }
      assert.equal(pending().length, 1, 'one reconnect scheduled');
      const ms = pending()[0].ms;
      assert.ok(ms >= want[0] && ms <= want[1], `delay ${ms} within ${want}`);
      assert.deepEqual(states.at(-1), ['reconnecting', { code, reason, retryIn: ms }]);
    });
  }
});

test('backoff: full jitter, doubling, capped, and reset by ready', () => {
  const { client, sock, fire, pending } = setup({ random: () => 0.999 });
  client.connect();
  const delays = [];
  for (let i = 0; i < 8; i++) {
    sock().serverClose(1006);
    delays.push(Math.round(pending()[0].ms));
    fire();
  }
  assert.deepEqual(delays, [500, 999, 1998, 3996, 7992, 9990, 9990, 9990]);
  sock().frame({ type: 'ready', lastEventId: 10 });
  sock().serverClose(1006);
  assert.equal(Math.round(pending()[0].ms), 500);

  const zero = setup({ random: () => 0, backoff: { base: 100, max: 1000 } });
  zero.client.connect();
  zero.sock().serverClose(1006);
  assert.equal(zero.pending()[0].ms, 0, 'full jitter reaches 0');
  const capped = setup({ random: () => 0.999, backoff: { base: 100, max: 1000 } });
  capped.client.connect();
  for (let i = 0; i < 6; i++) {
    capped.sock().serverClose(1006);
    if (i < 5) capped.fire();
  }
  assert.equal(Math.round(capped.pending()[0].ms), 999, 'the options set the cap');
});

test('repeated 4002 without ready backs off instead of spinning', () => {
  const { client, sock, fire, pending } = setup({ random: () => 0.999 });
  client.connect();
  sock().serverClose(4002, 'session-rotated');
  assert.equal(fire(), 0);
  sock().serverClose(4002, 'session-rotated');
  assert.ok(pending()[0].ms > 0);
});

test('a 4003 whose session fetch fails backs off', async () => {
  const { client, sock, pending } = setup({ answer: () => ({ networkError: true }) });
  client.connect();
  sock().frame({ type: 'ready', lastEventId: 10 });
  sock().serverClose(4003, 'logout');
  await flush();
  assert.equal(pending().length, 1);
  assert.ok(pending()[0].ms > 0);
});

test('a final close stays offline until connect, which resumes', () => {
  const { client, sock, pending } = setup();
  client.connect();
  sock().frame(ev(11));
  sock().serverClose(1008);
  assert.equal(pending().length, 0);
  const before = FakeSocket.all.length;
  client.reconnectNow();
  assert.equal(FakeSocket.all.length, before, 'reconnectNow does not undo a final close');
  client.connect();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=11');
});

test('a restart drops the old socket quietly and opens at the new id; disconnect stays offline', () => {
  const { client, sock, states, pending } = setup();
  client.connect();
  const old = sock();
  client.restart(99);
  assert.equal(old.readyState, 3, 'the old socket was closed');
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=99');
  old.serverClose(4003, 'logout'); // the old socket's close changes nothing
  assert.equal(pending().length, 0);
  assert.notEqual(states.at(-1)[0], 'offline');
  client.disconnect();
  assert.equal(client.state, 'offline');
  assert.equal(pending().length, 0);
});

test('unknown frame types and anything that is no frame are ignored; the frame listeners see frames', () => {
  const { client, sock, events, states } = setup();
  const frames = [];
  client.on('frame', (f) => frames.push(f.type));
  client.connect();
  sock().frame({ type: 'ready', lastEventId: 10 });
  for (const raw of ['null', '42', '"event"', '[]', '[{"type":"event"}]', '{}', '{"type":7}', 'not json']) {
    assert.doesNotThrow(() => sock().raw(raw), raw);
  }
  sock().frame({ type: 'a-frame-from-the-future', id: 50, event: { type: 'x' } });
  sock().frame({ type: 'event', id: '12', event: { type: 'x' } });
  sock().frame({ type: 'reset', lastEventId: -1 });
  sock().frame(ev(11));
  assert.deepEqual(events.map((e) => e.id), [11]);
  assert.equal(client.lastEventId, 11);
  assert.deepEqual(frames, ['ready', 'a-frame-from-the-future', 'event', 'reset', 'event']);
  assert.equal(states.at(-1)[0], 'live');
});

test('a listener that throws does not stop the others, nor the stream; its error is thrown on its own', () => {
  const { client, sock, events } = setup();
  const errors = [];
  const original = globalThis.queueMicrotask; // the library rethrows listeners' errors in a microtask
  globalThis.queueMicrotask = (fn) => {
    try {
      fn();
    } catch (err) {
      errors.push(err.message);
    }
  };
  try {
    client.on('event', () => {
      throw new Error('app bug');
    });
    client.connect();
    sock().frame(ev(11));
    sock().frame(ev(12));
  } finally {
    globalThis.queueMicrotask = original;
  }
  assert.deepEqual(events.map((e) => e.id), [11, 12]);
  assert.deepEqual(errors, ['app bug', 'app bug']);
});

test('publish: resolved with the id, rejected with the code; each with its own ref and key', async () => {
  const { client, sock, live } = setup();
  client.connect();
  live();
  const p1 = client.publish({ type: 'message', data: { text: 'hi' } });
  const p2 = client.publish({ type: 'message', data: { text: '' } });
  const p3 = client.publish({ type: 'message', data: { text: 'mine' } }, { key: 'my-key.1' });
  const [f1, f2, f3] = sock().sent;
  assert.deepEqual(f1, { type: 'publish', ref: f1.ref, key: f1.key, event: { type: 'message', data: { text: 'hi' } } });
  assert.notEqual(f1.ref, f2.ref);
  assert.match(f1.key, /^[0-9a-f]{32}$/);
  assert.notEqual(f1.key, f2.key);
  assert.equal(f3.key, 'my-key.1');
  sock().frame({ type: 'error', ref: f2.ref, code: 'invalid', message: 'a message text is 1 to 4000 characters' });
  sock().frame({ type: 'ack', ref: f1.ref, id: 57 });
  sock().frame({ type: 'ack', ref: f3.ref, id: 58 });
  assert.equal(await p1, 57);
  assert.equal(await p3, 58);
  await assert.rejects(p2, (e) => e instanceof TidingsError && e.code === 'invalid' && /4000/.test(e.message) && e.key === f2.key && e.sent);
  await assert.rejects(client.publish({ type: 'message' }, { key: 'no spaces' }), TypeError);
});

test('publish while away: queued, sent once live; one in flight when the stream drops is sent again with its key', async () => {
  const { client, sock, live, reconnect } = setup();
  client.connect();
  const early = client.publish({ type: 'message', data: { text: 'before ready' } });
  assert.deepEqual(sock().sent, [], 'nothing is sent before ready');
  live();
  const first = sock().sent[0];
  assert.equal(first.event.data.text, 'before ready');
  sock().serverClose(1006); // no ack: it may or may not have been stored
  const away = client.publish({ type: 'message', data: { text: 'while away' } });
  reconnect();
  assert.deepEqual(sock().sent, []);
  live();
  const [again, next] = sock().sent;
  assert.equal(again.key, first.key, 'the same key: the server stores it once');
  assert.deepEqual(again.event, first.event);
  assert.equal(next.event.data.text, 'while away');
  sock().frame({ type: 'ack', ref: again.ref, id: 70 });
  sock().frame({ type: 'ack', ref: next.ref, id: 71 });
  assert.equal(await early, 70);
  assert.equal(await away, 71);
});

test("the browser's offline event drops the stream and keeps what was in flight; online opens a new one at once", async (t) => {
  // The page's window, as far as the library listens to it.
  const win = new EventTarget();
  globalThis.addEventListener = win.addEventListener.bind(win);
  globalThis.removeEventListener = win.removeEventListener.bind(win);
  t.after(() => {
    delete globalThis.addEventListener;
    delete globalThis.removeEventListener;
  });
  const { client, sock, live, states, pending } = setup();
  client.connect();
  live();
  const p = client.publish({ type: 'message', data: { text: 'on the train' } });
  const first = sock().sent[0];
  const old = sock();
  win.dispatchEvent(new Event('offline'));
  assert.equal(old.readyState, 3, 'the old stream is closed');
  assert.deepEqual(states.at(-1), ['reconnecting', { offline: true, retryIn: 10_000 }]);
  old.serverClose(1006); // its close, late: changes nothing
  assert.equal(FakeSocket.all.length, 1, 'no stream opens while offline');
  assert.equal(pending().length, 2, 'the publish timeout, and the reconnect after the longest backoff');
  win.dispatchEvent(new Event('online'));
  assert.equal(FakeSocket.all.length, 2, 'back online: a new stream at once');
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=10');
  live();
  assert.equal(sock().sent[0].key, first.key, 'sent again with its key');
  sock().frame({ type: 'ack', ref: sock().sent[0].ref, id: 11 });
  assert.equal(await p, 11);
  client.disconnect();
  win.dispatchEvent(new Event('offline'));
  assert.equal(states.at(-1)[0], 'offline', 'a disconnected client does not listen');
});

test('publish: at most 8 in flight, a bounded queue behind them, offline when there is no room', async () => {
  const { client, sock, live } = setup({ publishQueue: 2 });
  await assert.rejects(client.publish({ type: 'm' }), (e) => e.code === 'offline' && !e.sent, 'not connected');
  client.connect();
  const queued = [client.publish({ type: 'm', data: 1 }), client.publish({ type: 'm', data: 2 })];
  await assert.rejects(client.publish({ type: 'm', data: 3 }), (e) => e.code === 'offline', 'the queue is full while away');
  live();
  const more = [];
  for (let i = 0; i < maxInFlight; i++) more.push(client.publish({ type: 'm', data: 10 + i }));
  assert.equal(sock().sent.length, maxInFlight, 'the window is full');
  await assert.rejects(client.publish({ type: 'm', data: 99 }), (e) => e.code === 'queue-full');
  sock().frame({ type: 'ack', ref: sock().sent[0].ref, id: 1 });
  assert.equal(sock().sent.length, maxInFlight + 1, 'an answer makes room for the next');
  assert.equal(await queued[0], 1);
  for (const [i, f] of sock().sent.slice(1).entries()) sock().frame({ type: 'ack', ref: f.ref, id: 2 + i });
  assert.equal(sock().sent.length, maxInFlight + 2);
  sock().frame({ type: 'ack', ref: sock().sent.at(-1).ref, id: 100 });
  assert.equal(await queued[1], 2);
  assert.deepEqual(await Promise.all(more), [3, 4, 5, 6, 7, 8, 9, 100]);

  const none = setup({ publishQueue: 0 });
  none.client.connect();
  await assert.rejects(none.client.publish({ type: 'm' }), (e) => e.code === 'offline', 'publishQueue 0: refused while not live');
  none.live();
  none.client.publish({ type: 'm' });
  assert.equal(none.sock().sent.length, 1, 'publishQueue 0: sent at once when live');
});

test('publish: a timeout, and a session that ended or changed, refuse what waits', async () => {
  const { client, sock, live, pending, reconnect } = setup({ session: sessionOf(7) });
  client.connect();
  live(sessionOf(7));
  const inFlight = client.publish({ type: 'm', data: 'a' });
  sock().serverClose(1006);
  const waiting = client.publish({ type: 'm', data: 'b' });
  // The publish timers are the ones that are not the reconnect.
  const timer = pending().find((t) => t.ms === 30_000);
  timer.fired = true;
  timer.fn();
  await assert.rejects(inFlight, (e) => e.code === 'timeout' && e.sent, 'sent once: it may have been stored');
  reconnect();
  sock().frame({ type: 'session', session: sessionOf(8), notice: null }); // another account now
  await assert.rejects(waiting, (e) => e.code === 'closed' && !e.sent);
  sock().frame({ type: 'ready', lastEventId: 10 });
  assert.deepEqual(sock().sent, [], 'nothing of the other account was sent');

  const p = client.publish({ type: 'm', data: 'c' });
  sock().serverClose(4003, 'logout');
  await assert.rejects(p, (e) => e.code === 'closed' && e.sent);
});

test('signals: only on a live stream, each with its own ref; refusals are dropped; presence and signal frames reach their listeners', async () => {
  const { client, sock, live } = setup();
  const got = [];
  for (const type of ['presence', 'presence-change', 'signal']) client.on(type, (x) => got.push([type, x]));
  client.connect();
  assert.equal(client.signal({ type: 'typing', data: {} }), false, 'not live before ready');
  live();
  assert.equal(client.signal({ type: 'typing' }), true);
  assert.equal(client.signal({ type: 'typing', data: {} }), true);
  const [s1, s2] = sock().sent;
  assert.deepEqual(s1, { type: 'signal', ref: s1.ref, signal: { type: 'typing', data: {} } });
  assert.notEqual(s1.ref, s2.ref);
  const p = client.publish({ type: 'message', data: { text: 'hi' } });
  const pub = sock().sent.at(-1);
  sock().frame({ type: 'error', ref: s1.ref, code: 'rate-limited', message: 'slow down' });
  sock().frame({ type: 'ack', ref: pub.ref, id: 57 });
  assert.equal(await p, 57);
  for (const f of [
    { type: 'presence', online: [7, 12, '8', -1, 1.5, null] },
    { type: 'presence', online: 'nobody' },
    { type: 'presence-change', userId: 7, online: false },
    { type: 'presence-change', userId: '7', online: false },
    { type: 'presence-change', userId: 7, online: 'no' },
    { type: 'signal', from: 7, signal: { type: 'typing', data: {} } },
    { type: 'signal', from: 7 },
    { type: 'signal', from: '7', signal: { type: 'typing' } },
  ]) sock().frame(f);
  assert.deepEqual(got, [
    ['presence', { online: [7, 12] }],
    ['presence-change', { userId: 7, online: false }],
    ['signal', { from: 7, signal: { type: 'typing', data: {} } }],
  ]);
  sock().readyState = 3;
  assert.equal(client.signal({ type: 'typing' }), false, 'a closing socket sends nothing');
});

test('the session frame: told to the listeners; a rotation is presented at once', async () => {
  const { client, sock, sessions, requests } = setup({ session: sessionOf(7, 100) });
  client.connect();
  sock().frame({ type: 'session', session: sessionOf(7, 100), notice: null });
  assert.equal(client.account.id, 7);
  await flush();
  assert.equal(requests.length, 0, 'the same session: nothing to present');
  sock().frame({ type: 'session', session: sessionOf(7, 101), notice: null }); // the upgrade rotated it
  await flush();
  assert.deepEqual(requests.map((r) => r.url), ['http://test/api/session']);
  sock().frame({ type: 'session', session: null, notice: 'session-taken' });
  assert.deepEqual(sessions.filter((s) => s.source === 'stream').map((s) => [s.session?.id ?? null, s.notice]),
    [[100, null], [101, null], [null, 'session-taken']]);
  assert.equal(client.account, null);
});

test('messages: each id once, oldest first, the newest kept', () => {
  const e = (id, data) => ({ id, event: { type: 'message', data, time: '2026-01-01T00:00:00.000Z' } });
  const m = new MessagesStore([e(3, { userId: 1, userName: 'a', text: 'three' }), e(1, { userId: 1, userName: 'a', text: 'one' })]);
  assert.equal(m.apply(e(3, { userId: 1, userName: 'a', text: 'three' })), false);
  assert.equal(m.apply(e(4, { userId: 2, userName: 'b', text: 'four' })), true);
  assert.deepEqual(m.get().map((x) => x.text), ['one', 'three', 'four']);
  for (let id = 5; id < 5 + keepMessages; id++) m.apply(e(id, { text: String(id) }));
  assert.equal(m.get().length, keepMessages);
  assert.equal(m.get()[0].id, 5);
  assert.deepEqual(toMessage(e(9, null)), { id: 9, userId: 0, userName: 'someone', text: '{}', time: '2026-01-01T00:00:00.000Z' });
  assert.equal(toMessage({ id: 9, event: { type: 'note', data: {}, time: '' } }), null);
});
