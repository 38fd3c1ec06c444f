// @ts-check
// Typing (docs/protocol.md section 8): who else is typing, and when this page says that its own
// user is typing. Who is online is the library's PresenceStore (web/client/tidings.js). None of
// it is an event: it has no id, is never replayed, and whatever the stream says last is the truth.

import { Store } from '../client/tidings.js';

/** How long a person's typing line stays after their last typing signal, in ms. */
export const typingHold = 5000;
/** The least time between two typing signals that this page sends, in ms. */
export const typingEvery = 2000;

/**
 * @typedef {{
 *   setTimeout?: (fn: () => void, ms: number) => any,
 *   clearTimeout?: (t: any) => void,
 *   now?: () => number,
 * }} Clock
 */

/** @param {any} id @returns {id is number} */
const isUserId = (id) => Number.isSafeInteger(id) && id > 0;

/**
 * The other people typing, in the order they started: each stays for typingHold after their
 * last signal, and goes at once when a message of theirs arrives or they go offline.
 * @extends {Store<number[]>}
 */
export class TypingStore extends Store {
  /** @type {Map<number, any>} user id -> the timer that ends their typing */
  #timers = new Map();

  /** @param {Clock & {hold?: number}} [o] */
  constructor(o = {}) {
    super([]);
    this.setTimeout = o.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this.clearTimeout = o.clearTimeout ?? ((t) => globalThis.clearTimeout(t));
    this.hold = o.hold ?? typingHold;
  }

  /** A typing signal from a user (never the viewer's own: the caller drops those). @param {number} userId */
  typing(userId) {
    if (!isUserId(userId)) return;
    const had = this.#timers.has(userId);
    if (had) this.clearTimeout(this.#timers.get(userId));
    this.#timers.set(userId, this.setTimeout(() => this.stop(userId), this.hold));
    if (!had) this.#publish();
  }

  /** The user stopped typing: a message of theirs arrived, they went offline or away. @param {number} userId */
  stop(userId) {
    if (!this.#timers.has(userId)) return;
    this.clearTimeout(this.#timers.get(userId));
    this.#timers.delete(userId);
    this.#publish();
  }

  /** Nobody is typing (the session ended). */
  clear() {
    if (this.#timers.size === 0) return;
    for (const t of this.#timers.values()) this.clearTimeout(t);
    this.#timers.clear();
    this.#publish();
  }

  #publish() {
    this.set([...this.#timers.keys()]);
  }
}

/**
 * The line under the messages: "" when nobody types, else who does.
 * @param {string[]} names
 */
export function typingText(names) {
  switch (names.length) {
    case 0:
      return '';
    case 1:
      return `${names[0]} is typing…`;
    case 2:
      return `${names[0]} and ${names[1]} are typing…`;
    default:
      return 'several people are typing…';
  }
}

/**
 * Says that the viewer is typing: at most one signal every typingEvery, however fast the keys
 * come. A signal that could not be sent (no open stream) does not count, so the next key tries
 * again.
 */
export class TypingSender {
  /** @param {() => boolean} send sends one typing signal; false when it could not @param {Clock} [o] */
  constructor(send, o = {}) {
    this.send = send;
    this.now = o.now ?? (() => Date.now());
    this.every = typingEvery;
    /** @type {number|null} */ this.last = null;
  }

  /** The message box changed. @param {string} text its text now */
  input(text) {
    if (text.trim() === '') return; // emptied: not typing a message
    const now = this.now();
    if (this.last !== null && now - this.last < this.every) return;
    if (this.send()) this.last = now;
  }

  /** A message was sent: the next key starts a new message, and says so at once. */
  sent() {
    this.last = null;
  }
}
