// An app on another origin, in Chromium, on bearer sessions (issue 12): a static server on
// another port of 127.0.0.1 serves an app that imports the PACKED library (the tidings.js of
// the tarball `npm pack` makes in web/client), and the node lists that origin (and its own) in
// TIDINGS_ALLOWED_ORIGINS. The app signs in with a bearer session, streams, publishes, sees
// presence, survives a restart of the node, rotates its token on the stream (4002), and is told
// session-taken when a copy of an old token comes back. A third origin, not listed, is refused.
//
// The steps share one node and one app page and run in order.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { buildServer, freePort, here, launchBrowser, Server, tempDir, timeout, until } from './harness.js';

const run = promisify(execFile);

/** Rotation and grace of the node: short, so that the app rotates its token while it runs. */
const rotateMs = 4000;
const graceMs = 1000;

let dir;
/** @type {Server} */
let server;
/** The packed library, as a web app installs it. */
let packed;
let appSite;
let strangerSite;
/** @type {import('playwright-core').Browser} */
let browser;
/** The app page of alice, and what Chromium saw of its streams' handshakes. */
let app;
const contexts = [];

// The app: one client on a bearer session, its token kept in localStorage (one holder), and
// everything it hears in window.log, in the order it heard it.
const appHtml = `<!doctype html>
<meta charset="utf-8">
<title>a tidings app on its own origin</title>
<p id="state">offline</p>
<script type="module">
  import { Tidings, PresenceStore } from './tidings.js';

  const node = new URLSearchParams(location.search).get('node');
  const log = { order: [], events: [], states: [], sessions: [], tokens: [], presence: [] };
  const client = new Tidings({
    baseUrl: node,
    bearer: true,
    token: localStorage.getItem('tidings-token'),
    onToken: (t) => {
      log.tokens.push(t);
      if (t === null) localStorage.removeItem('tidings-token');
      else localStorage.setItem('tidings-token', t);
    },
    backoff: { base: 100, max: 1000 },
  });
  const presence = new PresenceStore(client);
  presence.subscribe((s) => log.presence.push([...s]));
  client.on('event', (e) => {
    log.events.push({ id: e.id, type: e.event.type, data: e.event.data });
    log.order.push(['event', e.id]);
  });
  client.on('ready', (r) => log.order.push(['ready', r.lastEventId]));
  client.on('reset', (r) => log.order.push(['reset', r.lastEventId]));
  client.on('token', (t) => log.order.push(['token', t]));
  client.on('state', (s, d) => {
    document.getElementById('state').textContent = s;
    log.states.push([s, d]);
    log.order.push(['state', s, d]);
  });
  client.on('session', (s) => {
    log.sessions.push(s);
    log.order.push(['session', s.source, s.session?.id ?? null, s.session?.account?.name ?? null, s.notice, s.closeReason ?? null]);
  });
  window.app = { client, presence, log };
  window.loaded = true;
</script>
`;

