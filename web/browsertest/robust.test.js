// The page under real networks and hands (issue 13 item 9), in headless Chromium against the
// real server: forms sent before the scripts ran, typing before hydration, the network going
// away and back, impatient Send keys, errors in words, a refetch that fails, and local times.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { PageSet, launchBrowser, live, register, startServer, timeout, until } from './harness.js';

/** @type {import('./harness.js').Server} */
let server;
let cleanup;
/** @type {import('playwright-core').Browser} */
let browser;
const pages = new PageSet();

before(async () => {
  ({ server, cleanup } = await startServer('robust'));
  browser = await launchBrowser();
});

after(async () => {
  pages.assertNoErrors();
  await browser?.close();
  await cleanup?.();
});

/** A page on the front page, live, whose errors are checked at the end. */
const page = (opts) => pages.open(browser, server, opts);

/**
 * A new context whose every request is recorded as "METHOD URL", with a page in it that has
 * not loaded anything yet.
 * @param {import('playwright-core').BrowserContextOptions} [opts]
 */
async function recordedContext(opts = {}) {
  const context = await browser.newContext({ baseURL: server.url, colorScheme: 'light', ...opts });
  /** @type {string[]} */
  const requests = [];
  context.on('request', (r) => requests.push(`${r.method()} ${r.url()}`));
  const p = await context.newPage();
  p.setDefaultTimeout(timeout);
  return { context, page: p, requests };
}

test('a form sent before the scripts ran puts nothing in a URL, and comes back to the page', async () => {
  const { context, page: p, requests } = await recordedContext();
  await context.route('**/*.js', (route) => route.abort()); // the scripts never arrive
  await p.goto('/');
  const secret = 'hunter2-never-in-a-url';
  for (const [form, submit] of [['sign-in', 'click'], ['register', 'Enter']]) {
    await p.fill(`#${form}-name`, 'early');
    await p.fill(`#${form}-password`, secret);
    const back = p.waitForResponse((r) => r.request().method() === 'GET' && new URL(r.url()).pathname === '/');
    if (submit === 'click') await p.click(`#${form} button[type=submit]`);
    else await p.press(`#${form}-password`, 'Enter');
    assert.equal((await back).status(), 200, 'the 303 leads back to the page');
    await p.locator('#sign-in').waitFor();
  }
  // Signed in (by the API), the composer and rename forms, before their scripts, too.
  const res = await context.request.post('/api/auth/register', { data: { name: 'early', password: secret } });
  assert.equal(res.status(), 201);
  await p.goto('/');
  await p.fill('#composer-text', 'typed before the scripts came');
  let back = p.waitForResponse((r) => r.request().method() === 'GET' && new URL(r.url()).pathname === '/');
  await p.click('#composer button[type=submit]');
  await back;
  await p.fill('#rename-name', 'renamed-early');
  back = p.waitForResponse((r) => r.request().method() === 'GET' && new URL(r.url()).pathname === '/');
  await p.press('#rename-name', 'Enter');
  await back;
  await p.locator('#account .account-name', { hasText: /^early$/ }).waitFor(); // nothing was done

  const posts = requests.filter((r) => r.startsWith('POST '));
  assert.deepEqual(posts, Array(4).fill(`POST ${server.url}/`), 'each form posted to the page');
  for (const r of requests) {
    const u = new URL(r.slice(r.indexOf(' ') + 1));
    assert.equal(u.search, '', `no query string: ${r}`);
    assert.ok(!r.includes(secret) && !r.includes('password'), `no password in ${r}`);
  }
  await context.close();
});

/**
 * Holds the page's main script until the returned release() is called.
 * @param {import('playwright-core').BrowserContext} context
 */
async function holdScript(context) {
  /** @type {() => void} */
  let release = () => {};
  const released = new Promise((resolve) => {
    release = () => resolve(undefined);
  });
  let asked = false;
  await context.route('**/static/app.js', async (route) => {
    asked = true;
    await released;
    await route.continue();
  });
  return { release, asked: () => asked };
}

