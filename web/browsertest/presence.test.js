// Presence and typing (docs/protocol.md section 8) in headless Chromium against the real server:
// people see who is online from the first paint on, see who else is typing, and see someone go
// offline once their page is closed and the grace has passed. The node runs with a grace of 1 s.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  PageSet, launchBrowser, recordFrames, register, screenshot, signIn, startServer, timeout, until, userIds, userRow,
} from './harness.js';

const grace = 1000;

/** @type {import('./harness.js').Server} */
let server;
let cleanup;
/** @type {import('playwright-core').Browser} */
let browser;
/** @type {import('playwright-core').Page} */
let alice;
/** @type {import('playwright-core').Page} */
let bob;
/** @type {Record<string, number>} */
let ids;
/** alice's and bob's stream frames */
let aliceFrames;
let bobFrames;
const pages = new PageSet();

before(async () => {
  ({ server, cleanup } = await startServer('presence', { env: { TIDINGS_PRESENCE_GRACE: `${grace}ms` } }));
  browser = await launchBrowser();
});

after(async () => {
  pages.assertNoErrors();
  await browser?.close();
  await cleanup?.();
});

const page = () => pages.open(browser, server);

/** The online state of name's row in page: its data-online, the dot's look and the words a screen reader hears. */
function presenceOf(p, name) {
  return userRow(p, name).evaluate((li) => {
    const dot = /** @type {HTMLElement} */ (li.querySelector('.online-dot'));
    const label = /** @type {HTMLElement} */ (li.querySelector('.online-label'));
    const hidden = label.getBoundingClientRect();
    return {
      online: li.dataset.online,
      label: label.textContent,
      labelHidden: hidden.width <= 1 && hidden.height <= 1, // visually hidden, not display: none
      dotHidden: dot.getAttribute('aria-hidden'),
      filled: getComputedStyle(dot).backgroundColor !== 'rgba(0, 0, 0, 0)',
    };
  });
}

/** Waits until name's row in page shows online (true) or offline (false), both ways at once. */
async function waitPresence(p, name, online, ms = timeout) {
  const want = online ? 'online' : 'offline';
  return until(`${name} ${want} in a page`, async () => {
    const s = await presenceOf(p, name);
    return s.online === String(online) && s.label === want && s.filled === online && s;
  }, ms);
}

/** The text of the page's typing line. */
const typingLine = (p) => p.locator('#typing').textContent();

/** Registers name by the API alone: a user who has never had a stream, so is offline. */
async function registerOffline(name) {
  const res = await fetch(`${server.url}/api/auth/register`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ name, password: `password-${name}` }),
  });
  assert.equal(res.status, 201, `register ${name}`);
}

test('two people see each other online: a filled dot, and the word for screen readers', async () => {
  await registerOffline('carol');
  alice = await page();
  aliceFrames = recordFrames(alice);
  await register(alice, 'alice');
  bob = await page();
  bobFrames = recordFrames(bob);
  await register(bob, 'bob');
  ids = await userIds(alice);

  for (const [p, other] of [[alice, 'bob'], [bob, 'alice']]) {
    const s = await waitPresence(p, other, true);
    assert.equal(s.labelHidden, true, 'the word is visually hidden');
    assert.equal(s.dotHidden, 'true', 'the dot is hidden from screen readers, which hear the word');
  }
  await waitPresence(alice, 'alice', true); // the viewer is online too
  await userRow(alice, 'carol').waitFor();
  for (const p of [alice, bob]) {
    const s = await presenceOf(p, 'carol');
    assert.deepEqual([s.online, s.label, s.filled], ['false', 'offline', false], 'carol never had a stream');
  }
  await screenshot(alice, '11-presence');
});

