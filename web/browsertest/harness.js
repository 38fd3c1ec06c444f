// The browser tests' harness: the real tidings binary on a managed PostgreSQL in a temporary
// data directory, and Debian's Chromium driven by playwright-core. Every wait is a bounded
// poll; everything started here is stopped by its pid or closed.

import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const run = promisify(execFile);

export const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..', '..');
/** Screenshots and server logs of the last run (gitignored). */
export const artifacts = path.join(here, 'artifacts');

export const chromiumPath = process.env.TIDINGS_CHROMIUM || '/usr/bin/chromium';
export const apiKey = 'browser-test-key';
/** How long any one wait may take. */
export const timeout = 20_000;

/** A fresh directory that the postgres user (which runs the managed cluster as root) can traverse. */
export async function tempDir(prefix) {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(dir, 0o755);
  return dir;
}

/** Builds cmd/tidings into dir and returns the binary's path. */
export async function buildServer(dir) {
  const bin = path.join(dir, 'tidings');
  await run('go', ['build', '-o', bin, './cmd/tidings'], { cwd: repoRoot, maxBuffer: 16 << 20 });
  return bin;
}

/** A TCP port that was free a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {net.AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

/** One tidings node: `tidings serve` on a managed PostgreSQL in dataDir. */
export class Server {
  /**
   * @param {{bin: string, dataDir: string, port: number, name: string, env?: Record<string, string>}} o
   */
  constructor(o) {
    this.bin = o.bin;
    this.dataDir = o.dataDir;
    this.port = o.port;
    this.name = o.name;
    this.url = `http://127.0.0.1:${o.port}`;
    this.env = {
      ...process.env,
      DATABASE_URL: '',
      TIDINGS_DATA_DIR: o.dataDir,
      TIDINGS_ADDR: `127.0.0.1:${o.port}`,
      TIDINGS_DEV: 'true',
      TIDINGS_API_KEY: apiKey,
      TIDINGS_ALLOWED_ORIGINS: '',
      ...o.env,
    };
    /** @type {import('node:child_process').ChildProcess|null} */
    this.proc = null;
    this.starts = 0;
  }

  /** Runs `tidings ARGS` (e.g. migrate) on the same data directory; while the node runs, it uses the node's cluster. */
  async cli(...args) {
    const { stdout } = await run(this.bin, args, { env: this.env, timeout: 60_000 });
    return stdout;
  }

  /** Makes a user with `tidings user create`, the password on standard input; it works while the node runs. */
  async createUser(name, password, type = 'regular') {
    const args = ['user', 'create', '--name', name, '--password-file', '-', '--type', type];
    const p = run(this.bin, args, { env: this.env, timeout: 60_000 });
    p.child.stdin.end(`${password}\n`);
    const { stdout } = await p;
    return stdout;
  }

  /** Starts the node and waits for the log line that says it is ready (`msg=ready url=…`, on standard error). */
  async start() {
    await mkdir(artifacts, { recursive: true });
    const log = createWriteStream(path.join(artifacts, `${this.name}-server-${++this.starts}.log`));
    const proc = spawn(this.bin, ['serve'], { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    proc.stdout.pipe(log);
    await new Promise((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => fail(new Error(`${this.name}: no "listening" line within 60 s:\n${out}`)), 60_000);
      const fail = (err) => {
        clearTimeout(timer);
        reject(err);
      };
      proc.once('exit', (code) => fail(new Error(`${this.name}: tidings serve exited with ${code} before listening:\n${out}`)));
      proc.stderr.on('data', (chunk) => {
        out += chunk;
        log.write(chunk);
        const m = / msg=ready url=(http:\/\/\S+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(m[1]);
        }
      });
    });
  }

  /** Stops the node with SIGTERM (SIGKILL after 20 s) and waits for it to exit. */
  async stop() {
    const proc = this.proc;
    this.proc = null;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    process.kill(proc.pid, 'SIGTERM');
    const killer = setTimeout(() => process.kill(proc.pid, 'SIGKILL'), 20_000);
    const res = await exited;
    clearTimeout(killer);
    return res;
  }

  /** POST /api/publish with the API key. */
  async publish(events) {
    const res = await fetch(`${this.url}/api/publish`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json' },
      body: JSON.stringify(events),
    });
    if (!res.ok) throw new Error(`publish: ${res.status} ${await res.text()}`);
    return (await res.json()).ids;
  }
}

