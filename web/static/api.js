// @ts-check
// The HTTP API: JSON both ways, same-origin credentials, errors as ApiError.

/** @typedef {import('./stores.js').PageState} PageState */

/** A refusal of the API: {"error":{"code","message"}} with a status, or a network failure (status 0). */
export class ApiError extends Error {
  /** @param {number} status @param {string} code @param {string} message */
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/**
 * @param {string} method
 * @param {string} path
 * @param {any} [body]
 * @returns {Promise<any>} the decoded answer, or null for 204
 */
export async function api(method, path, body) {
  let res;
  try {
    res = await fetch(path, {
      method,
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, 'network', 'the server cannot be reached');
  }
  if (res.status === 204) return null;
  let data = null;
  try {
    data = await res.json();
  } catch {
    // not JSON: keep the status
  }
  if (!res.ok) {
    throw new ApiError(res.status, data?.error?.code ?? `http-${res.status}`, data?.error?.message ?? res.statusText);
  }
  return data;
}

/**
 * Fetches the page again and reads its embedded state: the same render, in the same order
 * (watermark, session, users, messages), as a page load.
 * @returns {Promise<PageState>}
 */
export async function fetchPageState() {
  let res;
  try {
    res = await fetch('/', {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Accept: 'text/html' },
    });
  } catch {
    throw new ApiError(0, 'network', 'the server cannot be reached');
  }
  if (!res.ok) throw new ApiError(res.status, 'unavailable', 'the server could not render the page');
  const doc = new DOMParser().parseFromString(await res.text(), 'text/html');
  return readState(doc);
}

/** @param {Document} doc @returns {PageState} */
export function readState(doc) {
  const el = doc.getElementById('tidings-state');
  if (!el || !el.textContent) throw new Error('the page has no state');
  return JSON.parse(el.textContent);
}
