// The browser library (web/client/tidings.js, as a node serves it at /client/tidings.js) in
// headless Chromium against a real node: each event once and in order across a server restart
// and a socket dropped mid-replay, reset, publish promises (while the node is down too, and one
// in flight when the socket drops), and the close-code table, final and retried.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { PageSet, launchBrowser, repoRoot, startServer, timeout } from './harness.js';

/** @type {import('./harness.js').Server} */
let server;
let cleanup;
/** @type {import('playwright-core').Browser} */
let browser;
const pages = new PageSet();

before(async () => {
  ({ server, cleanup } = await startServer('library'));
  browser = await launchBrowser();
});

after(async () => {
  pages.assertNoErrors();
  await browser?.close();
  await cleanup?.();
});

// A module script, as an app's, that loads the library from the node and keeps what each
// client it makes says in window.logs.
const script = `
import * as tidings from '/client/tidings.js';
window.tidings = tidings;
window.clients = {};
window.logs = {};
/** Makes a client named name, that records its events, states and sessions. */
window.make = (name, options) => {
  const c = new tidings.Tidings({ backoff: { base: 100, max: 1000 }, ...options });
  const log = { events: [], order: [], states: [], sessions: [], urls: [] };
  c.on('event', (e) => { log.events.push(e.id); log.order.push(['event', e.id]); });
  c.on('reset', (r) => log.order.push(['reset', r.lastEventId]));
  c.on('ready', (r) => log.order.push(['ready', r.lastEventId]));
  c.on('state', (s, d) => log.states.push([s, d]));
  c.on('session', (s) => log.sessions.push(s));
  window.clients[name] = c;
  window.logs[name] = log;
  return c;
};
window.loaded = true;
`;

/**
 * A page on the node's origin with the library loaded; route, when given, sees its streams.
 * The document is the node's own /healthz (a page made up by the test would not be of the
 * loopback address space, and Chromium would refuse its streams to the node).
 * @param {(ws: import('playwright-core').WebSocketRoute) => void} [route]
 */
async function libraryPage(route) {
  const context = await browser.newContext({ baseURL: server.url });
  if (route) await context.routeWebSocket(/\/api\/events/, route);
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err));
  pages.keep(page);
  page.streams = [];
  page.on('websocket', (ws) => page.streams.push(ws.url()));
  await page.goto('/healthz');
  await page.addScriptTag({ type: 'module', content: script });
  await page.waitForFunction(() => window.loaded === true);
  return page;
}

/** The log of a client in page. */
const logOf = (page, name) => page.evaluate((n) => window.logs[n], name);

/** Waits until the client name in page has handed over every id in ids. */
function waitEvents(page, name, ids, ms = 2 * timeout) {
  const last = ids.at(-1);
  return page.waitForFunction(([n, id]) => window.logs[n].events.includes(id), [name, last], { timeout: ms });
}

/** Waits until the client name in page is in state. */
function waitState(page, name, state) {
  return page.waitForFunction(([n, s]) => window.clients[n].state === s, [name, state], { timeout: 2 * timeout });
}

/** Publishes n events of type type through the API, audience everyone, and returns their ids. */
async function publishMany(n, tag) {
  const events = Array.from({ length: n }, (_, i) => ({ type: 'load', data: { tag, i }, audience: { kind: 'everyone' } }));
  return server.publish(events);
}

/** Asserts that got is every id of want, each once, in increasing order (and nothing else of them). */
function assertOnceInOrder(got, want) {
  const wanted = new Set(want);
  const mine = got.filter((id) => wanted.has(id));
  assert.deepEqual(mine, want, 'each event once, in order');
  for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], `ids increase: ${got[i - 1]} then ${got[i]}`);
}

test('each event once and in order across a server restart, the replay included', async () => {
  const page = await libraryPage();
  await page.evaluate(async () => {
    const c = window.make('a', {});
    c.connect(await c.watermark());
  });
  await waitState(page, 'a', 'live');
  const before = await publishMany(30, 'before');
  await waitEvents(page, 'a', before);

  const stopped = await server.stop(); // SIGTERM: streams close with 1001 going-away
  assert.deepEqual(stopped, { code: 0, signal: null });
  await waitState(page, 'a', 'reconnecting');
  await server.start();
  const meanwhile = await publishMany(30, 'meanwhile'); // likely before the client is back: replayed
  await waitState(page, 'a', 'live');
  const afterwards = await publishMany(30, 'after');
  await waitEvents(page, 'a', afterwards);

  const log = await logOf(page, 'a');
  assertOnceInOrder(log.events, [...before, ...meanwhile, ...afterwards]);
  assert.ok(log.states.some(([s, d]) => s === 'reconnecting' && d.code === 1001), 'closed with 1001, retried');
  assert.ok(page.streams.length >= 2, `${page.streams.length} streams`);
});