test('hydration keeps the server-rendered page and what was typed before the scripts ran', async () => {
  // Anonymous: half a sign-in typed while the script is on its way.
  const { context, page: p, requests } = await recordedContext();
  p.errors = [];
  p.on('pageerror', (err) => p.errors.push(err));
  pages.keep(p);
  const res = await context.request.post('/api/auth/register', { data: { name: 'hydra', password: 'password-hydra' } });
  assert.equal(res.status(), 201);
  await context.request.post('/api/auth/logout');
  let held = await holdScript(context);
  await p.goto('/', { waitUntil: 'commit' });
  await until('the script asked for', () => held.asked());
  await p.locator('#sign-in-name').pressSequentially('hydra');
  await p.locator('#sign-in-password').pressSequentially('password-hydra');
  await p.evaluate(() => {
    /** @type {any} */ (window).serverForms = [...document.querySelectorAll('#main form')];
  });
  held.release();
  await live(p);
  const anon = await p.evaluate(() => ({
    same: /** @type {any} */ (window).serverForms.every((/** @type {Element} */ f) => f.isConnected),
    name: /** @type {HTMLInputElement} */ (document.getElementById('sign-in-name')).value,
    password: /** @type {HTMLInputElement} */ (document.getElementById('sign-in-password')).value,
    focused: document.activeElement?.id,
  }));
  assert.deepEqual(anon, { same: true, name: 'hydra', password: 'password-hydra', focused: 'sign-in-password' });
  await p.press('#sign-in-password', 'Enter'); // by the script now: no page load
  await p.locator('#account .account-name', { hasText: /^hydra$/ }).waitFor();
  assert.ok(!requests.some((r) => r.startsWith('POST ') && new URL(r.slice(5)).pathname === '/'), 'signed in by the script');

  // Signed in: a message and a new name half typed.
  await context.unrouteAll();
  held = await holdScript(context);
  await p.goto('/', { waitUntil: 'commit' });
  await until('the script asked for', () => held.asked());
  await p.locator('#rename-name').fill('hydra-two');
  await p.locator('#composer-text').pressSequentially('a thought, half');
  await p.evaluate(() => {
    /** @type {any} */ (window).serverNodes = ['messages', 'users', 'composer', 'composer-text', 'rename-name', 'typing']
      .map((id) => document.getElementById(id));
  });
  held.release();
  await live(p);
  await p.locator('#users li.user[data-online="true"]').first().waitFor(); // the stream's presence, drawn
  const signed = await p.evaluate(() => ({
    same: /** @type {any} */ (window).serverNodes.every((/** @type {Element} */ e) => e.isConnected),
    text: /** @type {HTMLTextAreaElement} */ (document.getElementById('composer-text')).value,
    name: /** @type {HTMLInputElement} */ (document.getElementById('rename-name')).value,
    focused: document.activeElement?.id,
  }));
  assert.deepEqual(signed, { same: true, text: 'a thought, half', name: 'hydra-two', focused: 'composer-text' });
  await p.locator('#composer-text').pressSequentially(' and whole');
  await p.press('#composer-text', 'Enter'); // the adopted composer sends through the stream
  await p.locator('#messages .message', { hasText: 'a thought, half and whole' }).waitFor();
  assert.equal(await p.inputValue('#composer-text'), '');
  await context.close();
});

/**
 * A context whose streams pass through a proxy in the test: hold() keeps the page's publish
 * frames back until release(); inject(frame) sends the page a frame as if from the server;
 * drop(fn) keeps back the server's frames for which fn is true.
 */
async function proxiedContext(opts = {}) {
  const { context, page: p, requests } = await recordedContext(opts);
  p.errors = [];
  p.on('pageerror', (err) => p.errors.push(err));
  p.on('console', (msg) => {
    if (msg.type() === 'error' && !/^(WebSocket connection to .* failed|Failed to load resource)/.test(msg.text())) {
      p.errors.push(new Error(`console: ${msg.text()}`));
    }
  });
  pages.keep(p);
  const proxy = {
    holding: false,
    /** @type {(() => void)[]} */ held: [],
    /** @type {any[]} the page's publish frames, as sent */ publishes: [],
    /** @type {(frame: any) => boolean} */ dropping: () => false,
    /** @type {((frame: any) => void)|null} */ inject: null,
    hold() {
      this.holding = true;
    },
    release() {
      this.holding = false;
      for (const f of this.held.splice(0)) f();
    },
  };
  await context.routeWebSocket(/\/api\/events/, (ws) => {
    const real = ws.connectToServer();
    ws.onMessage((m) => {
      const f = JSON.parse(String(m));
      if (f.type !== 'publish') return real.send(m);
      proxy.publishes.push(f);
      if (proxy.holding) proxy.held.push(() => real.send(m));
      else real.send(m);
    });
    real.onMessage((m) => {
      if (!proxy.dropping(JSON.parse(String(m)))) ws.send(m);
    });
    proxy.inject = (f) => ws.send(JSON.stringify(f));
  });
  return { context, page: p, requests, proxy };
}