test('online and offline differ in shape, not colour alone, with 3:1 against the card in light and dark', async () => {
  for (const colorScheme of ['light', 'dark']) {
    await alice.emulateMedia({ colorScheme });
    const look = await alice.evaluate(() => {
      /** @param {string} c @returns {number[]} */
      const rgb = (c) => (c.match(/[\d.]+/g) ?? []).map(Number);
      /** @param {number[]} c */
      const lum = ([r, g, b]) => {
        const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
        return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
      };
      /** @param {string} a @param {string} b */
      const contrast = (a, b) => {
        const [x, y] = [lum(rgb(a)), lum(rgb(b))].sort((p, q) => q - p);
        return (x + 0.05) / (y + 0.05);
      };
      const card = getComputedStyle(/** @type {Element} */ (document.querySelector('.people'))).backgroundColor;
      /** @param {string} id */
      const dot = (id) => getComputedStyle(/** @type {Element} */ (document.querySelector(`#users li[data-id="${id}"] .online-dot`)));
      const rows = [...document.querySelectorAll('#users li.user')];
      const on = rows.find((li) => li.getAttribute('data-online') === 'true')?.getAttribute('data-id');
      const off = rows.find((li) => li.getAttribute('data-online') === 'false')?.getAttribute('data-id');
      const [a, b] = [dot(on ?? ''), dot(off ?? '')];
      return {
        onFill: a.backgroundColor, offFill: b.backgroundColor, sameSize: a.width === b.width && a.height === b.height,
        onContrast: contrast(a.backgroundColor, card), onRing: contrast(a.borderTopColor, card),
        offRing: contrast(b.borderTopColor, card), offRingWidth: parseFloat(b.borderTopWidth),
      };
    });
    assert.notEqual(look.onFill, 'rgba(0, 0, 0, 0)', `${colorScheme}: online is a filled disc`);
    assert.equal(look.offFill, 'rgba(0, 0, 0, 0)', `${colorScheme}: offline is a hollow ring`);
    assert.ok(look.offRingWidth >= 1.5, `${colorScheme}: the ring is visible`);
    assert.ok(look.sameSize, 'both dots take the same room');
    for (const k of ['onContrast', 'onRing', 'offRing']) assert.ok(look[k] >= 3, `${colorScheme}: ${k} ${look[k].toFixed(2)} >= 3`);
  }
  await screenshot(alice, '12-presence-dark');
  await alice.emulateMedia({ colorScheme: 'light' });
});

test('a new page shows who is online from its first paint: the server renders what the client does', async () => {
  // A second tab of bob's, which records every state of the People list from the parsed
  // server markup on, and that markup as the parser left it, before any script ran.
  const tab = await bob.context().newPage();
  tab.setDefaultTimeout(timeout);
  tab.errors = [];
  tab.on('pageerror', (err) => tab.errors.push(err));
  pages.keep(tab);
  const tabFrames = recordFrames(tab);
  await tab.addInitScript(() => {
    /** A canonical form of an element: attributes sorted, whitespace between list items dropped. @param {Node} n @returns {string} */
    const canon = (n) => {
      if (n.nodeType === Node.TEXT_NODE) {
        const parent = /** @type {Element} */ (n.parentNode);
        return /^(UL|OL)$/.test(parent.tagName) && /^\s*$/.test(n.textContent ?? '') ? '' : JSON.stringify(n.textContent);
      }
      if (!(n instanceof Element)) return '';
      const attrs = [...n.attributes].map((a) => `${a.name}=${JSON.stringify(a.value)}`).sort().join(' ');
      return `<${n.localName} ${attrs}>${[...n.childNodes].map(canon).join('')}</${n.localName}>`;
    };
    const w = /** @type {any} */ (window);
    w.canon = canon;
    w.peopleStates = [];
    const record = () => {
      // While the parser runs, the list is incomplete (a busy machine shows it in pieces); the
      // parsed list is recorded once at 'interactive', then every state the scripts make.
      if (document.readyState === 'loading') return;
      const rows = [...document.querySelectorAll('#users li.user')].map((li) => [
        li.querySelector('.name')?.textContent, li.getAttribute('data-online'), li.querySelector('.online-label')?.textContent ?? null]);
      if (rows.length) w.peopleStates.push(rows);
    };
    new MutationObserver(record).observe(document, { subtree: true, childList: true, attributes: true, characterData: true });
    document.addEventListener('readystatechange', () => {
      if (document.readyState !== 'interactive') return; // parsed; deferred and module scripts not run yet
      record();
      w.serverMarkup = ['users', 'typing'].map((id) => canon(/** @type {Node} */ (document.getElementById(id))));
    });
  });
  await tab.goto('/');
  await tab.locator('#conn[data-state="live"]').waitFor();
  await until('the presence frame', () => tabFrames.some((f) => f.dir === 'received' && f.frame.type === 'presence'));

  const { serverMarkup, clientMarkup, states, embedded } = await tab.evaluate(() => {
    const w = /** @type {any} */ (window);
    return {
      serverMarkup: w.serverMarkup,
      clientMarkup: ['users', 'typing'].map((id) => w.canon(document.getElementById(id))),
      states: w.peopleStates,
      embedded: JSON.parse(/** @type {string} */ (document.getElementById('tidings-state')?.textContent)).online,
    };
  });
  assert.deepEqual([...embedded].sort(), [ids.alice, ids.bob].sort(), 'the embedded online set');
  assert.ok(serverMarkup?.[0].includes('data-online="true"'), `the server rendered the online state: ${serverMarkup?.[0]}`);
  assert.deepEqual(clientMarkup, serverMarkup, 'the hydrated People list and typing line are the server\'s, to the attribute');
  assert.ok(states.length >= 2, 'the parsed list and the hydrated one were both seen');
  for (const rows of states) {
    const by = Object.fromEntries(rows.map(([name, online, label]) => [name, `${online}/${label}`]));
    assert.deepEqual(by, { alice: 'true/online', bob: 'true/online', carol: 'false/offline' }, 'no state of the list ever showed otherwise');
  }
  await tab.close();
});