test('a socket dropped mid-replay: the next stream resumes after the last event handed over, none twice', async () => {
  const ids = await publishMany(400, 'replay');
  let streams = 0;
  const firstStream = { forwarded: 0, ready: false };
  const page = await libraryPage((ws) => {
    const n = ++streams;
    const upstream = ws.connectToServer();
    if (n > 1) return; // later streams pass untouched
    upstream.onMessage((m) => {
      if (firstStream.forwarded >= 100) return; // dropped: the rest is lost on the way
      const f = JSON.parse(String(m));
      if (f.type === 'ready') firstStream.ready = true;
      ws.send(m);
      if (f.type === 'event' && ++firstStream.forwarded === 100) {
        ws.close({ code: 1011, reason: '' });
        upstream.close();
      }
    });
  });
  await page.evaluate((start) => window.make('r', { lastEventId: start }).connect(), ids[0] - 1);
  await waitEvents(page, 'r', ids);
  const log = await logOf(page, 'r');
  assert.equal(firstStream.ready, false, 'the first stream was dropped before its ready: mid-replay');
  assert.equal(firstStream.forwarded, 100);
  assert.equal(page.streams[1], `${server.url.replace('http', 'ws')}/api/events?lastEventId=${ids[99]}`, 'resumed after the 100th');
  assertOnceInOrder(log.events, ids);
  assert.ok(log.states.some(([s, d]) => s === 'reconnecting' && d.code === 1011));
});

test('reset: a stream opened after an id the log never reached is told so, and the users store fetches again', async () => {
  const page = await libraryPage();
  const watermark = await page.evaluate(() => new window.tidings.Tidings().watermark());
  const requests = [];
  page.on('request', (r) => requests.push(`${r.method()} ${new URL(r.url()).pathname}`));
  await page.evaluate(async (start) => {
    const c = window.make('s', { lastEventId: start });
    await c.register('rita', 'password-rita');
    window.users = new window.tidings.UsersStore(c, { users: [] }); // a stale snapshot
    c.connect();
  }, watermark + 1000);
  await waitState(page, 's', 'live');
  await page.waitForFunction(() => window.users.get().some((u) => u.name === 'rita'));
  assert.ok(requests.includes('GET /api/users'), 'the store fetched its snapshot again');
  const id = await page.evaluate(() => window.clients.s.publish({ type: 'message', data: { text: 'after the reset' } }));
  await waitEvents(page, 's', [id]);
  const log = await logOf(page, 's');
  const [reset, ready, ...rest] = log.order;
  assert.equal(reset[0], 'reset');
  assert.ok(reset[1] >= watermark && reset[1] < watermark + 1000, `reset to the watermark ${reset[1]}`);
  assert.deepEqual(ready, ['ready', reset[1]]);
  assert.deepEqual(rest.at(-1), ['event', id]);
  assert.ok(id > reset[1]);
});

test('publish: resolved with the id the stream then delivers, rejected with the server\'s code', async () => {
  const page = await libraryPage();
  const got = await page.evaluate(async () => {
    const c = window.make('p', {});
    await c.register('paula', 'password-paula');
    c.connect(await c.watermark());
    const outcome = (p) => p.then((id) => ({ id }), (e) => ({ code: e.code, name: e.name, sent: e.sent, key: e.key }));
    const id = await c.publish({ type: 'message', data: { text: 'hello from the library' } });
    return {
      id,
      tooLong: await outcome(c.publish({ type: 'message', data: { text: 'x'.repeat(4001) } })),
      forbidden: await outcome(c.publish({ type: 'note', data: {} })),
    };
  });
  const stranger = await libraryPage(); // another context: no cookie
  got.anonymous = await stranger.evaluate(async () => {
    const anon = window.make('anon', {});
    anon.connect();
    await new Promise((resolve) => anon.on('ready', resolve));
    return anon.publish({ type: 'message', data: { text: 'who am I' } }).then((id) => ({ id }), (e) => ({ code: e.code }));
  });
  await waitEvents(page, 'p', [got.id]);
  assert.ok(Number.isSafeInteger(got.id) && got.id > 0);
  assert.deepEqual(got.tooLong.code, 'invalid');
  assert.equal(got.tooLong.name, 'TidingsError');
  assert.equal(got.tooLong.sent, true);
  assert.match(got.tooLong.key, /^[0-9a-f]{32}$/);
  assert.equal(got.forbidden.code, 'forbidden');
  assert.equal(got.anonymous.code, 'unauthenticated');
  const log = await logOf(page, 'p');
  assert.deepEqual(log.events.filter((id) => id === got.id), [got.id], 'delivered once');
});