/** A static server on a port of 127.0.0.1 that serves the app and the packed library. */
async function staticSite() {
  const port = await freePort();
  const srv = http.createServer((req, res) => {
    const { pathname } = new URL(req.url, 'http://x');
    const files = {
      '/': ['text/html; charset=utf-8', appHtml],
      '/tidings.js': ['text/javascript; charset=utf-8', packed],
    };
    const file = files[pathname];
    if (!file) {
      res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': file[0], 'Cache-Control': 'no-store' }).end(file[1]);
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(port, '127.0.0.1', resolve);
  });
  return {
    origin: `http://127.0.0.1:${port}`,
    close: () => new Promise((resolve) => {
      srv.closeAllConnections();
      srv.close(resolve);
    }),
  };
}

before(async () => {
  dir = await tempDir('tidings-xorigin-');
  // The package as an app gets it: packed, then unpacked.
  await run('npm', ['pack', '--silent', '--pack-destination', dir], { cwd: path.join(here, '..', 'client') });
  const tarball = (await readdir(dir)).find((f) => /^tidings-client-.*\.tgz$/.test(f));
  assert.ok(tarball, 'npm pack made the tarball');
  await run('tar', ['-xzf', path.join(dir, tarball), '-C', dir]);
  packed = await readFile(path.join(dir, 'package', 'tidings.js'), 'utf8');

  [appSite, strangerSite] = await Promise.all([staticSite(), staticSite()]);
  const bin = await buildServer(dir);
  const port = await freePort();
  server = new Server({
    bin, dataDir: path.join(dir, 'data'), port, name: 'xorigin',
    env: {
      // A list replaces the default "own origin": the node's own is listed too.
      TIDINGS_ALLOWED_ORIGINS: `http://127.0.0.1:${port},${appSite.origin}`,
      TIDINGS_SESSION_ROTATE: `${rotateMs}ms`,
      TIDINGS_SESSION_GRACE: `${graceMs}ms`,
      TIDINGS_PRESENCE_GRACE: '500ms',
    },
  });
  await server.start();
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await server?.stop();
  await Promise.all([appSite?.close(), strangerSite?.close()]);
  if (dir) await rm(dir, { recursive: true, force: true });
});

/**
 * Opens the app from site in a new context (its own storage). page.handshakes has the request
 * headers of every stream's handshake, page.streams the URLs, page.errors what went wrong.
 */
async function openApp(site, { strict = true } = {}) {
  const context = await browser.newContext();
  contexts.push(context);
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err));
  page.on('console', (msg) => {
    // The browser logs failed connections while the node is down; a stranger's refusals too.
    if (strict && msg.type() === 'error' && !/^(WebSocket connection to .* failed|Failed to load resource)/.test(msg.text())) {
      page.errors.push(new Error(`console: ${msg.text()}`));
    }
  });
  page.streams = [];
  page.on('websocket', (ws) => page.streams.push(ws.url()));
  page.handshakes = [];
  const cdp = await context.newCDPSession(page);
  cdp.on('Network.webSocketWillSendHandshakeRequest', (e) => page.handshakes.push(e.request.headers));
  await cdp.send('Network.enable');
  await page.goto(`${site.origin}/?node=${encodeURIComponent(server.url)}`);
  await page.waitForFunction(() => window.loaded === true);
  return page;
}

const logOf = (page) => page.evaluate(() => window.app.log);
const waitState = (page, state) => page.waitForFunction((s) => window.app.client.state === s, state, { timeout: 2 * timeout });
const waitEvent = (page, id) => page.waitForFunction((i) => window.app.log.events.some((e) => e.id === i), id, { timeout: 2 * timeout });

/** The subprotocols a handshake offered. */
const offered = (headers) => (headers['Sec-WebSocket-Protocol'] ?? headers['sec-websocket-protocol'] ?? '').split(/,\s*/);

/** GET /api/session from node (no Origin) with a bearer token. */
async function sessionOf(token) {
  const res = await fetch(`${server.url}/api/session`, { headers: { Authorization: `Bearer ${token}` } });
  return { status: res.status, next: res.headers.get('Tidings-Session-Token'), body: await res.json() };
}