test('typing: the other sees "alice is typing…", alice does not; at most a signal every 2 s; gone 5 s after the last', async () => {
  const sentBefore = aliceFrames.length;
  await alice.click('#composer-text');
  const started = Date.now();
  await alice.keyboard.type('I am writing a rather long answer, one key at a time', { delay: 60 });
  const typedFor = Date.now() - started;
  await bob.locator('#typing', { hasText: /^alice is typing…$/ }).waitFor();
  await screenshot(bob, '13-typing');

  const signals = aliceFrames.slice(sentBefore).filter((f) => f.dir === 'sent' && f.frame.type === 'signal');
  for (const { frame } of signals) {
    assert.deepEqual(frame, { type: 'signal', ref: frame.ref, signal: { type: 'typing', data: {} } });
    assert.equal(typeof frame.ref, 'string');
  }
  assert.ok(signals.length >= 1 && signals.length <= Math.floor(typedFor / 2000) + 1,
    `${signals.length} signals for ${typedFor} ms of typing (52 keys): at most one every 2 s`);
  for (let i = 1; i < signals.length; i++) {
    assert.ok(signals[i].at - signals[i - 1].at >= 1500, `signals ${signals[i].at - signals[i - 1].at} ms apart`);
  }
  // alice's own signals come back to her, and her page does not say she is typing.
  await until("alice's own signal back", () => aliceFrames.some((f) => f.dir === 'received' && f.frame.type === 'signal' && f.frame.from === ids.alice));
  assert.equal(await typingLine(alice), '');

  // No more keys: bob's line goes 5 s after the last signal, not before.
  const last = signals.at(-1).at;
  await until('the typing line to go', async () => (await typingLine(bob)) === '', 15_000);
  const gone = Date.now() - last;
  assert.ok(gone >= 4800, `the line went ${gone} ms after the last signal, want 5 s`);
  assert.ok(bobFrames.some((f) => f.frame.type === 'signal' && f.frame.from === ids.alice));
  await alice.fill('#composer-text', '');
});

test("typing: alice's message ends her typing line at once", async () => {
  await alice.fill('#composer-text', '');
  await until('no typing line', async () => (await typingLine(bob)) === '');
  await alice.click('#composer-text');
  await alice.keyboard.type('Done', { delay: 30 });
  await bob.locator('#typing', { hasText: 'alice is typing…' }).waitFor();
  const shown = Date.now();
  await alice.keyboard.press('Enter');
  // In the page, in one go: the message is there and the line is already empty.
  const seen = await bob.waitForFunction(() => {
    const here = [...document.querySelectorAll('#messages .message .text')].some((e) => e.textContent === 'Done');
    return here && { typing: document.getElementById('typing')?.textContent };
  });
  const at = Date.now() - shown;
  assert.deepEqual(await seen.jsonValue(), { typing: '' });
  assert.ok(at < 4000, `the message came ${at} ms after the line showed: the line's own 5 s had not run out`);
});

