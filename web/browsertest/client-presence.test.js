// Unit tests of presence and typing (docs/protocol.md section 8), in node, with a fake WebSocket
// and fake timers: the library's online set, and the page's typing line, its expiry, and the
// throttle of the typing signals it sends.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sessionOf, setup } from './fakes.js';
import { PresenceStore } from '../client/tidings.js';
import { TypingSender, TypingStore, typingEvery, typingHold, typingText } from '../static/presence.js';

/** Fake timers: run() fires those due at the fake time now. */
function clock() {
  let now = 0;
  let timers = [];
  return {
    now: () => now,
    setTimeout: (fn, ms) => {
      const t = { fn, at: now + ms };
      timers.push(t);
      return t;
    },
    clearTimeout: (t) => {
      timers = timers.filter((x) => x !== t);
    },
    /** Moves the time on by ms, firing every timer due on the way. */
    advance(ms) {
      now += ms;
      for (;;) {
        const due = timers.filter((t) => t.at <= now).sort((a, b) => a.at - b.at)[0];
        if (!due) return;
        timers = timers.filter((t) => t !== due);
        due.fn();
      }
    },
    pending: () => timers.length,
  };
}

test('presence: the embedded set, replaced by presence frames, changed by presence-change', () => {
  const online = new PresenceStore(null, { online: [3, 1] });
  const seen = [];
  online.subscribe((s) => seen.push([...s].sort()));
  assert.equal(online.has(1), true);
  assert.equal(online.has(2), false);
  online.replaceWith([1, 3]);
  assert.deepEqual(seen, [], 'the same set publishes nothing');
  online.replaceWith([2]); // a presence frame supersedes the embedded set
  assert.deepEqual([...online.get()], [2]);
  online.change(5, true);
  online.change(5, true);
  online.change(2, false);
  online.change(9, false);
  assert.deepEqual([...online.get()], [5]);
  assert.deepEqual(seen, [[2], [2, 5], [5]], 'only changes publish');
});

test('presence: a missing or malformed online is nobody, and bad changes change nothing', () => {
  assert.equal(new PresenceStore(null, { online: undefined }).get().size, 0, 'a state without online');
  assert.equal(new PresenceStore().get().size, 0);
  assert.equal(new PresenceStore(null, { online: /** @type {any} */ ('7') }).get().size, 0);
  assert.deepEqual([...new PresenceStore(null, { online: /** @type {any} */ ([7, '8', -1, 1.5, null, 9]) }).get()], [7, 9]);
  const online = new PresenceStore(null, { online: [7] });
  for (const [id, on] of [['7', false], [7, 'false'], [7, undefined], [null, true], [0, true]]) online.change(id, on);
  assert.deepEqual([...online.get()], [7]);
});

test('typing: a person shows until 5 s after their last signal, in the order they started', () => {
  const c = clock();
  const typing = new TypingStore(c);
  typing.typing(7);
  c.advance(1000);
  typing.typing(8);
  assert.deepEqual(typing.get(), [7, 8]);
  c.advance(3000);
  typing.typing(7); // a new signal keeps 7 for 5 s more, in the same place
  assert.deepEqual(typing.get(), [7, 8]);
  c.advance(1999);
  assert.deepEqual(typing.get(), [7, 8], '8 signalled 4999 ms ago');
  c.advance(1);
  assert.deepEqual(typing.get(), [7], '8 goes 5 s after its signal');
  c.advance(typingHold - 2000 - 1);
  assert.deepEqual(typing.get(), [7]);
  c.advance(1);
  assert.deepEqual(typing.get(), []);
  assert.equal(c.pending(), 0);
});

test('typing: a message (or going offline) ends it at once; clear ends all', () => {
  const c = clock();
  const typing = new TypingStore(c);
  let published = 0;
  typing.subscribe(() => published++);
  typing.typing(7);
  typing.typing(7);
  typing.typing(8);
  assert.equal(published, 2, 'a repeated signal publishes nothing');
  typing.stop(7);
  assert.deepEqual(typing.get(), [8]);
  typing.stop(7);
  typing.stop(undefined);
  assert.equal(published, 3);
  typing.typing(9);
  typing.clear();
  assert.deepEqual(typing.get(), []);
  assert.equal(c.pending(), 0, 'no timer left');
  typing.typing('7');
  typing.typing(-1);
  assert.deepEqual(typing.get(), [], 'no user id, no line');
});

test('typing line: one, two, several', () => {
  assert.equal(typingText([]), '');
  assert.equal(typingText(['alice']), 'alice is typing…');
  assert.equal(typingText(['alice', 'bob']), 'alice and bob are typing…');
  assert.equal(typingText(['alice', 'bob', 'carol']), 'several people are typing…');
  assert.equal(typingText(['a', 'b', 'c', 'd', 'e']), 'several people are typing…');
});

test('typing signals: at most one every 2 s however fast the keys, none for an empty box', () => {
  const c = clock();
  const sent = [];
  let up = true;
  const sender = new TypingSender(() => {
    if (up) sent.push(c.now());
    return up;
  }, c);
  for (let i = 0; i < 100; i++) { // a key every 50 ms for 5 s
    sender.input('x'.repeat(i + 1));
    c.advance(50);
  }
  assert.deepEqual(sent, [0, typingEvery, 2 * typingEvery]);
  sender.input('   ');
  sender.input('');
  assert.equal(sent.length, 3, 'an emptied box says nothing');

  c.advance(typingEvery);
  up = false;
  sender.input('y'); // no stream: not sent, and the next key tries again
  up = true;
  c.advance(10);
  sender.input('yz');
  assert.equal(sent.at(-1), c.now());

  sender.sent(); // a message went: the next one starts at once
  c.advance(10);
  sender.input('n');
  assert.equal(sent.at(-1), c.now());
  assert.equal(sent.length, 5);
});


test('presence: a store on a client follows its presence frames, and empties when the session is anonymous', () => {
  const { client, sock } = setup({ session: sessionOf(7) });
  const online = new PresenceStore(client, { online: [7, 9] });
  client.connect();
  sock().frame({ type: 'session', session: sessionOf(7), notice: null });
  assert.deepEqual([...online.get()], [7, 9], 'the embedded set until the presence frame');
  sock().frame({ type: 'ready', lastEventId: 10 });
  sock().frame({ type: 'presence', online: [7, 12] });
  assert.deepEqual([...online.get()].sort(), [12, 7].sort());
  sock().frame({ type: 'presence-change', userId: 12, online: false });
  sock().frame({ type: 'presence-change', userId: 13, online: true });
  sock().frame({ type: 'presence-change', userId: '7', online: false });
  assert.deepEqual([...online.get()].sort(), [13, 7].sort());
  sock().frame({ type: 'session', session: null, notice: null });
  assert.equal(online.get().size, 0, 'anonymous: nobody');
  online.dispose();
  sock().frame({ type: 'presence', online: [7] });
  assert.equal(online.get().size, 0, 'disposed: it follows no more');
});
