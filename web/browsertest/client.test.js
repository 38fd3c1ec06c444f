// Unit tests of the client's connection manager and stores, in node, with a fake WebSocket
// and fake timers: the close-code table, backoff, resume, publish answers, idempotent events.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeSocket } from './fakesocket.js';
import { Connection, PublishError, subprotocol } from '../static/connection.js';
import { MessagesStore, UsersStore, keepMessages, toMessage } from '../static/stores.js';


/** A connection whose sockets and timers the test drives. */
function setup({ random = () => 0.5, lastEventId = 10 } = {}) {
  FakeSocket.all = [];
  const timers = [];
  const frames = [];
  const states = [];
  const lost = [];
  const conn = new Connection({
    url: (id) => `ws://test/api/events?lastEventId=${id}`,
    lastEventId,
    onFrame: (f) => frames.push(f),
    onState: (s, d) => states.push([s, d]),
    onSessionLost: async (code, reason) => lost.push([code, reason]),
    WebSocket: FakeSocket,
    random,
    setTimeout: (fn, ms) => {
      const t = { fn, ms, cleared: false };
      timers.push(t);
      return t;
    },
    clearTimeout: (t) => {
      if (t) t.cleared = true;
    },
  });
  const sock = () => FakeSocket.all.at(-1);
  /** Runs the newest pending timer and returns its delay. */
  const fire = () => {
    const t = timers.filter((x) => !x.cleared && !x.fired).at(-1);
    assert.ok(t, 'a timer is pending');
    t.fired = true;
    t.fn();
    return t.ms;
  };
  const pending = () => timers.filter((x) => !x.cleared && !x.fired);
  return { conn, timers, frames, states, lost, sock, fire, pending };
}

test('opens at the page state id with tidings.v1, skips events already seen, resumes after the last', () => {
  const { conn, frames, sock, fire, states } = setup();
  conn.start();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=10');
  assert.deepEqual(sock().protocols, [subprotocol]);
  assert.deepEqual(states.at(-1)[0], 'connecting');
  sock().frame({ type: 'session', session: null, notice: null });
  sock().frame({ type: 'event', id: 9, event: { type: 'x', data: 1, time: '' } });
  sock().frame({ type: 'event', id: 11, event: { type: 'x', data: 1, time: '' } });
  sock().frame({ type: 'event', id: 11, event: { type: 'x', data: 1, time: '' } });
  sock().frame({ type: 'ready', lastEventId: 11 });
  assert.deepEqual(frames.map((f) => f.type + (f.id ?? '')), ['session', 'event11']);
  assert.equal(states.at(-1)[0], 'live');
  sock().frame({ type: 'event', id: 12, event: { type: 'x', data: 1, time: '' } });
  sock().serverClose(1001, 'going-away');
  assert.equal(states.at(-1)[0], 'reconnecting');
  fire();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=12');
  assert.equal(states.at(-1)[0], 'reconnecting');
});

test('a reset moves the resume point and is passed on', () => {
  const { conn, frames, sock, fire } = setup();
  conn.start();
  sock().frame({ type: 'reset', lastEventId: 500 });
  assert.equal(frames.at(-1).type, 'reset');
  sock().serverClose(1011);
  fire();
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=500');
});

test('the close-code table', async (t) => {
  const cases = [
    // code, reason, what happens: [delay range] or 'stop'
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
      const { conn, sock, lost, pending, states } = setup({ random: () => 0.999 });
      conn.start();
      sock().frame({ type: 'ready', lastEventId: 10 });
      await sock().serverClose(code, reason);
      assert.deepEqual(lost, asks ? [[code, reason]] : []);
      if (want === 'stop') {
        assert.equal(pending().length, 0, 'no reconnect');
        assert.equal(states.at(-1)[0], 'offline');
        assert.equal(conn.stopped, true);
        return;
      }
      assert.equal(pending().length, 1, 'one reconnect scheduled');
      const ms = pending()[0].ms;
      assert.ok(ms >= want[0] && ms <= want[1], `delay ${ms} within ${want}`);
    });
  }
});

test('1008 and 1009 are shown as fatal', async () => {
  const { conn, sock, states } = setup();
  conn.start();
  await sock().serverClose(1009);
  assert.equal(states.at(-1)[1].fatal, true);
});

test('backoff: full jitter, doubling, capped, and reset by ready', async () => {
  const { conn, sock, fire, pending } = setup({ random: () => 0.999 });
  conn.start();
  const delays = [];
  for (let i = 0; i < 8; i++) {
    await sock().serverClose(1006);
    delays.push(Math.round(pending()[0].ms));
    fire();
  }
  assert.deepEqual(delays, [500, 999, 1998, 3996, 7992, 9990, 9990, 9990]);
  sock().frame({ type: 'ready', lastEventId: 10 });
  await sock().serverClose(1006);
  assert.equal(Math.round(pending()[0].ms), 500);

  const zero = setup({ random: () => 0 });
  zero.conn.start();
  await zero.sock().serverClose(1006);
  assert.equal(zero.pending()[0].ms, 0, 'full jitter reaches 0');
});

