// @ts-check
// The state the server renders into the page (docs/protocol.md section 6): read from this
// document at load, and fetched again, rendered anew, when the session changes or events were lost.

import { TidingsError } from '../client/tidings.js';

/** @typedef {import('./stores.js').PageState} PageState */

/**
 * Fetches the page again and reads its embedded state: the same render, in the same order
 * (watermark, session, users, messages), as a page load.
 * @returns {Promise<PageState>}
 */
export async function fetchPageState() {
  let res;
  try {
    res = await fetch('/', { credentials: 'same-origin', cache: 'no-store', headers: { Accept: 'text/html' } });
  } catch {
    throw new TidingsError('network', 'the server cannot be reached');
  }
  if (!res.ok) throw new TidingsError('unavailable', 'the server could not render the page', { status: res.status });
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  return readState(doc);
}

/** @param {Document} doc @returns {PageState} */
export function readState(doc) {
  const el = doc.getElementById('tidings-state');
  if (!el || !el.textContent) throw new Error('the page has no state');
  return JSON.parse(el.textContent);
}
