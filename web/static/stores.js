// @ts-check
// The page's own state: who is signed in and why a session ended, and the messages. The users
// and who is online are the library's stores (web/client/tidings.js).

import { KeyedStore, Store } from '../client/tidings.js';

// Wire types (docs/protocol.md), as the library declares them:
/**
 * @typedef {import('../client/tidings.js').UserType} UserType
 * @typedef {import('../client/tidings.js').ApiUser} ApiUser
 * @typedef {import('../client/tidings.js').ApiAccount} ApiAccount
 * @typedef {import('../client/tidings.js').ApiSession} ApiSession
 * @typedef {import('../client/tidings.js').EventFrame} EventFrame
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

/** How many messages the client keeps. */
export const keepMessages = 200;

/** The newest messages, by event id. @extends {KeyedStore<Message>} */
export class MessagesStore extends KeyedStore {
  /** @param {EventFrame[]} frames */
  constructor(frames) {
    super();
    this.replaceFrames(frames);
  }

  /** Takes the messages of a page state. @param {EventFrame[]} frames */
  replaceFrames(frames) {
    this.replaceWith(toMessages(frames));
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

/** @param {EventFrame[]} frames @returns {Message[]} */
export function toMessages(frames) {
  return /** @type {Message[]} */ (frames.map(toMessage).filter((m) => m !== null));
}

/** @param {EventFrame} f @returns {Message|null} */
export function toMessage(f) {
  if (f.event.type !== 'message') return null;
  const d = /** @type {any} */ (f.event.data ?? {});
  return {
    id: f.id,
    userId: typeof d.userId === 'number' ? d.userId : 0,
    userName: typeof d.userName === 'string' && d.userName !== '' ? d.userName : 'someone',
    text: typeof d.text === 'string' ? d.text : JSON.stringify(d),
    time: f.event.time,
  };
}