test('repeated 4002 without ready backs off instead of spinning', async () => {
  const { conn, sock, fire, pending } = setup({ random: () => 0.999 });
  conn.start();
  await sock().serverClose(4002, 'session-rotated');
  assert.equal(fire(), 0);
  await sock().serverClose(4002, 'session-rotated');
  assert.ok(pending()[0].ms > 0);
});

test('a 4003 whose session fetch fails backs off', async () => {
  const { conn, sock, pending } = setup();
  conn.onSessionLost = async () => {
    throw new Error('network');
  };
  conn.start();
  sock().frame({ type: 'ready', lastEventId: 10 });
  await sock().serverClose(4003, 'logout');
  assert.equal(pending().length, 1);
  assert.ok(pending()[0].ms > 0);
});

test('publish: ack, error, disconnect, offline', async () => {
  const { conn, sock } = setup();
  await assert.rejects(conn.publish({ type: 'message', data: { text: 'x' } }), (e) => e instanceof PublishError && e.code === 'offline');
  conn.start();
  const p1 = conn.publish({ type: 'message', data: { text: 'hi' } });
  const p2 = conn.publish({ type: 'message', data: { text: '' } });
  const p3 = conn.publish({ type: 'message', data: { text: 'lost' } });
  const [f1, f2] = sock().sent;
  assert.equal(f1.type, 'publish');
  assert.deepEqual(f1.event, { type: 'message', data: { text: 'hi' } });
  assert.notEqual(f1.ref, f2.ref);
  sock().frame({ type: 'error', ref: f2.ref, code: 'invalid', message: 'a message text is 1 to 4000 characters' });
  sock().frame({ type: 'ack', ref: f1.ref, id: 57 });
  assert.equal(await p1, 57);
  await assert.rejects(p2, (e) => e.code === 'invalid' && /4000/.test(e.message));
  await sock().serverClose(1001);
  await assert.rejects(p3, (e) => e.code === 'disconnected');
});

test('a restart drops the old socket quietly and opens at the new id', async () => {
  const { conn, sock, states, pending } = setup();
  conn.start();
  const old = sock();
  conn.restart(99);
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=99');
  await old.serverClose(4003, 'logout'); // the old socket's close changes nothing
  assert.equal(pending().length, 0);
  assert.notEqual(states.at(-1)[0], 'offline');
});

const ev = (id, type, data) => ({ id, event: { type, data, time: '2026-01-01T00:00:00.000Z' } });

test('users: updates and deletes apply idempotently, in id order', () => {
  const users = new UsersStore([{ id: 2, name: 'bob', type: 'regular' }, { id: 1, name: 'alice', type: 'admin' }]);
  let published = 0;
  users.subscribe(() => published++);
  assert.deepEqual(users.get().map((u) => u.id), [1, 2]);
  assert.equal(users.apply(ev(5, 'user-update', { id: 2, name: 'bob', type: 'regular' })), false, 'no change');
  assert.equal(users.apply(ev(6, 'user-update', { id: 2, name: 'robert', type: 'crew' })), true);
  assert.equal(users.apply(ev(6, 'user-update', { id: 2, name: 'robert', type: 'crew' })), false);
  assert.equal(users.apply(ev(7, 'user-update', { id: 3, name: 'carol', type: 'regular' })), true);
  assert.equal(users.apply(ev(8, 'user-delete', { id: 1 })), true);
  assert.equal(users.apply(ev(8, 'user-delete', { id: 1 })), false);
  assert.equal(users.apply(ev(9, 'message', { text: 'x' })), false);
  assert.deepEqual(users.get(), [{ id: 2, name: 'robert', type: 'crew' }, { id: 3, name: 'carol', type: 'regular' }]);
  assert.equal(published, 3);
});

test('users: events during a refetch apply again over the snapshot', () => {
  const users = new UsersStore([{ id: 1, name: 'alice', type: 'regular' }]);
  users.beginRefetch();
  users.apply(ev(20, 'user-update', { id: 2, name: 'bob', type: 'regular' }));
  users.apply(ev(21, 'user-delete', { id: 1 }));
  users.replaceWith([{ id: 1, name: 'alice', type: 'regular' }]); // a snapshot from before 20
  assert.deepEqual(users.get(), [{ id: 2, name: 'bob', type: 'regular' }]);
});

test('messages: each id once, oldest first, the newest kept', () => {
  const m = new MessagesStore([ev(3, 'message', { userId: 1, userName: 'a', text: 'three' }), ev(1, 'message', { userId: 1, userName: 'a', text: 'one' })]);
  assert.equal(m.apply(ev(3, 'message', { userId: 1, userName: 'a', text: 'three' })), false);
  assert.equal(m.apply(ev(4, 'message', { userId: 2, userName: 'b', text: 'four' })), true);
  assert.deepEqual(m.get().map((x) => x.text), ['one', 'three', 'four']);
  for (let id = 5; id < 5 + keepMessages; id++) m.apply(ev(id, 'message', { text: String(id) }));
  assert.equal(m.get().length, keepMessages);
  assert.equal(m.get()[0].id, 5);
  assert.deepEqual(toMessage(ev(9, 'message', null)), { id: 9, userId: 0, userName: 'someone', text: '{}', time: '2026-01-01T00:00:00.000Z' });
  assert.equal(toMessage(ev(9, 'note', {})), null);
});