/** The messages with text in the state a fresh render of the page embeds for the context's session. */
async function storedMessages(context, text) {
  const html = await (await context.request.get('/')).text();
  const state = JSON.parse(/<script type="application\/json" id="tidings-state">(.*?)<\/script>/s.exec(html)[1]);
  return state.messages.filter((m) => m.event.data.text === text);
}

test('Send sends a message once: double click, Enter twice, and Enter while it is on its way', async () => {
  const { context, page: p, proxy } = await proxiedContext();
  await p.goto('/');
  await register(p, 'eager');
  proxy.hold();
  await p.fill('#composer-text', 'once, please');
  await p.dblclick('#composer button[type=submit]');
  await p.press('#composer-text', 'Enter');
  await p.press('#composer-text', 'Enter');
  await p.locator('#composer .status', { hasText: 'Sending…' }).waitFor();
  await until('the publish at the proxy', () => proxy.publishes.length >= 1);
  proxy.release();
  await p.locator('#composer .status.ok').waitFor();
  await p.click('#composer button[type=submit]'); // the composer is empty now: nothing to send
  // A marker after it: once it is stored, every publish before it on the stream was answered.
  await p.fill('#composer-text', 'marker');
  await p.press('#composer-text', 'Enter');
  await p.locator('#messages .message', { hasText: 'marker' }).waitFor();
  assert.equal((await storedMessages(context, 'once, please')).length, 1, 'one event stored');
  assert.deepEqual(proxy.publishes.map((f) => f.event.data.text), ['once, please', 'marker'], 'one publish frame each');
  assert.equal(await p.locator('#messages .message', { hasText: 'once, please' }).count(), 1);
  await context.close();
});

