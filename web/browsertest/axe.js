// Accessibility checks for the browser tests: axe-core, injected into the page, on the rules of
// WCAG 2.2 level AA and axe's best practices; and what axe does not measure, the non-text
// contrast (WCAG 1.4.11) of form fields' borders and of the focus ring. Each screen is checked
// in the light and the dark colour scheme.

import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const axeSource = await readFile(require.resolve('axe-core/axe.min.js'), 'utf8');

/** The axe rule tags that the page must pass: WCAG 2.0, 2.1 and 2.2 A and AA, and best practice. */
export const axeTags = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'];

/**
 * Runs axe on the page as it is and returns its violations, one line per element:
 * "rule-id [target]: summary". The page's context must bypass CSP (openPage's bypassCSP), since
 * axe is injected as an inline script.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<string[]>}
 */
export async function axeViolations(page) {
  if (!(await page.evaluate(() => 'axe' in window))) await page.addScriptTag({ content: axeSource });
  return page.evaluate(async (tags) => {
    const axe = /** @type {any} */ (window).axe;
    const res = await axe.run(document, { runOnly: { type: 'tag', values: tags }, resultTypes: ['violations'] });
    return res.violations.flatMap((/** @type {any} */ v) => v.nodes.map((/** @type {any} */ n) =>
      `${v.id} [${n.target.join(' ')}]: ${v.help}. ${String(n.failureSummary ?? '').replace(/\s+/g, ' ')}`));
  }, axeTags);
}

/**
 * The non-text contrast that axe leaves out: every visible form field's border against its own
 * background and what is around it, and every focusable element's focus ring against what is
 * around it, 3:1 at least. Focus is moved to measure the ring, and given back after.
 * @param {import('playwright-core').Page} page
 * @returns {Promise<string[]>}
 */
export function nonTextContrast(page) {
  return page.evaluate(() => {
    /** @param {string} c @returns {number[]} r, g, b (0-255) and alpha (0-1) */
    const parse = (c) => {
      const srgb = /^color\(srgb ([\d.]+) ([\d.]+) ([\d.]+)(?: \/ ([\d.]+))?\)$/.exec(c);
      if (srgb) return [Number(srgb[1]) * 255, Number(srgb[2]) * 255, Number(srgb[3]) * 255, srgb[4] === undefined ? 1 : Number(srgb[4])];
      const [r, g, b, a = 1] = (c.match(/[\d.]+/g) ?? []).map(Number);
      return [r, g, b, a];
    };
    /** @param {number[]} top @param {number[]} under @returns {number[]} */
    const over = (top, under) => {
      const a = top[3];
      return [0, 1, 2].map((i) => top[i] * a + under[i] * (1 - a)).concat(1);
    };
    /** The colour behind an element: its ancestors' backgrounds, composited. @param {Element|null} e */
    const backdrop = (e) => {
      const layers = [];
      for (let n = e; n; n = n.parentElement) {
        const c = parse(getComputedStyle(n).backgroundColor);
        if (c[3] > 0) layers.push(c);
        if (c[3] >= 1) break;
      }
      let color = [255, 255, 255, 1];
      if (!layers.length || layers[layers.length - 1][3] < 1) {
        color = matchMedia('(prefers-color-scheme: dark)').matches ? [18, 18, 18, 1] : color;
      }
      for (const c of layers.reverse()) color = over(c, color);
      return color;
    };
    /** @param {number[]} c */
    const lum = ([r, g, b]) => {
      const f = (/** @type {number} */ v) => ((v /= 255) <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    /** @param {number[]} a @param {number[]} b */
    const contrast = (a, b) => {
      const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
      return (x + 0.05) / (y + 0.05);
    };
    /** @param {Element} e */
    const name = (e) => e.id ? `#${e.id}` : `${e.localName}${e.className ? `.${String(e.className).trim().split(/\s+/).join('.')}` : ''}${e.getAttribute('aria-label') ? `[aria-label="${e.getAttribute('aria-label')}"]` : ''}`;
    /** @param {Element} e */
    const visible = (e) => e.getClientRects().length > 0 && getComputedStyle(e).visibility !== 'hidden';
    const problems = [];
    for (const f of document.querySelectorAll('input:not([type=hidden]), textarea, select')) {
      if (!visible(f)) continue;
      const s = getComputedStyle(f);
      const border = over(parse(s.borderTopColor), backdrop(f));
      for (const [where, bg] of [['inside', backdrop(f)], ['around', backdrop(f.parentElement)]]) {
        const r = contrast(border, bg);
        if (r < 3) problems.push(`field-border [${name(f)}]: border ${s.borderTopColor} has ${r.toFixed(2)}:1 against the background ${where} it, less than 3:1`);
      }
    }
    const had = document.activeElement;
    const focusable = 'a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), textarea:not([disabled]), select:not([disabled]), [tabindex]:not([tabindex="-1"])';
    for (const e of /** @type {NodeListOf<HTMLElement>} */ (document.querySelectorAll(focusable))) {
      if (!visible(e) || e.classList.contains('skip')) continue;
      // @ts-ignore: focusVisible is Chromium's
      e.focus({ preventScroll: true, focusVisible: true });
      const s = getComputedStyle(e);
      const width = parseFloat(s.outlineWidth);
      if (s.outlineStyle === 'none' || width < 2) {
        problems.push(`focus-ring [${name(e)}]: no focus ring of 2px or more (outline ${s.outlineStyle} ${s.outlineWidth})`);
        continue;
      }
      const r = contrast(over(parse(s.outlineColor), backdrop(e.parentElement)), backdrop(e.parentElement));
      if (r < 3) problems.push(`focus-ring [${name(e)}]: ring ${s.outlineColor} has ${r.toFixed(2)}:1 against the background around it, less than 3:1`);
    }
    if (had instanceof HTMLElement && had !== document.body) had.focus({ preventScroll: true });
    else if (document.activeElement instanceof HTMLElement) document.activeElement.blur();
    return problems;
  });
}

/**
 * Asserts that the page as it is passes axe and the non-text contrast checks in both colour
 * schemes; the failure lists every violation: its rule, its element and what is wrong.
 * @param {import('playwright-core').Page} page
 * @param {string} screen what the page shows, for the failure message
 */
export async function assertAccessible(page, screen) {
  const problems = [];
  for (const colorScheme of /** @type {const} */ (['light', 'dark'])) {
    await page.emulateMedia({ colorScheme });
    for (const p of [...await axeViolations(page), ...await nonTextContrast(page)]) problems.push(`${colorScheme}: ${p}`);
  }
  await page.emulateMedia({ colorScheme: 'light' });
  assert.deepEqual(problems, [], `${screen}: ${problems.length} accessibility violations:\n  ${problems.join('\n  ')}`);
}
