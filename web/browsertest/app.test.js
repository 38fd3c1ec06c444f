// The browser client in headless Chromium against the real server: people see each other and
// each other's changes live, talk, are managed by an admin, and the page rides out a restart.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  PageSet, launchBrowser, live, register, screenshot, signIn, startServer, timeout, userRow,
} from './harness.js';

/** @type {import('./harness.js').Server} */
let server;
let cleanup;
/** @type {import('playwright-core').Browser} */
let browser;
/** @type {import('playwright-core').Page} */
let alice;
/** @type {import('playwright-core').Page} */
let bob;
/** @type {import('playwright-core').Page} */
let root;
const pages = new PageSet();

before(async () => {
  ({ server, cleanup } = await startServer('app', {
    setup: (s) => s.createUser('root', 'root-password', 'admin'),
  }));
  browser = await launchBrowser();
});

after(async () => {
  pages.assertNoErrors();
  await browser?.close();
  await cleanup?.();
});

const page = (opts) => pages.open(browser, server, opts);

test('two people sign in, and each sees the other', async () => {
  alice = await page();
  await screenshot(alice, '01-welcome');
  // Keyboard only: Tab between the fields, Enter submits.
  await alice.focus('#register-name');
  await alice.keyboard.type('alice');
  await alice.keyboard.press('Tab');
  await alice.keyboard.type('password-alice');
  await alice.keyboard.press('Enter');
  await alice.locator('#account .account-name', { hasText: 'alice' }).waitFor();
  await live(alice);

  bob = await page();
  await register(bob, 'bob');
  await userRow(alice, 'bob').waitFor(); // live: bob came after alice's page was rendered
  await userRow(bob, 'alice').waitFor(); // rendered on the server
  await userRow(bob, 'root').waitFor();
  assert.equal(await alice.locator('#users select').count(), 0, 'a regular user has no admin controls');
});

test('a rename in one page shows in the other without a reload', async () => {
  await bob.evaluate(() => {
    window.notReloaded = true;
  });
  await alice.fill('#rename-name', 'alicia');
  await alice.click('#rename button[type=submit]');
  await alice.locator('#rename .status.ok').waitFor();
  await userRow(bob, 'alicia').waitFor();
  assert.equal(await userRow(bob, 'alice').count(), 0);
  await alice.locator('#account .account-name', { hasText: 'alicia' }).waitFor();
  assert.equal(await bob.evaluate(() => window.notReloaded), true, 'bob saw it without a reload');
});

test('a message sent in one page appears in the other, with its ack or its error', async () => {
  await alice.fill('#composer-text', 'Hello Bob! The release is out.');
  await alice.press('#composer-text', 'Enter');
  await alice.locator('#composer .status.ok', { hasText: /^Sent\.$/ }).waitFor();
  assert.equal(await alice.inputValue('#composer-text'), '', 'the composer is cleared');
  const hello = bob.locator('#messages .message', { hasText: 'Hello Bob! The release is out.' });
  await hello.waitFor();
  await hello.locator('.from', { hasText: /^alicia$/ }).waitFor();

  await bob.fill('#composer-text', 'Great news, thanks <3');
  await bob.click('#composer button[type=submit]');
  await bob.locator('#composer .status.ok').waitFor();
  await alice.locator('#messages .message', { hasText: 'Great news, thanks <3' }).waitFor();
  await bob.locator('#messages .message.mine', { hasText: 'Great news' }).waitFor();
  await screenshot(alice, '02-messages');
  await bob.setViewportSize({ width: 390, height: 844 });
  await screenshot(bob, '03-phone');
  await bob.setViewportSize({ width: 1100, height: 760 });

  // A refused publish says why in words (the textarea's limit stops only typing).
  await alice.evaluate(() => {
    document.getElementById('composer-text').value = 'x'.repeat(4001);
  });
  await alice.click('#composer button[type=submit]');
  await alice.locator('#composer .status.error', { hasText: /^Not sent\. A message is 1 to 4000 characters\.$/ }).waitFor();
  await alice.fill('#composer-text', '');
});

test("an admin changes a user's type, and that user's page shows the new rights", async () => {
  root = await page();
  await signIn(root, 'root', 'root-password');
  await userRow(root, 'alicia').locator('select').waitFor();
  assert.equal(await bob.locator('#users select').count(), 0);

  await userRow(root, 'bob').locator('select').selectOption('admin');
  await userRow(root, 'bob').locator('[data-action=save-type]').click();
  await userRow(root, 'bob').locator('.row-status.ok').waitFor();
  await bob.locator('body[data-account-type="admin"]').waitFor();
  await bob.locator('#banner[data-kind="rights"]', { hasText: 'You are now admin' }).waitFor();
  await bob.locator('#account .badge[data-type="admin"]').waitFor();
  await userRow(bob, 'alicia').locator('select').waitFor(); // bob has admin controls now
  await userRow(alice, 'bob').locator('.badge[data-type="admin"]').waitFor();
  await live(bob);
  await screenshot(root, '04-admin');
  await screenshot(bob, '05-new-rights');
});

test('an admin deletes a user, whose page says so', async () => {
  const dave = await page();
  await register(dave, 'dave');
  const del = userRow(root, 'dave').locator('[data-action=delete]');
  await del.click();
  await userRow(root, 'dave').locator('[data-action=delete].armed').waitFor();
  await del.click();
  await dave.locator('#banner[data-kind="deleted"]').waitFor();
  await dave.locator('#sign-in').waitFor();
  await userRow(alice, 'dave').waitFor({ state: 'detached' });
  await userRow(root, 'dave').waitFor({ state: 'detached' });
  await screenshot(dave, '06-deleted');
});

test('the page rides out a server restart and shows what happened meanwhile', async () => {
  const stopped = await server.stop(); // SIGTERM: streams close with 1001 going-away
  assert.deepEqual(stopped, { code: 0, signal: null });
  await alice.locator('#conn[data-state="reconnecting"]').waitFor();
  await screenshot(alice, '07-reconnecting');
  // While the node is down: a new user (its user-update event is stored for replay).
  await server.createUser('carol', 'carol-password');
  await server.start();
  // As soon as it is up: a message from a backend, before or after the page is back.
  await server.publish({
    type: 'message', data: { userId: 0, userName: 'backend', text: 'Published while you were away' }, audience: { kind: 'signed-in' },
  });
  for (const p of [alice, bob, root]) {
    await userRow(p, 'carol').waitFor({ timeout: 2 * timeout });
    await p.locator('#messages .message', { hasText: 'Published while you were away' }).waitFor();
    await live(p);
  }
  // Two-way messaging works on the new streams.
  await root.fill('#composer-text', 'Back after the restart');
  await root.press('#composer-text', 'Enter');
  await root.locator('#composer .status.ok').waitFor();
  await alice.locator('#messages .message', { hasText: 'Back after the restart' }).waitFor();
  await screenshot(alice, '08-recovered');
});

test('signing out shows the sign-in screen, and no banner', async () => {
  await alice.click('#account button');
  await alice.locator('#sign-in').waitFor();
  assert.equal(await alice.locator('#banner').isHidden(), true);
  await live(alice);
  assert.equal(await alice.locator('#messages').count(), 0);
});