test('publish while the node is down: queued and stored once it is back, in order; past the bound, refused at once', async () => {
  const page = await libraryPage();
  await page.evaluate(async () => {
    const c = window.make('q', { publishQueue: 2 });
    await c.register('quinn', 'password-quinn');
    c.connect(await c.watermark());
  });
  await waitState(page, 'q', 'live');
  await server.stop();
  await waitState(page, 'q', 'reconnecting');
  const refused = await page.evaluate(() => {
    const c = window.clients.q;
    window.queued = [1, 2].map((i) => c.publish({ type: 'message', data: { text: `written while down ${i}` } }));
    return c.publish({ type: 'message', data: { text: 'one too many' } }).then(() => null, (e) => [e.code, e.sent]);
  });
  assert.deepEqual(refused, ['offline', false]);
  await server.start();
  const ids = await page.evaluate(() => Promise.all(window.queued));
  assert.ok(ids[0] < ids[1], `stored in the order written: ${ids}`);
  await waitEvents(page, 'q', ids);
  const log = await logOf(page, 'q');
  assert.deepEqual(log.events.filter((id) => ids.includes(id)), ids, 'each delivered once');
});

test('a publish in flight when the socket drops is sent again with its key, and stored once', async () => {
  let streams = 0;
  const seen = { first: null, again: null, ackId: null };
  const page = await libraryPage((ws) => {
    const n = ++streams;
    const upstream = ws.connectToServer();
    ws.onMessage((m) => {
      const f = JSON.parse(String(m));
      if (f.type === 'publish') {
        if (seen.first === null) seen.first = f;
        else if (n > 1) seen.again = f;
      }
      upstream.send(m);
    });
    upstream.onMessage((m) => {
      const f = JSON.parse(String(m));
      if (n === 1 && f.type === 'ack') {
        // The server stored it, and the answer is lost with the socket.
        seen.ackId = f.id;
        ws.close({ code: 1011, reason: '' });
        upstream.close();
        return;
      }
      ws.send(m);
    });
  });
  const id = await page.evaluate(async () => {
    const c = window.make('k', {});
    await c.register('kim', 'password-kim');
    c.connect(await c.watermark());
    await new Promise((resolve) => c.on('ready', resolve));
    return c.publish({ type: 'message', data: { text: 'exactly once, please' } });
  });
  assert.ok(seen.ackId > 0, 'the first send was stored');
  assert.equal(id, seen.ackId, 'the promise has the id of the first, stored, send');
  assert.equal(seen.again.key, seen.first.key, 'sent again with the same key');
  assert.deepEqual(seen.again.event, seen.first.event);
  await waitEvents(page, 'k', [id]);
  const later = await publishMany(1, 'fence'); // everything before it has been delivered
  await waitEvents(page, 'k', later);
  const log = await logOf(page, 'k');
  assert.deepEqual(log.events.filter((x) => x === id), [id], 'delivered once');
  assert.equal(log.events.filter((x) => x > id && x < later[0]).length, 0, 'no second copy was stored');
});

