// @ts-check
// The browser client of tidings: hydrates from the state the server rendered into the page,
// then keeps it current from the event stream opened at that state's lastEventId.

import { api, fetchPageState, readState } from './api.js';
import { Connection } from './connection.js';
import { PresenceStore, TypingSender, TypingStore, typingText } from './presence.js';
import { MessagesStore, SessionStore, UsersStore } from './stores.js';
import { View } from './views.js';

/**
 * @typedef {import('./stores.js').PageState} PageState
 * @typedef {import('./stores.js').ApiSession} ApiSession
 * @typedef {import('./stores.js').EndReason} EndReason
 */

const state = readState(document);
const session = new SessionStore(state.session, state.notice);
const users = new UsersStore(state.users);
const messages = new MessagesStore(state.messages);
const online = new PresenceStore(state.online);
const typing = new TypingStore();

/** Set while this page signs out, so that the stream's 4003 "logout" is no surprise. */
let signingOut = false;
/** Counts page-state fetches: only the newest one is applied. */
let stateFetches = 0;

/** @type {Record<string, EndReason>} */
const closeReasons = {
  'session-expired': 'expired',
  logout: 'signed-out',
  'user-deleted': 'deleted',
  'session-taken': 'session-taken',
};

const conn = new Connection({
  url: (id) => `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/api/events?lastEventId=${id}`,
  lastEventId: state.lastEventId,
  onFrame,
  onState: (s, detail) => {
    view.renderConn(s, detail);
    view.refreshBanner(session.get());
    document.body.dataset.lastEventId = String(conn.lastEventId);
  },
  // 4001 and 4003: ask who this cookie is now, then reconnect.
  onSessionLost: async (code, reason) => {
    const body = await api('GET', '/api/session');
    await applySession(body.session, body.notice, reason);
  },
});

const view = new View({
  async signIn(endpoint, name, password) {
    await api('POST', endpoint, { name, password });
    await refreshState();
  },
  async signOut() {
    signingOut = true;
    try {
      await api('POST', '/api/auth/logout');
      await refreshState();
    } finally {
      signingOut = false;
    }
  },
  send: (text) => {
    typingSender.sent();
    return conn.publish({ type: 'message', data: { text } });
  },
  typing: (text) => typingSender.input(text),
  async rename(name) {
    const me = session.account();
    if (!me) return;
    const u = await api('PATCH', `/api/users/${me.id}`, { name });
    applyAccountChange(u);
  },
  async setType(id, type) {
    await api('PATCH', `/api/users/${id}`, { type });
  },
  async remove(id) {
    await api('DELETE', `/api/users/${id}`);
  },
  reconnect: () => (conn.state === 'offline' ? conn.start() : conn.reconnectNow()),
  dismiss: () => {
    view.connProblem = null;
    session.update({ ended: null, notice: null, rightsChanged: null });
  },
});

const typingSender = new TypingSender(() => conn.signal({ type: 'typing', data: {} }));

/** @param {number} id */
const nameOf = (id) => users.map.get(id)?.name;
const renderMessages = () => view.renderMessages(messages.get(), session.account(), nameOf);
const renderUsers = () => view.renderUsers(users.get(), session.account(), online.get());
const renderTyping = () => view.renderTyping(typingText(typing.get().map((id) => nameOf(id) ?? 'someone')));

session.subscribe((s) => {
  view.renderSession(s);
  renderUsers();
  renderMessages();
  renderTyping();
});
users.subscribe(() => {
  renderUsers();
  renderMessages(); // names of senders
  renderTyping();
});
messages.subscribe(renderMessages);
online.subscribe(renderUsers);
typing.subscribe(renderTyping);

