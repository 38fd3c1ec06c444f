// @ts-check
// The screens, drawn from the stores with DOM calls (text is never parsed as HTML). Lists are
// keyed by id and updated in place, so focus and scroll survive live updates.

/**
 * @typedef {import('./stores.js').ApiUser} ApiUser
 * @typedef {import('./stores.js').ApiAccount} ApiAccount
 * @typedef {import('./stores.js').Message} Message
 * @typedef {import('./stores.js').SessionState} SessionState
 * @typedef {import('../client/tidings.js').ConnectionState} ConnState
 * @typedef {import('../client/tidings.js').StateDetail} ConnDetail
 * @typedef {{
 *   signIn: (endpoint: string, name: string, password: string) => Promise<void>,
 *   signOut: () => Promise<void>,
 *   send: (text: string, key?: string) => Promise<number>,
 *   typing: (text: string) => void,
 *   rename: (name: string) => Promise<void>,
 *   setType: (id: number, type: string) => Promise<void>,
 *   remove: (id: number) => Promise<void>,
 *   reconnect: () => void,
 *   dismiss: () => void,
 * }} Actions
 */

import { closeSentence, humanError } from './errors.js';

const userTypes = ['regular', 'crew', 'admin'];

/**
 * @param {string} tag
 * @param {Record<string, any>} [props] class, text, on* handlers, and attributes
 * @param {...(Node|string|null|false|undefined)} children
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c) e.append(c);
  return e;
}

const connLabels = { connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline' };

/** @type {Record<import('./stores.js').EndReason, [string, string]>} */
const endings = {
  'session-taken': ['Your session was taken.', 'Someone else used your sign-in, so it was ended everywhere. Sign in again, and sign out on devices you do not trust.'],
  expired: ['Your session expired.', 'Sign in again to carry on.'],
  'signed-out': ['You were signed out.', 'This session was ended from another tab or device.'],
  deleted: ['Your account was deleted.', 'An administrator removed it.'],
  ended: ['Your session ended.', 'Sign in again to carry on.'],
};

