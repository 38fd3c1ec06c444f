// @ts-check
// The browser client of tidings: hydrates from the state the server rendered into the page,
// then keeps it current through the library (web/client/tidings.js), whose stream opens at that
// state's lastEventId.

import { PresenceStore, Tidings, UsersStore } from '../client/tidings.js';
import { fetchPageState, readState } from './pagestate.js';
import { TypingSender, TypingStore, typingText } from './presence.js';
import { MessagesStore, SessionStore, toMessage, toMessages } from './stores.js';
import { View } from './views.js';

/**
 * @typedef {import('./stores.js').PageState} PageState
 * @typedef {import('./stores.js').ApiSession} ApiSession
 * @typedef {import('./stores.js').EndReason} EndReason
 */

const state = readState(document);
const client = new Tidings({ lastEventId: state.lastEventId, session: state.session });
const session = new SessionStore(state.session, state.notice);
const users = new UsersStore(client, { users: state.users });
const messages = new MessagesStore(state.messages);
const online = new PresenceStore(client, { online: state.online });
const typing = new TypingStore();

/** Set while this page signs out, so that the stream's 4003 "logout" is no surprise. */
let signingOut = false;
/** Counts page-state fetches: only the newest one is applied. */
let stateFetches = 0;
/** Counts resets and new renders: only the newest one's catch-up goes on. */
let resets = 0;
/** The first and the longest wait between two tries to catch up after a reset, in ms. */
const catchUpBase = 500;
const catchUpMax = 30_000;

/** @type {Record<string, EndReason>} */
const closeReasons = {
  'session-expired': 'expired',
  logout: 'signed-out',
  'user-deleted': 'deleted',
  'session-taken': 'session-taken',
};

const showLastEventId = () => {
  document.body.dataset.lastEventId = String(client.lastEventId);
};

const view = new View({
  async signIn(endpoint, name, password) {
    // The page takes its new state, stream included, from a fresh render: no reconnect here.
    if (endpoint === '/api/auth/register') await client.register(name, password, { reconnect: false });
    else await client.login(name, password, { reconnect: false });
    await refreshState();
  },
  async signOut() {
    signingOut = true;
    try {
      await client.logout({ reconnect: false });
      await refreshState();
    } finally {
      signingOut = false;
    }
  },
  send: (text, key) => {
    typingSender.sent();
    return client.publish({ type: 'message', data: { text } }, key ? { key } : {});
  },
  typing: (text) => typingSender.input(text),
  async rename(name) {
    const me = session.account();
    if (!me) return;
    const u = await client.updateUser(me.id, { name });
    applyAccountChange(u);
  },
  async setType(id, type) {
    await client.updateUser(id, { type: /** @type {import('./stores.js').UserType} */ (type) });
  },
  async remove(id) {
    await client.deleteUser(id);
  },
  reconnect: () => (client.state === 'offline' ? client.connect() : client.reconnectNow()),
  dismiss: () => {
    view.connProblem = null;
    session.update({ ended: null, notice: null, rightsChanged: null });
  },
});

const typingSender = new TypingSender(() => client.signal({ type: 'typing', data: {} }));

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

client.on('state', (s, detail) => {
  view.renderConn(s, detail);
  view.refreshBanner(session.get());
  showLastEventId();
});
// The session frame of every stream, and the answer the library fetched after a 4001 or 4003
// (with that close's reason).
// A render that fails here is tried again with the next stream's session frame.
client.on('session', (s) => void applySession(s.session, s.notice, s.closeReason ?? null).catch(() => {}));

// Events, after the users store (subscribed first) has applied the user-* ones.
client.on('event', (f) => {
  showLastEventId();
  const me = session.account();
  if (!me) return; // anonymous: no users, no messages
  const { type, data } = f.event;
  const d = /** @type {any} */ (data);
  if (type === 'user-update' && d?.id === me.id) applyAccountChange(d);
  else if (type === 'user-delete') typing.stop(d?.id);
  else if (type === 'message') {
    // A new message from someone else is announced (the viewer's own says "Sent").
    if (messages.apply(f) && d?.userId !== me.id) {
      const m = toMessage(f);
      if (m) view.announce(nameOf(m.userId) ?? m.userName, m.text);
    }
    typing.stop(d?.userId); // their message is here: they are done typing it
  }
});

// Events were lost: the users and the messages come again with a new render of the page.
client.on('reset', () => {
  showLastEventId();
  if (!session.account()) return;
  void catchUp(++resets);
});

/**
 * Loads the users and messages after a reset, and while that fails, says so and tries again
 * with backoff (with jitter, doubling up to catchUpMax) until it succeeds, a later reset or a
 * new render takes over, or the session ends.
 * @param {number} mine this reset's number
 */
async function catchUp(mine) {
  for (let delay = catchUpBase; ; delay = Math.min(delay * 2, catchUpMax)) {
    const next = fetchPageState();
    next.catch(() => {}); // the refetches below see its failure
    try {
      await Promise.all([
        messages.refetch(async () => toMessages((await next).messages)),
        users.refetch(async () => (await next).users),
      ]);
      if (mine === resets) view.renderSync('');
      return;
    } catch {
      if (mine !== resets || !session.account()) return;
      const wait = delay * (0.5 + Math.random() / 2);
      view.renderSync(`Could not load the messages missed meanwhile. Trying again in ${Math.ceil(wait / 1000)} s…`);
      await new Promise((resolve) => setTimeout(resolve, wait));
      if (mine !== resets || !session.account()) return;
    }
  }
}

// Presence (the library's store) and typing (docs/protocol.md section 8): signed-in streams only.
client.on('presence-change', (c) => {
  if (!c.online) typing.stop(c.userId);
});
client.on('signal', (s) => {
  const me = session.account();
  // The sender gets its own signals too: the viewer's own typing is not news to them.
  if (!me || s.from === me.id || s.signal.type !== 'typing') return;
  typing.typing(s.from);
});

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
      messages.replaceWith([]);
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
    const rightsChanged = had.type !== now.type ? now.type : session.get().rightsChanged;
    session.update({ session: next, notice, rightsChanged });
    return;
  }
  // Signed in elsewhere, or as someone else: this page's users and messages are not theirs.
  await refreshState();
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
  resets++; // a catch-up after a reset is superseded by this render
  view.renderSync('');
  users.replaceWith(s.users);
  messages.replaceFrames(s.messages);
  online.replaceWith(s.online); // until the stream's presence frame, which supersedes it
  typing.clear();
  const ended = s.notice === 'session-taken' ? 'session-taken' : s.session ? null : session.get().ended;
  session.set({ session: s.session, notice: s.notice, ended, rightsChanged: null });
  if (fresh) client.restart(s.lastEventId);
}

hydrate(state, false);
client.connect();