/** Every error code the page can be given: the API's, the stream's and the library's, read from their sources. */
async function errorCodes() {
  const { readFile, readdir } = await import('node:fs/promises');
  const { repoRoot } = await import('./harness.js');
  const read = (f) => readFile(`${repoRoot}/${f}`, 'utf8');
  const codes = new Set();
  let go = '';
  for (const dir of ['web', 'realtime']) {
    for (const f of await readdir(`${repoRoot}/${dir}`)) if (f.endsWith('.go') && !f.endsWith('_test.go')) go += await read(`${dir}/${f}`);
  }
  for (const re of [/&apiError\{[^,]+, "([a-z-]+)"/g, /badRequest\("([a-z-]+)"/g, /Code\w*\s*=\s*"([a-z-]+)"/g]) {
    for (const m of go.matchAll(re)) codes.add(m[1]);
  }
  const js = (await read('web/client/tidings.js')) + (await read('web/static/pagestate.js'));
  for (const m of js.matchAll(/new TidingsError\(([^,]*),/g)) for (const q of m[1].matchAll(/'([a-z-]+)'/g)) codes.add(q[1]);
  for (const m of js.matchAll(/#failPublishes\('([a-z-]+)'|: '(invalid-answer)'/g)) codes.add(m[1] ?? m[2]);
  return [...codes].sort();
}

test('people read what went wrong in words: no error code, server jargon or event id', async () => {
  const codes = await errorCodes();
  for (const c of ['bad-login', 'name-taken', 'invalid', 'invalid-body', 'network', 'offline', 'timeout', 'closed', 'rate-limited', 'invalid-answer']) {
    assert.ok(codes.includes(c), `the sources name ${c}: ${codes}`);
  }
  const p = await page();
  const checked = await p.evaluate(async (codes) => {
    const link = /** @type {HTMLLinkElement} */ (document.querySelector('link[href$="/errors.js"]'));
    const { errorSentences, humanError } = await import(link.href);
    const problems = [];
    for (const code of [...codes, 'http-502', 'http-418', 'never-heard-of']) {
      if (!code.startsWith('http-') && code !== 'never-heard-of' && !Object.hasOwn(errorSentences, code)) problems.push(`${code}: no sentence`);
      for (const doing of ['sign-in', 'register', 'send', 'rename', 'type', 'delete', 'sign-out']) {
        const status = code.startsWith('http-') ? Number(code.slice(5)) : 400;
        const s = humanError({ code, message: 'SERVER-JARGON', status, key: 'k1' }, doing);
        if (typeof s !== 'string' || !/^[A-Z].*\.$/.test(s)) problems.push(`${code}/${doing}: not a sentence: ${s}`);
        else if (s.includes('SERVER-JARGON') || s.includes(`(${code})`) || (code.includes('-') && s.includes(code))) problems.push(`${code}/${doing}: ${s}`);
      }
    }
    return problems;
  }, codes);
  assert.deepEqual(checked, []);

  // In the page: a wrong password, a name taken, a message too long, and one sent.
  await p.fill('#sign-in-name', 'nobody');
  await p.fill('#sign-in-password', 'not-the-password');
  await p.click('#sign-in button[type=submit]');
  await p.locator('#sign-in .status.error', { hasText: /^Wrong name or password\.$/ }).waitFor();
  await register(p, 'wordy');
  const other = await page();
  await register(other, 'taken');
  await p.fill('#rename-name', 'taken');
  await p.click('#rename button[type=submit]');
  await p.locator('#rename .status.error', { hasText: /^That name is taken\. Choose another\.$/ }).waitFor();
  await p.evaluate(() => {
    /** @type {HTMLTextAreaElement} */ (document.getElementById('composer-text')).value = 'x'.repeat(4001);
  });
  await p.click('#composer button[type=submit]');
  await p.locator('#composer .status.error', { hasText: /^Not sent\. A message is 1 to 4000 characters\.$/ }).waitFor();
  await p.fill('#composer-text', 'in words');
  await p.press('#composer-text', 'Enter');
  await p.locator('#composer .status.ok').waitFor();
  assert.equal(await p.locator('#composer .status').textContent(), 'Sent.', 'no event id');
  await other.context().close();
});

test('going offline and back: the header says so, and the stream resumes with what it missed', async () => {
  const p = await page();
  await register(p, 'wanderer');
  await p.evaluate(() => {
    const conn = /** @type {HTMLElement} */ (document.getElementById('conn'));
    const w = /** @type {any} */ (window);
    w.connSeen = [];
    const note = () => {
      const seen = `${conn.dataset.state}: ${conn.querySelector('.label')?.textContent}`;
      if (w.connSeen.at(-1) !== seen) w.connSeen.push(seen);
    };
    new MutationObserver(note).observe(conn, { subtree: true, childList: true, attributes: true, characterData: true });
  });
  const sockets = [];
  p.on('websocket', (ws) => sockets.push(ws));
  await p.context().setOffline(true);
  await p.locator('#conn[data-state="offline"]', { hasText: 'Offline: waiting for the network…' }).waitFor();
  await until('the old stream closed', async () => (await p.evaluate(() => /** @type {any} */ (window).connSeen.length)) > 0);
  // Meanwhile, a message; and one typed and sent while offline, which waits for the stream.
  await server.publish({ type: 'message', data: { userId: 0, userName: 'backend', text: 'said while you were away' }, audience: { kind: 'signed-in' } });
  await p.fill('#composer-text', 'written on the train');
  await p.press('#composer-text', 'Enter');
  await p.locator('#composer .status', { hasText: 'Sending…' }).waitFor();
  await p.context().setOffline(false);
  await p.locator('#messages .message', { hasText: 'said while you were away' }).waitFor();
  await p.locator('#composer .status.ok').waitFor();
  await p.locator('#messages .message', { hasText: 'written on the train' }).waitFor();
  await live(p);
  assert.equal(await p.locator('#conn .label').textContent(), 'Live');
  const seen = await p.evaluate(() => /** @type {any} */ (window).connSeen);
  const at = (re) => seen.findIndex((s) => re.test(s));
  assert.ok(at(/^offline: Offline: waiting for the network…$/) >= 0, `offline shown: ${seen}`);
  assert.ok(at(/^reconnecting: Reconnecting…$/) > at(/^offline:/), `then reconnecting: ${seen}`);
  assert.match(seen.at(-1), /^live: Live$/, `then live: ${seen}`);
  assert.ok(sockets.length >= 1, 'a new stream was opened');
  assert.equal((await storedMessages(p.context(), 'written on the train')).length, 1);
});

test('a refetch after a reset that fails says so and tries again, with backoff, until it succeeds', async () => {
  const { context, page: p, proxy } = await proxiedContext();
  await p.goto('/');
  await register(p, 'behind');
  // Events lost on the way (the stream's gap), then a reset, while GET / fails three times.
  let lost = 0;
  proxy.dropping = (f) => f.type === 'event' && ++lost > 0;
  await server.publish({ type: 'message', data: { userId: 0, userName: 'backend', text: 'lost in a gap' }, audience: { kind: 'signed-in' } });
  const res = await fetch(`${server.url}/api/auth/register`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ name: 'latecomer', password: 'password-latecomer' }),
  });
  assert.equal(res.status, 201);
  await until('both events dropped', () => lost >= 2);
  const fetches = [];
  let refused = 0;
  await context.route((u) => new URL(u).pathname === '/', async (route, req) => {
    if (req.resourceType() !== 'fetch') return route.continue();
    fetches.push(Date.now());
    if (refused < 3) {
      refused++;
      return route.fulfill({ status: 503, contentType: 'text/plain', body: 'tidings is unavailable' });
    }
    return route.continue();
  });
  const at = Number(await p.evaluate(() => document.body.dataset.lastEventId));
  proxy.inject({ type: 'reset', lastEventId: at });
  await p.locator('#sync', { hasText: /^Could not load the messages missed meanwhile\. Trying again in \d+ s…$/ }).waitFor();
  await p.locator('#messages .message', { hasText: 'lost in a gap' }).waitFor();
  await p.locator('#users li.user .name', { hasText: /^latecomer$/ }).waitFor();
  await p.locator('#sync').waitFor({ state: 'detached' });
  assert.equal(refused, 3);
  assert.equal(fetches.length, 4, 'three failures, then one that worked');
  const gaps = fetches.slice(1).map((t, i) => t - fetches[i]);
  assert.ok(gaps[2] > gaps[0] && gaps[0] >= 200, `the waits grow: ${gaps} ms`);
  await live(p);
  await context.close();
});

test("times show in the reader's time zone: the server-rendered ones and the live ones", async () => {
  const timezoneId = 'Asia/Kathmandu'; // UTC+05:45: no clock of UTC reads the same
  const local = (iso) => new Intl.DateTimeFormat('en-GB', { timeZone: timezoneId, hour: '2-digit', minute: '2-digit' }).format(new Date(iso));
  await server.publish({ type: 'message', data: { userId: 0, userName: 'backend', text: 'from before the page' }, audience: { kind: 'signed-in' } });
  const { context, page: p } = await recordedContext({ timezoneId, locale: 'en-GB' });
  p.errors = [];
  p.on('pageerror', (err) => p.errors.push(err));
  pages.keep(p);
  assert.equal((await context.request.post('/api/auth/register', { data: { name: 'nepali', password: 'password-nepali' } })).status(), 201);
  const held = await holdScript(context);
  await p.goto('/', { waitUntil: 'commit' });
  await until('the script asked for', () => held.asked());
  const early = p.locator('#messages .message', { hasText: 'from before the page' }).locator('time');
  const iso = await early.getAttribute('datetime');
  assert.equal(await early.textContent(), `${iso.slice(11, 16)} UTC`, 'without the script: UTC, and said so');
  held.release();
  await live(p);
  await until('the server-rendered time localized', async () => (await early.textContent()) === local(iso));
  assert.equal(await early.getAttribute('title'), await p.evaluate((t) => new Date(t).toLocaleString(), iso));

  await p.fill('#composer-text', 'from the page');
  await p.press('#composer-text', 'Enter');
  const live1 = p.locator('#messages .message', { hasText: 'from the page' }).locator('time');
  await live1.waitFor();
  const iso2 = await live1.getAttribute('datetime');
  assert.equal(await live1.textContent(), local(iso2));
  assert.notEqual(local(iso2), iso2.slice(11, 16), 'the local clock is not the UTC one');
  await context.close();
});
