// Sessions ending under an open page, in real browsers: theft (docs/protocol.md section 4.4), where
// two contexts hold one cookie and both are told the session was taken, and expiry.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { launchBrowser, openPage, register, screenshot, startServer, timeout } from './harness.js';

let theft;
let expiry;
let browser;

before(async () => {
  [theft, expiry] = await Promise.all([
    startServer('theft', { env: { TIDINGS_SESSION_ROTATE: '2s', TIDINGS_SESSION_GRACE: '1s' } }),
    startServer('expiry', { env: { TIDINGS_SESSION_EXPIRE: '4s' } }),
  ]);
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
  await Promise.all([theft?.cleanup(), expiry?.cleanup()]);
});

test('two contexts sharing one cookie: both see the taken-session banner', async () => {
  const owner = await openPage(browser, theft.server);
  await register(owner, 'ivy');
  const taker = await openPage(browser, theft.server);
  await taker.context().addCookies(await owner.context().cookies());
  await taker.reload();
  await taker.locator('#account .account-name', { hasText: 'ivy' }).waitFor();

  // At rotatesAt both streams close with 4002 and reconnect: one gets the successor (and
  // presents it at once), the other keeps presenting the old cookie, which after its grace
  // reveals the theft.
  for (const p of [owner, taker]) {
    await p.locator('#banner[data-kind="session-taken"]', { hasText: 'Your session was taken.' }).waitFor({ timeout: 2 * timeout });
    await p.locator('#sign-in').waitFor();
    assert.equal(await p.locator('#account .account-name').count(), 0);
  }
  await screenshot(owner, '09-session-taken');
  for (const p of [owner, taker]) assert.deepEqual(p.errors.map(String), []);
});

test('an expired session shows its banner and the sign-in screen', async () => {
  const page = await openPage(browser, expiry.server);
  await register(page, 'june');
  await page.locator('#messages').waitFor();
  // The stream closes with 4001 at expiresAt; the page asks /api/session and says why.
  await page.locator('#banner[data-kind="expired"]', { hasText: 'Your session expired.' }).waitFor();
  await page.locator('#sign-in').waitFor();
  await page.locator('#conn[data-state="live"]').waitFor();
  await screenshot(page, '10-expired');
  assert.deepEqual(page.errors.map(String), []);
});