/** Starts a node on a new data directory; setup (e.g. `user create`) runs before it starts. */
export async function startServer(name, { env = {}, setup = async () => {} } = {}) {
  const dir = await tempDir(`tidings-${name}-`);
  const bin = await buildServer(dir);
  const server = new Server({ bin, dataDir: path.join(dir, 'data'), port: await freePort(), name, env });
  await setup(server);
  await server.start();
  return {
    server,
    async cleanup() {
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Launches headless Chromium, which gets a new empty profile (user-data-dir) of its own. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
}

/**
 * A browser context (its own cookie jar) with a page on the server's front page. Uncaught page
 * errors are collected in page.errors. Other options are the context's (e.g. bypassCSP, which
 * the accessibility tests need to inject axe-core as an inline script).
 * @param {import('playwright-core').Browser} browser
 * @param {Server} server
 */
export async function openPage(browser, server, { width = 1100, height = 760, ...options } = {}) {
  const context = await browser.newContext({ baseURL: server.url, viewport: { width, height }, colorScheme: 'light', ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(timeout);
  page.errors = [];
  page.on('pageerror', (err) => page.errors.push(err));
  page.on('console', (msg) => {
    // The browser itself logs failed connections while a server is down, and refused requests.
    if (msg.type() === 'error' && !/^(WebSocket connection to .* failed|Failed to load resource)/.test(msg.text())) {
      page.errors.push(new Error(`console: ${msg.text()}`));
    }
  });
  await page.goto('/');
  await live(page);
  return page;
}

/**
 * The pages a test file opened, whose errors (uncaught, or logged to the console) it checks
 * when it ends: keep each page, then call assertNoErrors in after().
 */
export class PageSet {
  /** @type {any[]} */
  #pages = [];

  /** Keeps page, and returns it. */
  keep(page) {
    this.#pages.push(page);
    return page;
  }

  /**
   * Opens a page on server's front page (openPage) and keeps it.
   * @param {import('playwright-core').Browser} browser
   * @param {Server} server
   * @param {Parameters<typeof openPage>[2]} [opts]
   */
  async open(browser, server, opts) {
    return this.keep(await openPage(browser, server, opts));
  }

  /** Fails if any kept page had an error. */
  assertNoErrors() {
    for (const p of this.#pages) assert.deepEqual(p.errors.map(String), [], 'no errors in the page');
  }
}

/** Waits until the page's stream is live. */
export function live(page) {
  return page.locator('#conn[data-state="live"]').waitFor({ timeout });
}

/** Registers through the page's form and waits for the signed-in screen. */
export async function register(page, name, password = `password-${name}`) {
  await page.fill('#register-name', name);
  await page.fill('#register-password', password);
  await page.click('#register button[type=submit]');
  await page.locator('#account .account-name', { hasText: name }).waitFor();
  await live(page);
}

/** Signs in through the page's form and waits for the signed-in screen. */
export async function signIn(page, name, password = `password-${name}`) {
  await page.fill('#sign-in-name', name);
  await page.fill('#sign-in-password', password);
  await page.click('#sign-in button[type=submit]');
  await page.locator('#account .account-name', { hasText: name }).waitFor();
  await live(page);
}

/** The row of a user in the people list. */
export function userRow(page, name) {
  return page.locator('#users li.user').filter({ has: page.locator('.name', { hasText: new RegExp(`^${name}$`) }) });
}

/** Saves a screenshot of the page as artifacts/NAME.png and returns its path. */
export async function screenshot(page, name) {
  await mkdir(artifacts, { recursive: true });
  const file = path.join(artifacts, `${name}.png`);
  await page.screenshot({ path: file });
  return file;
}

/** Polls fn until it returns a truthy value, for at most ms. */
export async function until(what, fn, ms = timeout) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Records the JSON frames of every stream the page opens from now on, each as
 * {dir: 'sent'|'received', at: Date.now(), frame}, in the array it returns.
 * @param {import('playwright-core').Page} page
 */
export function recordFrames(page) {
  const log = [];
  page.on('websocket', (ws) => {
    for (const dir of ['sent', 'received']) {
      ws.on(`frame${dir}`, ({ payload }) => {
        let frame;
        try {
          frame = JSON.parse(String(payload));
        } catch {
          frame = { unparsed: String(payload) };
        }
        log.push({ dir, at: Date.now(), frame });
      });
    }
  });
  return log;
}

/** The users' ids by name, as GET /api/users gives them to the page's session. */
export async function userIds(page) {
  const list = await page.evaluate(async () => (await fetch('/api/users')).json());
  return Object.fromEntries(list.map((u) => [u.name, u.id]));
}