/** @param {string} iso */
function clock(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

/**
 * Shows a time in the reader's own time zone: the time of day, and the date and time in full
 * when pointed at.
 * @param {HTMLTimeElement|null} time @param {string} iso
 */
function localTime(time, iso) {
  if (!time) return;
  const text = clock(iso);
  if (time.textContent !== text) time.textContent = text;
  const d = new Date(iso);
  if (!Number.isNaN(d.getTime()) && !time.title) time.title = d.toLocaleString();
}

/** @param {HTMLElement} form @param {string} text @param {'ok'|'error'|''} kind */
function status(form, text, kind) {
  const p = form.querySelector('.status');
  if (!p) return;
  p.textContent = text;
  p.className = `status ${kind}`;
}

export class View {
  /** @param {Actions} actions */
  constructor(actions) {
    this.actions = actions;
    this.conn = /** @type {HTMLElement} */ (document.getElementById('conn'));
    this.account = /** @type {HTMLElement} */ (document.getElementById('account'));
    this.banner = /** @type {HTMLElement} */ (document.getElementById('banner'));
    this.main = /** @type {HTMLElement} */ (document.getElementById('main'));
    /** @type {string|null} */ this.mode = null;
    /** @type {string|null} the account name the rename box was last given */ this.shownName = null;
    /** @type {HTMLElement|null} */ this.usersList = null;
    /** @type {HTMLElement|null} */ this.messagesList = null;
    /** @type {HTMLElement|null} */ this.peopleCount = null;
    /** @type {HTMLElement|null} */ this.typingLine = null;
    /** @type {WeakMap<Element, string>} each user row's shape: whether it has admin controls, and is the viewer's */
    this.rowShapes = new WeakMap();
    /** @type {string|null} */ this.connProblem = null;
    /** @type {string|null} the banner's text as drawn */ this.bannerText = null;
    /**
     * The element that had focus last, also after disabling it sent focus to <body> (a button
     * while its request runs); null when focus was taken elsewhere or left on purpose.
     * @type {HTMLElement|null}
     */
    this.lastFocus = null;
    document.addEventListener('focusin', (ev) => {
      this.lastFocus = /** @type {HTMLElement} */ (ev.target);
    });
    document.addEventListener('focusout', (ev) => {
      if (!ev.relatedTarget && isFocusable(/** @type {HTMLElement} */ (ev.target))) this.lastFocus = null;
    });
  }

  /** @param {ConnState} state @param {ConnDetail} detail */
  renderConn(state, detail) {
    // Without a network, that is the news, whatever the stream is trying meanwhile.
    const noNetwork = state !== 'live' && (detail.offline === true || globalThis.navigator?.onLine === false);
    this.conn.dataset.state = noNetwork ? 'offline' : state;
    const label = /** @type {HTMLElement} */ (this.conn.querySelector('.label'));
    let text = noNetwork ? 'Offline: waiting for the network…' : connLabels[state];
    if (!noNetwork && state === 'reconnecting' && detail.retryIn && detail.retryIn >= 1000) {
      text = `Reconnecting in ${Math.ceil(detail.retryIn / 1000)} s…`;
    }
    label.textContent = text;
    // The button stays while it is wanted (so that focus on it stays too), and focus moves on
    // when it goes.
    const button = this.conn.querySelector('button');
    if (state === 'offline' || (state === 'reconnecting' && (detail.retryIn ?? 0) >= 1000)) {
      if (!button) this.conn.append(el('button', { type: 'button', class: 'link', text: 'Reconnect now', onclick: () => this.actions.reconnect() }));
    } else if (button) {
      this.#keepFocus(() => button.remove());
    }
    this.connProblem = detail.fatal ? closeSentence(detail.code) : null;
  }

  /** @param {SessionState} s */
  renderSession(s) {
    const account = s.session?.account ?? null;
    document.body.dataset.sessionId = s.session ? String(s.session.id) : '';
    document.body.dataset.accountType = account?.type ?? '';
    const mode = account ? 'signed-in' : 'anonymous';
    // A new screen (signed in, signed out) or the sign-out button's going takes focus with it:
    // it moves to the new screen's first field.
    this.#keepFocus(() => {
      this.#renderAccount(account);
      this.#renderBanner(s);
      if (mode !== this.mode) {
        // The first render takes over the screen the server rendered, when it is this one, with
        // what the person typed into it before the scripts ran.
        const adopt = this.mode === null;
        this.mode = mode;
        this.shownName = account?.name ?? null;
        const fresh = account ? this.#signedIn(account, adopt) : this.#anonymous(adopt);
        if (fresh) this.main.replaceChildren(...fresh);
      } else if (account && account.name !== this.shownName) {
        // Renamed (here or elsewhere): the rename box shows the new name, unless it is being edited.
        this.shownName = account.name;
        const input = /** @type {HTMLInputElement|null} */ (this.main.querySelector('#rename-name'));
        if (input && document.activeElement !== input) input.value = account.name;
      }
    });
  }

  /** @param {ApiAccount|null} account */
  #renderAccount(account) {
    if (!account) {
      this.account.replaceChildren();
      return;
    }
    this.account.replaceChildren(
      el('span', { class: 'who' }, 'Signed in as ', el('strong', { class: 'account-name', text: account.name }), ' ',
        el('span', { class: 'badge', 'data-type': account.type, text: account.type })),
      el('button', { type: 'button', class: 'secondary', 'data-action': 'sign-out', text: 'Sign out', onclick: () => this.actions.signOut().catch((err) => {
        this.account.querySelector('.status')?.remove();
        this.account.append(el('span', { class: 'status error', role: 'status', text: humanError(err, 'sign-out') }));
      }) }),
    );
  }

  /** @param {SessionState} s */
  #renderBanner(s) {
    /** @type {[string, string, string]|null} */
    let msg = null;
    if (this.connProblem) msg = ['error', 'The connection was refused.', `${this.connProblem} Reload the page to try again.`];
    else if (s.ended) msg = ['warn', ...endings[s.ended]];
    else if (s.rightsChanged) msg = ['info', 'Your rights changed.', `You are now ${s.rightsChanged}.`];
    if (!msg) {
      this.banner.hidden = true;
      this.banner.replaceChildren();
      delete this.banner.dataset.kind;
      this.bannerText = null;
      return;
    }
    this.banner.dataset.kind = s.ended ?? (this.connProblem ? 'connection' : 'rights');
    this.banner.className = `banner ${msg[0]}`;
    // The same notice is not drawn again: its Dismiss button keeps focus, and it is not read out twice.
    if (this.bannerText === msg.join('\n') && !this.banner.hidden) return;
    this.bannerText = msg.join('\n');
    this.banner.replaceChildren(
      el('p', {}, el('strong', { text: msg[1] }), ` ${msg[2]}`),
      el('button', { type: 'button', class: 'link', text: 'Dismiss', 'aria-label': 'Dismiss this notice', onclick: () => this.actions.dismiss() }),
    );
    this.banner.hidden = false;
  }

  /** Shows a refused connection in the banner. @param {SessionState} s */
  refreshBanner(s) {
    this.#keepFocus(() => this.#renderBanner(s));
  }

  /** The focused element, or the one that lost focus by being disabled. @returns {HTMLElement|null} */
  #focused() {
    const e = document.activeElement;
    return e && e !== document.body ? /** @type {HTMLElement} */ (e) : this.lastFocus;
  }

  /**
   * Runs a render; if it took away the focused element (removed, hidden or disabled it), puts
   * focus on its successor (the element with the same id, or the same data-action when only
   * one has it) or else on the screen's first field, so that focus is never lost to <body>.
   * @param {() => void} render
   * @param {() => HTMLElement|null|undefined} [fallback] where focus goes when the element has no successor
   */
  #keepFocus(render, fallback) {
    const had = this.#focused();
    render();
    if (!had || isFocusable(had)) return;
    const now = document.activeElement;
    if (now && now !== document.body && now !== had) return; // it went somewhere already
    const action = had.dataset?.action;
    const same = action ? document.querySelectorAll(`[data-action="${CSS.escape(action)}"]`) : [];
    const next = [
      had.id ? document.getElementById(had.id) : null,
      same.length === 1 ? /** @type {HTMLElement} */ (same[0]) : null,
      fallback?.(),
      document.getElementById('composer-text'),
      document.getElementById('sign-in-name'),
    ].find((e) => e && isFocusable(e));
    next?.focus();
  }

  /** @param {boolean} adopt take the server's forms, when they are there @returns {HTMLElement[]|null} null: adopted */
  #anonymous(adopt) {
    this.usersList = this.messagesList = this.peopleCount = this.typingLine = null;
    const server = adopt && this.main.querySelector('#sign-in') && this.main.querySelector('#register');
    /** @param {string} id @param {string} title @param {string} endpoint @param {boolean} creating */
    const form = (id, title, endpoint, creating) => {
      const f = (server && /** @type {HTMLElement} */ (this.main.querySelector(`#${id}`))) || el('form', { id, method: 'post', action: '/', class: 'card' },
        el('h3', { text: title }),
        el('label', { for: `${id}-name`, text: 'Name' }),
        el('input', { id: `${id}-name`, name: 'name', autocomplete: 'username', required: true, maxlength: 64,
          pattern: creating ? '[A-Za-z0-9._\\-]{1,64}' : null, 'aria-describedby': creating ? `${id}-hint` : null }),
        el('label', { for: `${id}-password`, text: 'Password' }),
        el('input', { id: `${id}-password`, name: 'password', type: 'password', required: true,
          autocomplete: creating ? 'new-password' : 'current-password', minlength: creating ? 8 : null,
          'aria-describedby': creating ? `${id}-hint` : null }),
        creating && el('p', { id: `${id}-hint`, class: 'hint', text: "A name of letters, digits, '.', '-' or '_'; a password of at least 8 characters." }),
        el('button', { type: 'submit', text: creating ? 'Create account' : 'Sign in' }),
        el('p', { class: 'status', role: 'status', 'aria-live': 'polite' }),
      );
      f.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const data = new FormData(/** @type {HTMLFormElement} */ (f));
        const button = /** @type {HTMLButtonElement} */ (f.querySelector('button'));
        button.disabled = true;
        status(f, creating ? 'Creating your account…' : 'Signing in…', '');
        try {
          await this.actions.signIn(endpoint, String(data.get('name')), String(data.get('password')));
        } catch (err) {
          status(f, humanError(err, creating ? 'register' : 'sign-in'), 'error');
          button.disabled = false;
          if (this.lastFocus === button && document.activeElement === document.body) button.focus(); // disabled, it had lost focus
        }
      });
      return f;
    };
    const forms = [form('sign-in', 'Sign in', '/api/auth/login', false), form('register', 'Create an account', '/api/auth/register', true)];
    if (server) return null;
    return [el('section', { class: 'welcome', 'aria-labelledby': 'welcome-title' },
      el('h2', { id: 'welcome-title', text: 'Welcome to tidings' }),
      el('p', { text: 'Sign in to see who is here and to talk with them, live.' }),
      el('div', { class: 'auth-forms' }, ...forms))];
  }

  /**
   * @param {ApiAccount} account
   * @param {boolean} adopt take the server's screen, when it is there
   * @returns {HTMLElement[]|null} null: adopted
   */
  #signedIn(account, adopt) {
    const m = this.main;
    const server = adopt && ['#messages', '#composer', '#composer-text', '#users', '#people-title .count', '#rename', '#rename-name', '#typing']
      .every((sel) => m.querySelector(sel));
    /** @template {HTMLElement} E @param {string} sel @param {Record<string, any>} attrs @param {() => E} make @returns {E} */
    const take = (sel, attrs, make) => {
      if (!server) return make();
      const e = /** @type {E} */ (m.querySelector(sel));
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v)); // as the client draws it
      return e;
    };
    const listAttrs = { tabindex: 0, 'aria-label': 'Messages, oldest first' };
    // A list, not a live region: rows are re-ordered, renamed and refetched, which nobody
    // should hear; new messages are announced by a hidden live region after it (announce).
    this.messagesList = take('#messages', listAttrs, () => el('ol', { id: 'messages', class: 'messages', ...listAttrs }));
    const text = take('#composer-text', {}, () => /** @type {HTMLTextAreaElement} */ (el('textarea', { id: 'composer-text', name: 'text', rows: 2, maxlength: 4000, required: true,
      placeholder: 'Write a message (Enter sends, Shift+Enter for a new line)' })));
    const composer = take('#composer', {}, () => /** @type {HTMLFormElement} */ (el('form', { id: 'composer', method: 'post', action: '/', class: 'composer', autocomplete: 'off' },
      el('label', { for: 'composer-text', class: 'visually-hidden', text: 'Message' }),
      text,
      el('button', { type: 'submit', text: 'Send' }),
      el('p', { class: 'status', role: 'status', 'aria-live': 'polite' }))));
    text.addEventListener('input', () => this.actions.typing(text.value));
    text.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        composer.requestSubmit();
      }
    });
    // One message at a time: a second click or Enter while one is on its way sends nothing.
    let sending = false;
    /** @type {{text: string, key: string}|null} the last failed send: the same text again goes with its key, so it is stored once */
    let failed = null;
    composer.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const value = text.value.trim();
      if (!value || sending) return;
      sending = true;
      status(composer, 'Sending…', '');
      try {
        await this.actions.send(value, failed?.text === value ? failed.key : undefined);
        failed = null;
        if (text.value.trim() === value) text.value = '';
        status(composer, 'Sent.', 'ok');
      } catch (err) {
        const e = /** @type {any} */ (err);
        const reused = e?.code === 'idempotency-key-reused'; // the next try goes with a new key
        failed = typeof e?.key === 'string' && !reused ? { text: value, key: e.key } : null;
        status(composer, `Not sent. ${humanError(err, 'send')}`, 'error');
      } finally {
        sending = false;
      }
    });

    this.usersList = take('#users', {}, () => el('ul', { id: 'users', class: 'users' }));
    this.peopleCount = take('#people-title .count', {}, () => el('span', { class: 'count' }));
    const renameInput = take('#rename-name', { autocomplete: 'off' }, () => {
      const input = /** @type {HTMLInputElement} */ (el('input', { id: 'rename-name', name: 'name', required: true, maxlength: 64,
        pattern: '[A-Za-z0-9._\\-]{1,64}', autocomplete: 'off' }));
      input.value = account.name;
      return input;
    });
    const rename = take('#rename', {}, () => el('form', { id: 'rename', method: 'post', action: '/', class: 'rename', autocomplete: 'off' },
      el('label', { for: 'rename-name', text: 'Your name' }),
      el('div', { class: 'row' }, renameInput, el('button', { type: 'submit', text: 'Rename' })),
      el('p', { class: 'status', role: 'status', 'aria-live': 'polite' })));
    rename.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      status(rename, 'Saving…', '');
      try {
        await this.actions.rename(renameInput.value.trim());
        status(rename, 'Saved.', 'ok');
      } catch (err) {
        status(rename, humanError(err, 'rename'), 'error');
      }
    });

    // Polite and atomic: the whole line is read, when the person is free, and only when it
    // changes (renderTyping writes only then); its emptying is not announced.
    this.typingLine = take('#typing', {}, typingLine);

    if (server) return null;
    return [el('div', { class: 'layout' },
      el('section', { class: 'card feed', 'aria-labelledby': 'feed-title' },
        el('h2', { id: 'feed-title', text: 'Messages' }), this.messagesList, announcer(), this.typingLine, composer),
      el('aside', { class: 'card people', 'aria-labelledby': 'people-title' },
        el('h2', { id: 'people-title' }, 'People ', this.peopleCount), this.usersList, rename))];
  }

  /**
   * @param {Message[]} messages
   * @param {ApiAccount|null} account
   * @param {(userId: number) => string|undefined} nameOf a sender's current name, if known
   */
  renderMessages(messages, account, nameOf) {
    const list = this.messagesList;
    if (!list) return;
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    const rows = new Map();
    for (const li of [...list.children]) {
      const id = /** @type {HTMLElement} */ (li).dataset.id;
      if (id) rows.set(Number(id), li);
      else li.remove();
    }
    messages.forEach((m, i) => {
      let li = rows.get(m.id);
      rows.delete(m.id);
      if (!li) {
        li = el('li', { class: 'message', 'data-id': m.id },
          el('div', { class: 'meta' }, el('span', { class: 'from', text: m.userName }), ' ',
            el('time', { datetime: m.time })),
          el('p', { class: 'text', text: m.text }));
      }
      li.classList.toggle('mine', account !== null && m.userId === account.id);
      localTime(/** @type {HTMLTimeElement|null} */ (li.querySelector('time')), m.time); // the server's says UTC
      const from = /** @type {HTMLElement} */ (li.querySelector('.from'));
      const name = nameOf(m.userId) ?? m.userName; // senders may have been renamed since
      if (from.textContent !== name) from.textContent = name;
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
    });
    for (const li of rows.values()) li.remove();
    if (messages.length === 0) list.append(el('li', { class: 'empty', text: 'No messages yet. Say hello.' }));
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  /**
   * Says, above the messages, that the messages missed meanwhile are not loaded yet ("": they are).
   * @param {string} text
   */
  renderSync(text) {
    let line = document.getElementById('sync');
    if (!text) {
      line?.remove();
      return;
    }
    if (!line) {
      if (!this.messagesList) return;
      line = el('p', { id: 'sync', class: 'status error', role: 'status' });
      this.messagesList.before(line);
    }
    line.textContent = text;
  }

  /**
   * Says who else is typing. The line keeps its place when empty, so that nothing moves, and
   * is written only when its text changes: a typing signal every 2 s repeats nothing.
   * @param {string} text
   */
  renderTyping(text) {
    const line = this.typingLine;
    if (!line || line.textContent === text) return;
    line.textContent = text;
  }

  /**
   * Announces a new message from someone else to screen readers, politely: a line added to the
   * visually hidden live region, which keeps the last few.
   * @param {string} from @param {string} text
   */
  announce(from, text) {
    const region = document.getElementById('announcer');
    if (!region) return;
    const short = text.length > 300 ? `${text.slice(0, 300)}…` : text;
    region.append(el('p', { text: `${from}: ${short}` }));
    while (region.childElementCount > 5) region.firstElementChild?.remove();
  }

  /**
   * Draws the People list. A control that goes with its row (deleted, or redrawn for new
   * rights) or is hidden (Save, once saved) passes focus to the same row's first control, else
   * to the row now in its place or the one before it, else to the name field.
   * @param {ApiUser[]} users @param {ApiAccount|null} account @param {ReadonlySet<number>} online
   */
  renderUsers(users, account, online) {
    const list = this.usersList;
    if (!list) return;
    const had = this.#focused();
    const row = /** @type {HTMLElement|null} */ (had && list.contains(had) ? had.closest('li') : null);
    const at = row ? [...list.children].indexOf(row) : -1;
    this.#keepFocus(() => this.#renderUsers(users, account, online), () => {
      if (!row) return null;
      const rows = [list.querySelector(`li[data-id="${row.dataset.id}"]`), list.children[at], list.children[at - 1]];
      for (const li of rows) {
        const c = [...(li?.querySelectorAll('select, button') ?? [])].find((e) => isFocusable(/** @type {HTMLElement} */ (e)));
        if (c) return /** @type {HTMLElement} */ (c);
      }
      return document.getElementById('rename-name');
    });
  }

  /** @param {ApiUser[]} users @param {ApiAccount|null} account @param {ReadonlySet<number>} online */
  #renderUsers(users, account, online) {
    const list = this.usersList;
    if (!list || !this.peopleCount) return;
    this.peopleCount.textContent = String(users.length);
    const admin = account?.type === 'admin';
    const rows = new Map();
    for (const li of [...list.children]) rows.set(Number(/** @type {HTMLElement} */ (li).dataset.id), li);
    users.forEach((u, i) => {
      let li = rows.get(u.id);
      rows.delete(u.id);
      const me = account !== null && u.id === account.id;
      const shape = `${admin}/${me}`;
      if (!li || this.rowShapes.get(li) !== shape) {
        const fresh = this.#userRow(u, admin, me);
        this.rowShapes.set(fresh, shape);
        if (li) li.replaceWith(fresh);
        li = fresh;
      }
      li.dataset.type = u.type;
      setPresence(li, online.has(u.id));
      li.querySelector('.name').textContent = u.name;
      const badge = li.querySelector('.badge');
      badge.textContent = u.type;
      badge.dataset.type = u.type;
      const select = /** @type {HTMLSelectElement|null} */ (li.querySelector('select'));
      const save = /** @type {HTMLButtonElement|null} */ (li.querySelector('[data-action=save-type]'));
      if (select && save) {
        if (save.hidden) select.value = u.type; // no edit pending: show the current type
        save.hidden = select.value === u.type;
        select.setAttribute('aria-label', `Type of ${u.name}`);
        save.setAttribute('aria-label', `Save the type of ${u.name}`);
      }
      const del = li.querySelector('[data-action=delete]');
      if (del) del.setAttribute('aria-label', del.classList.contains('armed') ? `Confirm: delete ${u.name}` : `Delete ${u.name}`);
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] ?? null);
    });
    for (const li of rows.values()) li.remove();
  }

  /** @param {ApiUser} u @param {boolean} admin @param {boolean} me */
  #userRow(u, admin, me) {
    const rowStatus = el('span', { class: 'row-status', role: 'status', 'aria-live': 'polite' });
    /** @param {string} text @param {string} kind */
    const say = (text, kind) => {
      rowStatus.textContent = text;
      rowStatus.className = `row-status ${kind}`;
    };
    let controls = null;
    if (admin) {
      const select = /** @type {HTMLSelectElement} */ (el('select', { 'data-action': 'type' },
        ...userTypes.map((t) => el('option', { value: t, text: t }))));
      select.value = u.type;
      // A change takes a second step, so that moving through the options with the keyboard
      // does not change rights on the way.
      const save = /** @type {HTMLButtonElement} */ (el('button', { type: 'button', class: 'secondary small', 'data-action': 'save-type', text: 'Save', hidden: true }));
      const row = () => /** @type {HTMLElement} */ (select.closest('li'));
      select.addEventListener('change', () => {
        save.hidden = select.value === row().dataset.type;
        say('', '');
      });
      save.addEventListener('click', async () => {
        save.disabled = true;
        say('Saving…', '');
        try {
          await this.actions.setType(u.id, select.value);
          this.#keepFocus(() => {
            save.hidden = true;
          }, () => select);
          say('Saved.', 'ok');
        } catch (err) {
          say(humanError(err, 'type'), 'error');
        } finally {
          save.disabled = false;
        }
      });
      controls = el('span', { class: 'controls' }, select, save);
      if (!me) {
        let armed = /** @type {any} */ (null);
        const del = el('button', { type: 'button', class: 'danger', 'data-action': 'delete', text: 'Delete' });
        const name = () => del.closest('li')?.querySelector('.name')?.textContent ?? u.name;
        del.addEventListener('click', async () => {
          if (!armed) {
            // The button's name and the row's status say what a second press does.
            del.textContent = 'Confirm delete';
            del.classList.add('armed');
            del.setAttribute('aria-label', `Confirm: delete ${name()}`);
            say(`Press Confirm delete within 5 seconds to delete ${name()}.`, '');
            armed = setTimeout(() => {
              armed = null;
              del.textContent = 'Delete';
              del.classList.remove('armed');
              del.setAttribute('aria-label', `Delete ${name()}`);
              say('', '');
            }, 5000);
            return;
          }
          clearTimeout(armed);
          armed = null;
          say('Deleting…', '');
          try {
            await this.actions.remove(u.id);
          } catch (err) {
            del.textContent = 'Delete';
            del.classList.remove('armed');
            del.setAttribute('aria-label', `Delete ${name()}`);
            say(humanError(err, 'delete'), 'error');
          }
        });
        controls.append(del);
      }
    }
    // The same markup as web/static/page.html renders, so that hydration changes nothing.
    return el('li', { class: 'user', 'data-id': u.id },
      el('span', { class: 'online-dot', 'aria-hidden': 'true' }), el('span', { class: 'name' }),
      el('span', { class: 'online-label visually-hidden' }), ' ', el('span', { class: 'badge' }),
      me && el('span', { class: 'you', text: 'you' }), controls, rowStatus);
  }
}

/** The polite live region that announces new messages, as web/static/page.html renders it. */
function announcer() {
  return el('div', { id: 'announcer', class: 'visually-hidden', role: 'log', 'aria-live': 'polite' });
}

/** The line that says who is typing, as web/static/page.html renders it. */
function typingLine() {
  return el('p', { id: 'typing', class: 'typing', role: 'status', 'aria-live': 'polite', 'aria-atomic': 'true' });
}

/**
 * Shows whether a user is online: the dot's shape (filled or hollow) and colour for the eye,
 * the words "online" or "offline" for a screen reader (the dot itself is hidden from it).
 * @param {HTMLElement} li @param {boolean} on
 */
function setPresence(li, on) {
  const value = String(on);
  if (li.dataset.online === value) return;
  li.dataset.online = value;
  const label = /** @type {HTMLElement} */ (li.querySelector('.online-label'));
  label.textContent = on ? 'online' : 'offline';
}

/**
 * Whether focus can stay on e: it is in the page, shown, and not disabled.
 * @param {HTMLElement} e
 */
function isFocusable(e) {
  return e.isConnected && e.getClientRects().length > 0 && !(/** @type {any} */ (e).disabled) && !e.closest('[hidden], [inert]');
}
