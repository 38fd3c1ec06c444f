// @ts-check
// The client's state: small observable stores that apply the stream's events idempotently.
//
// Wire types (PROTOCOL.md), as the server sends them:
/**
 * @typedef {'regular'|'crew'|'admin'} UserType
 * @typedef {{id: number, name: string, type: UserType}} ApiUser
 * @typedef {ApiUser} ApiAccount
 * @typedef {{id: number, account: ApiAccount|null, rotatesAt: string, expiresAt: string}} ApiSession
 * @typedef {{type: string, data: any, time: string}} StoredEvent
 * @typedef {{id: number, event: StoredEvent}} EventFrame
 * @typedef {{lastEventId: number, session: ApiSession|null, notice: string|null,
 *            users: ApiUser[], messages: EventFrame[], online?: number[]}} PageState
 */
// The client's own types:
/**
 * @typedef {{id: number, userId: number, userName: string, text: string, time: string}} Message
 * @typedef {'session-taken'|'expired'|'signed-out'|'deleted'|'ended'} EndReason
 * @typedef {{session: ApiSession|null, notice: string|null, ended: EndReason|null,
 *            rightsChanged: UserType|null}} SessionState
 */

/** @template T */
export class Store {
  /** @type {T} */ #value;
  /** @type {Set<(value: T) => void>} */ #subs = new Set();

  /** @param {T} value */
  constructor(value) {
    this.#value = value;
  }

  /** @returns {T} */
  get() {
    return this.#value;
  }

  /** @param {T} value */
  set(value) {
    this.#value = value;
    for (const fn of this.#subs) fn(value);
  }

  /** @param {(value: T) => void} fn @returns {() => void} */
  subscribe(fn) {
    this.#subs.add(fn);
    return () => this.#subs.delete(fn);
  }
}

/** The session store: who is signed in, and why a session ended. @extends {Store<SessionState>} */
export class SessionStore extends Store {
  /** @param {ApiSession|null} session @param {string|null} notice */
  constructor(session, notice) {
    super({ session, notice, ended: notice === 'session-taken' ? 'session-taken' : null, rightsChanged: null });
  }

  /** @returns {ApiAccount|null} */
  account() {
    return this.get().session?.account ?? null;
  }

  /** @param {Partial<SessionState>} patch */
  update(patch) {
    this.set({ ...this.get(), ...patch });
  }
}

/**
 * A keyed collection that events change. While a refetch is in flight, the events applied are
 * also kept, to be applied again over the fetched snapshot: the snapshot may be older than
 * they are, and applying an event twice changes nothing.
 * @template V
 * @extends {Store<V[]>}
 */
class KeyedStore extends Store {
  /** @type {Map<number, V>} */ map = new Map();
  /** @type {EventFrame[]|null} */ #buffer = null;

  constructor() {
    super([]);
  }

  /** @param {EventFrame} frame @returns {boolean} whether the store changed */
  apply(frame) {
    if (this.#buffer) this.#buffer.push(frame);
    const changed = this.applyOne(frame);
    if (changed) this.publish();
    return changed;
  }

  /** @param {EventFrame} _frame @returns {boolean} */
  applyOne(_frame) {
    return false;
  }

  /** @param {V[]} values */
  replaceWith(values) {
    this.map.clear();
    for (const v of values) this.map.set(/** @type {any} */ (v).id, v);
    for (const f of this.#buffer ?? []) this.applyOne(f);
    this.#buffer = null;
    this.publish();
  }

  /** Starts keeping the events applied until the next replaceWith or cancelRefetch. */
  beginRefetch() {
    this.#buffer = [];
  }

  cancelRefetch() {
    this.#buffer = null;
  }

  publish() {
    this.set([...this.map.values()].sort((a, b) => /** @type {any} */ (a).id - /** @type {any} */ (b).id));
  }
}

/** Every user, by id: user-update sets one, user-delete removes one. @extends {KeyedStore<ApiUser>} */
export class UsersStore extends KeyedStore {
  /** @param {ApiUser[]} users */
  constructor(users) {
    super();
    this.replaceWith(users);
  }

  /** @param {EventFrame} frame */
  applyOne(frame) {
    const { type, data } = frame.event;
    if (type === 'user-update' && isUser(data)) {
      const old = this.map.get(data.id);
      if (old && old.name === data.name && old.type === data.type) return false;
      this.map.set(data.id, { id: data.id, name: data.name, type: data.type });
      return true;
    }
    if (type === 'user-delete' && data && typeof data.id === 'number') {
      return this.map.delete(data.id);
    }
    return false;
  }
}

/** @param {any} d @returns {d is ApiUser} */
function isUser(d) {
  return d !== null && typeof d === 'object' && typeof d.id === 'number' && typeof d.name === 'string' && typeof d.type === 'string';
}

/** How many messages the client keeps. */
export const keepMessages = 200;

/** The newest messages, by event id. @extends {KeyedStore<Message>} */
export class MessagesStore extends KeyedStore {
  /** @param {EventFrame[]} frames */
  constructor(frames) {
    super();
    this.replaceFrames(frames);
  }

  /** @param {EventFrame[]} frames */
  replaceFrames(frames) {
    this.replaceWith(frames.map(toMessage).filter((m) => m !== null));
  }

  /** @param {EventFrame} frame */
  applyOne(frame) {
    if (this.map.has(frame.id)) return false;
    const m = toMessage(frame);
    if (!m) return false;
    this.map.set(m.id, m);
    if (this.map.size > keepMessages) {
      const oldest = Math.min(...this.map.keys());
      this.map.delete(oldest);
      return oldest !== m.id;
    }
    return true;
  }
}

/** @param {EventFrame} f @returns {Message|null} */
export function toMessage(f) {
  if (f.event.type !== 'message') return null;
  const d = f.event.data ?? {};
  return {
    id: f.id,
    userId: typeof d.userId === 'number' ? d.userId : 0,
    userName: typeof d.userName === 'string' && d.userName !== '' ? d.userName : 'someone',
    text: typeof d.text === 'string' ? d.text : JSON.stringify(d),
    time: f.event.time,
  };
}