test('typing: two at once read "alice and bob are typing…" for a third', async () => {
  const carol = await page();
  await signIn(carol, 'carol');
  await alice.click('#composer-text');
  await alice.keyboard.type('first', { delay: 30 });
  await carol.locator('#typing', { hasText: /^alice is typing…$/ }).waitFor();
  await bob.click('#composer-text');
  await bob.keyboard.type('second', { delay: 30 });
  await carol.locator('#typing', { hasText: /^alice and bob are typing…$/ }).waitFor();
  await alice.locator('#typing', { hasText: /^bob is typing…$/ }).waitFor();
  await bob.locator('#typing', { hasText: /^alice is typing…$/ }).waitFor();
  const region = await carol.locator('#typing').evaluate((e) => [e.getAttribute('role'), e.getAttribute('aria-live'), e.getAttribute('aria-atomic')]);
  assert.deepEqual(region, ['status', 'polite', 'true']);
  await screenshot(carol, '14-two-typing');
  await waitPresence(alice, 'carol', true);
  await carol.context().close();
  await waitPresence(alice, 'carol', false);
  for (const p of [alice, bob]) await p.fill('#composer-text', '');
});

test("the page ignores frames it does not know, and malformed ones, and a refused signal's error", async () => {
  const context = await browser.newContext({ baseURL: server.url });
  /** @type {((frame: any) => void)|null} */
  let inject = null;
  let presenceSeen = false;
  await context.routeWebSocket(/\/api\/events/, (ws) => {
    const real = ws.connectToServer();
    real.onMessage((m) => {
      ws.send(m);
      if (JSON.parse(String(m)).type === 'presence') presenceSeen = true;
    });
    inject = (f) => ws.send(typeof f === 'string' ? f : JSON.stringify(f));
  });
  const dave = await context.newPage();
  dave.setDefaultTimeout(timeout);
  dave.errors = [];
  dave.on('pageerror', (err) => dave.errors.push(err));
  pages.keep(dave);
  await dave.goto('/');
  await register(dave, 'dave');
  const daveId = (await userIds(dave)).dave;
  await until('the presence frame', () => presenceSeen);
  await waitPresence(dave, 'alice', true);
  await waitPresence(dave, 'carol', false);
  // None of these may change anything; each would, were it taken for what it is not.
  for (const f of [
    'null', '42', '[]', '"presence"', '{}', { type: 7 }, { type: 'presence' },
    { type: 'from-the-future', online: [] },
    { type: 'presence', online: 'nobody' },
    { type: 'presence', online: { [ids.alice]: false } },
    { type: 'presence', online: [ids.alice, ids.bob, daveId, String(ids.carol), -1, 1.5, null] },
    { type: 'presence-change', userId: String(ids.alice), online: false },
    { type: 'presence-change', userId: ids.alice, online: 'no' },
    { type: 'presence-change', userId: ids.alice },
    { type: 'signal', from: ids.alice, signal: { type: 'wave', data: {} } },
    { type: 'signal', from: ids.alice },
    { type: 'signal', from: String(ids.bob), signal: { type: 'typing', data: {} } },
    { type: 'error', ref: 's1', code: 'rate-limited', message: 'slow down' },
    { type: 'error', ref: 's999', code: 'forbidden', message: 'unknown signal type' },
  ]) inject(f);
  // Then one good frame: once it shows, every frame before it was handled.
  inject({ type: 'presence-change', userId: ids.carol, online: true });
  await waitPresence(dave, 'carol', true);
  for (const name of ['alice', 'bob', 'dave']) assert.equal((await presenceOf(dave, name)).online, 'true', `${name} still online`);
  assert.equal(await typingLine(dave), '', 'no unknown signal makes anyone type');
  assert.equal(await dave.locator('#conn').getAttribute('data-state'), 'live');
  assert.deepEqual(dave.errors.map(String), []);
  await context.close();
});

test("the other's dot goes once they closed their page and the grace passed", async () => {
  await waitPresence(alice, 'bob', true);
  const closed = Date.now();
  await bob.context().close();
  await waitPresence(alice, 'bob', false, grace + timeout);
  const after = Date.now() - closed;
  assert.ok(after >= grace * 0.9, `bob went offline ${after} ms after closing, within the grace of ${grace} ms`);
  await waitPresence(alice, 'alice', true);
  await screenshot(alice, '15-offline');
});
