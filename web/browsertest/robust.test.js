// The page under real networks and hands (issue 13 item 9), in headless Chromium against the
// real server: forms sent before the scripts ran, typing before hydration, the network going
// away and back, impatient Send keys, errors in words, a refetch that fails, and local times.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, live, openPage, register, startServer, timeout, until } from './harness.js';

/** @type {import('./harness.js').Server} */
let server;
let cleanup;
/** @type {import('playwright-core').Browser} */
let browser;
const pages = [];

before(async () => {
  ({ server, cleanup } = await startServer('robust'));
  browser = await launchBrowser();
});

after(async () => {
  for (const p of pages) assert.deepEqual(p.errors.map(String), [], 'no errors in the page');
  await browser?.close();
  await cleanup?.();
});

/** A page on the front page, live, whose errors are checked at the end. */
async function page(opts) {
  const p = await openPage(browser, server, opts);
  pages.push(p);
  return p;
}

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
  pages.push(p);
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