test('1. the app signs in with a bearer session, streams, publishes and sees its own event', async () => {
  app = await openApp(appSite);
  assert.equal(packed, await readFile(path.join(here, '..', 'client', 'tidings.js'), 'utf8'), 'the packed module is the source');
  const session = await app.evaluate(async () => {
    const c = window.app.client;
    const s = await c.register('alice', 'password-alice');
    c.connect(await c.watermark());
    return s;
  });
  assert.equal(session.account.name, 'alice');
  assert.equal(session.token, undefined, 'the token is kept by the client, not handed back with the session');
  const token = await app.evaluate(() => window.app.client.token);
  assert.match(token, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(await app.evaluate(() => localStorage.getItem('tidings-token')), token, 'onToken kept it');
  const cookies = (await app.context().cookies(server.url)).map((c) => c.name);
  assert.ok(!cookies.some((n) => /session/.test(n)), `no session cookie, only ${cookies}`);
  await waitState(app, 'live');

  const id = await app.evaluate(() => window.app.client.publish({ type: 'message', data: { text: 'hello from another origin' } }));
  await waitEvent(app, id);
  const log = await logOf(app);
  const mine = log.events.filter((e) => e.id === id);
  assert.equal(mine.length, 1, 'delivered once');
  assert.deepEqual([mine[0].type, mine[0].data.userName, mine[0].data.text], ['message', 'alice', 'hello from another origin']);
  const fromStream = log.sessions.filter((s) => s.source === 'stream').at(-1);
  assert.equal(fromStream.session.account.name, 'alice', 'the stream is signed in');

  // The token travelled as a subprotocol beside "tidings", never in the URL.
  const last = app.handshakes.at(-1);
  assert.ok(offered(last).includes('tidings'));
  assert.ok(offered(last).includes(`tidings-bearer.${await app.evaluate(() => window.app.client.token)}`));
  for (const url of app.streams) assert.ok(!url.includes(token), `no token in ${url}`);
});

test('2. the app sees presence: a second user on another page goes online, then offline', async () => {
  const aliceId = await app.evaluate(() => window.app.client.account.id);
  const bob = await openApp(appSite);
  const bobId = await bob.evaluate(async () => {
    const c = window.app.client;
    const s = await c.register('bob', 'password-bob');
    c.connect();
    return s.account.id;
  });
  await waitState(bob, 'live');
  await app.waitForFunction((id) => window.app.presence.has(id), bobId);
  await bob.waitForFunction(([a, b]) => window.app.presence.has(a) && window.app.presence.has(b), [aliceId, bobId]);
  // GET /api/presence with the bearer token agrees (it reads the database, which the node
  // writes its view to shortly after the stream's frames).
  const both = JSON.stringify([aliceId, bobId].sort((x, y) => x - y));
  await until('GET /api/presence to list both', async () => JSON.stringify(await app.evaluate(() => window.app.client.presence())) === both);
  assert.deepEqual(bob.errors.map(String), []);
  await bob.context().close();
  await app.waitForFunction((id) => !window.app.presence.has(id), bobId);
  assert.ok(await app.evaluate(() => window.app.presence.has(window.app.client.account.id)), 'alice is still online');
});

test('3. the app survives a restart of the node: every event once, in order, its queued publishes too', async () => {
  const everyone = (tag, n) => Array.from({ length: n }, (_, i) => ({ type: 'load', data: { tag, i }, audience: { kind: 'everyone' } }));
  await waitState(app, 'live');
  const before = await server.publish(everyone('before', 20));
  await waitEvent(app, before.at(-1));

  assert.deepEqual(await server.stop(), { code: 0, signal: null });
  await waitState(app, 'reconnecting');
  // Written by the app while the node is down: they wait in the client's queue.
  await app.evaluate(() => {
    window.queued = [1, 2].map((i) => window.app.client.publish({ type: 'message', data: { text: `written while down ${i}` } }));
  });
  await server.start();
  const meanwhile = await server.publish(everyone('meanwhile', 20)); // most likely replayed
  const queued = await app.evaluate(() => Promise.all(window.queued));
  await waitState(app, 'live');
  const afterwards = await server.publish(everyone('after', 20));
  await waitEvent(app, afterwards.at(-1));

  const log = await logOf(app);
  const ids = log.events.map((e) => e.id);
  for (let i = 1; i < ids.length; i++) assert.ok(ids[i] > ids[i - 1], `ids increase: ${ids[i - 1]} then ${ids[i]}`);
  const want = [...before, ...meanwhile, ...queued, ...afterwards].sort((a, b) => a - b);
  assert.deepEqual(ids.filter((id) => want.includes(id)), want, 'each event once, in order');
  assert.ok(log.states.some(([s, d]) => s === 'reconnecting' && d.code === 1001), 'closed with 1001 going-away, and retried');
  assert.equal(await app.evaluate(() => window.app.client.account?.name), 'alice', 'still signed in');
});

/**
 * Waits for the next rotation of the app's token on its stream: a token frame, then the 4002
 * close, then a stream that is live again. Returns the order log's entries from the start.
 */
async function nextStreamRotation(page) {
  const start = (await logOf(page)).order.length;
  await page.waitForFunction((from) => {
    const o = window.app.log.order.slice(from);
    const t = o.findIndex(([k]) => k === 'token');
    const c = o.findIndex(([k, s, d], i) => i > t && k === 'state' && s === 'reconnecting' && d.code === 4002);
    return t >= 0 && c > t && o.some(([k], i) => i > c && k === 'ready');
  }, start, { timeout: 3 * rotateMs + timeout });
  return (await logOf(page)).order.slice(start);
}

test('4. the app rotates its token on the stream: the successor is kept, the stream closes 4002 and comes back signed in', async () => {
  await waitState(app, 'live');
  const old = await app.evaluate(() => window.app.client.token);
  const handshakes = app.handshakes.length;
  const order = await nextStreamRotation(app);
  const t = order.findIndex(([k]) => k === 'token');
  const close = order.findIndex(([k, s, d], i) => i > t && k === 'state' && s === 'reconnecting' && d.code === 4002);
  const successor = order[t][1];
  assert.notEqual(successor, old, 'a new token');
  assert.match(successor, /^[A-Za-z0-9_-]{43}$/);
  assert.deepEqual(order[close].slice(1), ['reconnecting', { code: 4002, reason: 'session-rotated', retryIn: 0 }],
    'the 4002 came after the token, and the app reconnected at once');
  const back = order.findLast(([k, src], i) => i > close && k === 'session' && src === 'stream');
  assert.equal(back[3], 'alice', 'the new stream is signed in');
  assert.ok(order.findIndex((e) => e === back) < order.findLastIndex(([k]) => k === 'ready'));
  assert.equal(await app.evaluate(() => localStorage.getItem('tidings-token')), await app.evaluate(() => window.app.client.token), 'kept');
  // The reconnection offered the successor, not the old token.
  const later = app.handshakes.slice(handshakes).map(offered);
  assert.ok(later.some((p) => p.includes(`tidings-bearer.${successor}`)), 'the successor was offered');
  assert.ok(later.at(-1).every((p) => p !== `tidings-bearer.${old}`), 'the last stream does not offer the old token');
});

test('5. a copy of an old token used after the rotation: the app is told session-taken, and forgets its token', async () => {
  await waitState(app, 'live');
  const copy = await app.evaluate(() => window.app.client.token); // what a thief copied
  await nextStreamRotation(app); // the app's successor was presented by its reconnection
  const start = (await logOf(app)).order.length;
  // The copy, from node: within the grace it is still alice; after it, a theft.
  const taken = await until('the copy to be refused as taken', async () => {
    const s = await sessionOf(copy);
    if (s.body.session !== null) {
      assert.equal(s.body.session.account.name, 'alice');
      return null;
    }
    return s;
  }, graceMs + timeout);
  assert.deepEqual(taken.body, { session: null, notice: 'session-taken' });
  assert.equal(taken.next, '', 'the copy is told to forget its token');

  await app.waitForFunction((from) => window.app.log.order.slice(from).some(([k, src, , , notice]) => k === 'session' && src === 'http' && notice === 'session-taken'),
    start, { timeout: 2 * timeout });
  await waitState(app, 'live');
  const log = await logOf(app);
  const order = log.order.slice(start);
  assert.ok(order.some(([k, s, d]) => k === 'state' && s === 'reconnecting' && d.code === 4003 && d.reason === 'session-taken'),
    'the stream closed 4003 session-taken');
  const told = log.sessions.filter((s) => s.source === 'http').at(-1);
  assert.deepEqual(told, { session: null, notice: 'session-taken', source: 'http', closeCode: 4003, closeReason: 'session-taken' });
  assert.equal(log.tokens.at(-1), null, 'onToken(null): the token is forgotten');
  assert.equal(await app.evaluate(() => localStorage.getItem('tidings-token')), null);
  assert.equal(await app.evaluate(() => window.app.client.account), null, 'anonymous now');
  assert.equal(order.filter(([k, src]) => k === 'session' && src === 'stream').at(-1)[2], null, 'the new stream is anonymous');
  assert.deepEqual(app.handshakes.at(-1) && offered(app.handshakes.at(-1)).filter((p) => p.startsWith('tidings-bearer.')), [],
    'the new stream offers no token');
  // The app signs in again, with a bearer session.
  const again = await app.evaluate(async () => (await window.app.client.login('alice', 'password-alice')).account.name);
  assert.equal(again, 'alice');
  await app.waitForFunction(() => window.app.client.state === 'live' && window.app.client.account?.name === 'alice');
  assert.deepEqual(app.errors.map(String), [], 'no errors in the app');
});

test('6. a rotation at the upgrade (the app was away past rotatesAt): the token frame is kept and its successor presented, so an old copy is taken', async () => {
  await waitState(app, 'live');
  const copy = await app.evaluate(() => window.app.client.token);
  const { id: oldId, rotatesAt } = await app.evaluate(() => window.app.client.session);
  await app.evaluate(() => window.app.client.disconnect());
  await until('the session to be due', () => Date.now() > Date.parse(rotatesAt) + 100, rotateMs + timeout);
  const presented = [];
  app.on('request', (r) => {
    if (new URL(r.url()).pathname === '/api/session') presented.push(r.headers().authorization ?? null);
  });
  const start = (await logOf(app)).order.length;
  await app.evaluate(() => window.app.client.connect());
  await app.waitForFunction((from) => window.app.log.order.slice(from).some(([k]) => k === 'ready'), start);
  const order = (await logOf(app)).order.slice(start);
  const session = order.findIndex(([k, src]) => k === 'session' && src === 'stream');
  const token = order.findIndex(([k]) => k === 'token');
  assert.ok(session >= 0 && token > session, 'the session frame, then the token frame');
  assert.notEqual(order[session][2], oldId, 'the session frame shows the successor session');
  assert.equal(order[session][3], 'alice');
  const successor = order[token][1];
  assert.ok(successor !== copy && /^[A-Za-z0-9_-]{43}$/.test(successor), 'a new token, kept');
  assert.equal(await app.evaluate(() => localStorage.getItem('tidings-token')), successor);
  // The client presents the successor at once (docs/clients.md), not the token it had.
  await until('the successor to be presented with GET /api/session', () => presented.includes(`Bearer ${successor}`));
  assert.ok(!presented.includes(`Bearer ${copy}`), `the old token was sent to /api/session: ${presented}`);

  const from = (await logOf(app)).order.length;
  const taken = await until('the copy to be refused as taken', async () => {
    const s = await sessionOf(copy);
    return s.body.session === null ? s : null;
  }, graceMs + timeout);
  assert.deepEqual(taken.body, { session: null, notice: 'session-taken' }, 'a theft, not a lost response');
  await app.waitForFunction((i) => window.app.log.order.slice(i).some(([k, src, , , notice]) => k === 'session' && src === 'http' && notice === 'session-taken'), from);
  assert.equal(await app.evaluate(() => window.app.client.token), null);
  assert.equal(await app.evaluate(async () => (await window.app.client.login('alice', 'password-alice')).account.name), 'alice');
  await app.waitForFunction(() => window.app.client.state === 'live' && window.app.client.account?.name === 'alice');
  assert.deepEqual(app.errors.map(String), [], 'no errors in the app');
});

/** A raw WebSocket upgrade of /api/events from node; resolves with the answer's status (101 when upgraded). */
function upgrade(headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(`${server.url}/api/events`, {
      headers: {
        Connection: 'Upgrade', Upgrade: 'websocket', 'Sec-WebSocket-Version': '13',
        'Sec-WebSocket-Key': randomBytes(16).toString('base64'), ...headers,
      },
    });
    req.on('upgrade', (res, socket) => {
      socket.destroy();
      resolve({ status: res.statusCode, headers: res.headers });
    });
    req.on('response', (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

test('7. a third origin, not listed, is refused: no CORS, 403 forbidden-origin on a bearer login, no stream', async () => {
  const stranger = await openApp(strangerSite, { strict: false });
  const got = await stranger.evaluate(async (node) => {
    const c = window.app.client;
    const outcome = (p) => p.then((v) => ({ ok: v }), (e) => ({ name: e.name, code: e.code ?? null }));
    return {
      fetch: await outcome(fetch(`${node}/api/last-event-id`).then((r) => r.status)),
      login: await outcome(c.login('alice', 'password-alice')),
    };
  }, server.url);
  assert.deepEqual(got.fetch, { name: 'TypeError', code: null }, 'the browser blocked the answer: it had no CORS headers');
  assert.deepEqual(got.login, { name: 'TidingsError', code: 'network' }, 'the login never reached the app');
  assert.equal(await stranger.evaluate(() => window.app.client.token), null);
  // Its stream is refused at the upgrade, attempt after attempt.
  await stranger.evaluate(() => window.app.client.connect());
  await stranger.waitForFunction(() => window.app.log.states.filter(([s, d]) => s === 'reconnecting' && d.code === 1006).length >= 2);
  const log = await logOf(stranger);
  assert.ok(!log.states.some(([s]) => s === 'live'), 'never live');
  assert.deepEqual(log.sessions, [], 'no session frame: no stream opened');
  assert.ok(stranger.streams.length >= 2, 'it tried');
  await stranger.evaluate(() => window.app.client.disconnect());
  assert.deepEqual(stranger.errors.map(String), []);

  // What the node answered it, asked from node with the same Origin; the listed app's origin beside it.
  const as = (origin) => ({ Origin: origin });
  for (const [origin, listed] of [[strangerSite.origin, false], [appSite.origin, true]]) {
    const get = await fetch(`${server.url}/api/last-event-id`, { headers: as(origin) });
    assert.equal(get.headers.get('Access-Control-Allow-Origin'), listed ? origin : null, `${origin}: GET`);
    assert.match(get.headers.get('Vary') ?? '', /Origin/);
    const pre = await fetch(`${server.url}/api/auth/login`, {
      method: 'OPTIONS',
      headers: { ...as(origin), 'Access-Control-Request-Method': 'POST', 'Access-Control-Request-Headers': 'authorization, content-type' },
    });
    assert.equal(pre.headers.get('Access-Control-Allow-Origin'), listed ? origin : null, `${origin}: preflight`);
    assert.equal(pre.headers.get('Access-Control-Allow-Methods') !== null, listed, `${origin}: preflight methods`);
    const login = await fetch(`${server.url}/api/auth/login`, {
      method: 'POST',
      headers: { ...as(origin), 'Content-Type': 'application/json' },
      body: JSON.stringify({ name: 'alice', password: 'password-alice', bearer: true }),
    });
    const body = await login.json();
    if (listed) {
      assert.equal(login.status, 200, `${origin}: login`);
      assert.match(body.token, /^[A-Za-z0-9_-]{43}$/);
      assert.equal(login.headers.get('Access-Control-Allow-Origin'), origin);
    } else {
      assert.equal(login.status, 403, `${origin}: login`);
      assert.equal(body.error.code, 'forbidden-origin');
      assert.equal(login.headers.get('Access-Control-Allow-Origin'), null);
      assert.equal(body.token, undefined);
    }
    const ws = await upgrade({ ...as(origin), 'Sec-WebSocket-Protocol': 'tidings.v1' });
    assert.equal(ws.status, listed ? 101 : 403, `${origin}: the stream's upgrade`);
    if (!listed) assert.equal(JSON.parse(ws.body).error.code, 'forbidden-origin');
  }
});