/** @param {import('./connection.js').Frame} f */
function onFrame(f) {
  switch (f.type) {
    case 'session':
      applySession(f.session, f.notice, null);
      return;
    case 'event': {
      document.body.dataset.lastEventId = String(f.id);
      if (!session.account() || f.event === null || typeof f.event !== 'object') return; // anonymous: no users, no messages
      const { type, data } = f.event;
      if (type === 'user-update' || type === 'user-delete') {
        users.apply(/** @type {any} */ (f));
        if (type === 'user-update' && data?.id === session.account()?.id) applyAccountChange(data);
        if (type === 'user-delete') typing.stop(data?.id);
      } else if (type === 'message') {
        messages.apply(/** @type {any} */ (f));
        typing.stop(data?.userId); // their message is here: they are done typing it
      }
      return;
    }
    case 'reset':
      document.body.dataset.lastEventId = String(f.lastEventId);
      refetchAfterReset();
      return;
    // Presence and signals (PROTOCOL.md section 8): only signed-in streams get them.
    case 'presence':
      if (session.account() && Array.isArray(f.online)) online.replaceWith(f.online);
      return;
    case 'presence-change':
      if (!session.account()) return;
      online.change(f.userId, f.online);
      if (f.online === false) typing.stop(f.userId);
      return;
    case 'signal': {
      const me = session.account();
      // The sender gets its own signals too: the viewer's own typing is not news to them.
      if (!me || f.from === me.id || f.signal?.type !== 'typing') return;
      typing.typing(f.from);
      return;
    }
    // Any other type (and error frames of refused signals, which the connection drops) is
    // ignored: the protocol grows by adding frames (PROTOCOL.md section 2).
  }
}

/**
 * Applies what the server now says this page's session is: the same account (maybe with new
 * rights), none (it ended: say why), or another account (load that account's state).
 * @param {ApiSession|null} next
 * @param {string|null} notice
 * @param {string|null} closeReason the 4001/4003 reason that made the client ask, if any
 */
async function applySession(next, notice, closeReason) {
  const had = session.account();
  const now = next?.account ?? null;
  if (!now) {
    if (had) {
      users.replaceWith([]);
      messages.replaceWith([]);
      online.replaceWith([]);
      typing.clear();
    }
    /** @type {EndReason|null} */
    let ended = session.get().ended;
    if (notice === 'session-taken') ended = 'session-taken';
    else if (had && !signingOut) ended = (closeReason && closeReasons[closeReason]) || 'ended';
    session.set({ session: next, notice, ended, rightsChanged: null });
    return;
  }
  if (had && had.id === now.id) {
    const rotated = session.get().session?.id !== next?.id;
    const rightsChanged = had.type !== now.type ? now.type : session.get().rightsChanged;
    session.update({ session: next, notice, rightsChanged });
    if (rotated) presentSuccessor();
    return;
  }
  // Signed in elsewhere, or as someone else: this page's users and messages are not theirs.
  await refreshState();
}

/**
 * The stream's upgrade rotated the session: its new cookie counts as received only once a
 * request presents it (PROTOCOL.md section 4.4). Present it at once, so that a stolen copy of
 * the old cookie reveals the theft instead of passing for a lost response.
 */
async function presentSuccessor() {
  try {
    const body = await api('GET', '/api/session');
    if (body.session?.id !== session.get().session?.id) await applySession(body.session, body.notice, null);
  } catch {
    // the next request presents it
  }
}

/** The signed-in user changed (a rename, or rights): keep the session's account in step. @param {any} u */
function applyAccountChange(u) {
  const s = session.get().session;
  if (!s?.account || s.account.id !== u.id) return;
  if (s.account.name === u.name && s.account.type === u.type) return;
  const rightsChanged = s.account.type !== u.type ? u.type : session.get().rightsChanged;
  session.update({ session: { ...s, account: { id: u.id, name: u.name, type: u.type } }, rightsChanged });
}

/** Renders the page's state again on the server and takes it, stream included. */
async function refreshState() {
  const mine = ++stateFetches;
  const next = await fetchPageState();
  if (mine !== stateFetches) return;
  hydrate(next, true);
}

/** @param {PageState} s @param {boolean} fresh */
function hydrate(s, fresh) {
  users.replaceWith(s.users);
  messages.replaceFrames(s.messages);
  online.replaceWith(s.online); // until the stream's presence frame, which supersedes it
  typing.clear();
  const ended = s.notice === 'session-taken' ? 'session-taken' : s.session ? null : session.get().ended;
  session.set({ session: s.session, notice: s.notice, ended, rightsChanged: null });
  if (fresh) conn.restart(s.lastEventId);
}

/** After a reset, events were lost: fetch users and messages again; events meanwhile still apply. */
async function refetchAfterReset() {
  if (!session.account()) return;
  users.beginRefetch();
  messages.beginRefetch();
  try {
    const [list, page] = await Promise.all([api('GET', '/api/users'), fetchPageState()]);
    users.replaceWith(list);
    messages.replaceFrames(page.messages);
  } catch {
    users.cancelRefetch();
    messages.cancelRefetch();
  }
}

addEventListener('online', () => conn.reconnectNow());
addEventListener('offline', () => view.renderConn('offline', {}));

hydrate(state, false);
conn.start();