test('the close-code table: final codes stay offline, the others come back as the table says', async () => {
  /** @type {{code: number, reason: string}|null} the close the next stream gets after its ready */
  let plan = null;
  const page = await libraryPage((ws) => {
    const upstream = ws.connectToServer();
    const mine = plan;
    plan = null;
    upstream.onMessage((m) => {
      ws.send(m);
      if (mine && JSON.parse(String(m)).type === 'ready') {
        ws.close({ code: mine.code, reason: mine.reason });
        upstream.close();
      }
    });
  });
  const cases = [
    // code, reason, final?, the delay range of the reconnect, whether /api/session is asked first
    [1000, '', 'final'],
    [1008, '', 'fatal'],
    [1009, '', 'fatal'],
    [1001, 'going-away', 'retry', [0, 200]],
    [1011, '', 'retry', [0, 200]],
    [4001, 'session-expired', 'retry', [0, 0], true],
    [4002, 'session-rotated', 'retry', [0, 0]],
    [4003, 'access-changed', 'retry', [0, 0], true],
    [4003, 'session-taken', 'retry', [0, 0], true],
    [4004, 'too-slow', 'retry', [250, 1000]],
  ];
  for (const [i, [code, reason, kind, delay, asks]] of cases.entries()) {
    const name = `c${i}`;
    plan = { code, reason };
    await page.evaluate((n) => window.make(n, {}).connect(), name);
    if (kind !== 'retry') {
      await page.waitForFunction((n) => window.logs[n].states.some(([s]) => s === 'offline'), name);
      const log = await logOf(page, name);
      assert.deepEqual(log.states.at(-1), ['offline', { code, reason, ...(kind === 'fatal' ? { fatal: true } : {}) }], `${code}`);
      assert.equal(await page.evaluate((n) => window.clients[n].state, name), 'offline');
    } else {
      // Back: a second ready after the close.
      await page.waitForFunction((n) => window.logs[n].order.filter(([t]) => t === 'ready').length === 2, name);
      const log = await logOf(page, name);
      const retry = log.states.find(([s, d]) => s === 'reconnecting' && d.retryIn !== undefined);
      assert.equal(retry[1].code, code, `${code}: the close`);
      assert.ok(retry[1].retryIn >= delay[0] && retry[1].retryIn <= delay[1], `${code}: retried after ${retry[1].retryIn} ms, want ${delay}`);
      const asked = log.sessions.filter((s) => s.source === 'http');
      assert.deepEqual(asked.map((s) => [s.closeCode, s.closeReason]), asks ? [[code, reason]] : [], `${code}: /api/session asked`);
    }
    await page.evaluate((n) => window.clients[n].disconnect(), name);
  }
});

test('a real logout elsewhere: the stream closes 4003, the client asks who it is, and comes back anonymous', async () => {
  const page = await libraryPage();
  await page.evaluate(async () => {
    const c = window.make('l', {});
    await c.register('lou', 'password-lou');
    c.connect(await c.watermark());
  });
  await waitState(page, 'l', 'live');
  // Another client of the same page (the same cookie) signs out.
  await page.evaluate(() => new window.tidings.Tidings().logout());
  await page.waitForFunction(() => window.logs.l.sessions.some((s) => s.source === 'http'));
  await page.waitForFunction(() => window.logs.l.order.filter(([t]) => t === 'ready').length === 2);
  const log = await logOf(page, 'l');
  const asked = log.sessions.find((s) => s.source === 'http');
  assert.deepEqual([asked.closeCode, asked.closeReason, asked.session], [4003, 'logout', null]);
  assert.equal(log.sessions.at(-1).session, null, 'the new stream is anonymous');
  assert.equal(await page.evaluate(() => window.clients.l.account), null);
});

test("the guide's page (docs/clients.md) shows the stream's events, as written there", async () => {
  const guide = await readFile(path.join(repoRoot, 'docs', 'clients.md'), 'utf8');
  const html = /```html\n([\s\S]*?)\n```/.exec(guide)?.[1];
  assert.ok(html?.includes("from '/client/tidings.js'"), 'the guide has its page');
  const page = await (await browser.newContext({ baseURL: server.url })).newPage();
  page.setDefaultTimeout(timeout);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err));
  pages.keep(page);
  await page.goto('/healthz'); // a document of the node's origin, written over with the guide's
  await page.setContent(html);
  await page.locator('#state', { hasText: /^live$/ }).waitFor();
  const [id] = await server.publish([{ type: 'guide-note', data: { n: 1 }, audience: { kind: 'everyone' } }]);
  await page.locator('#events li', { hasText: `${id} guide-note {"n":1}` }).waitFor();
  assert.equal(await page.locator('#events li').count(), 1, 'only what came after the watermark');
});
