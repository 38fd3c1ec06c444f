// @ts-check
// What the page says when something went wrong: a sentence for every error code the server and
// the library have (the API's, docs/protocol.md; the stream's error frames and refused upgrades;
// the library's own), never the code, the server's technical message or an id.

/**
 * What the person was doing: the same code reads differently for each.
 * @typedef {'sign-in'|'register'|'send'|'rename'|'type'|'delete'|'sign-out'} Doing
 */

const tryAgain = 'Try again in a moment.';
const mismatch = 'This page and the server do not understand each other. Reload the page.';
const serverFault = `Something went wrong on the server. ${tryAgain}`;
const nameRule = "A name is 1 to 64 letters, digits, '.', '-' or '_'.";

/**
 * The sentence for each code, and where it reads differently, for what the person was doing.
 * @type {Record<string, string | ({default: string} & Partial<Record<Doing, string>>)>}
 */
export const errorSentences = {
  // The library's own (web/client/tidings.js): no answer, or none in time.
  network: 'The server cannot be reached. Check your connection and try again.',
  offline: 'Not connected right now. Try again once the connection is back.',
  'queue-full': 'Too many messages are waiting to go out. Wait a moment and try again.',
  timeout: {
    default: `The server did not answer in time. ${tryAgain}`,
    send: 'The server did not answer in time. Send it again: it will not be stored twice.',
  },
  closed: {
    default: `The connection dropped before the server answered. ${tryAgain}`,
    send: 'The connection dropped before the server answered. Send it again: it will not be stored twice.',
  },
  'invalid-answer': serverFault,
  // The API's and the stream's refusals (web/errors.go, realtime/frames.go).
  'bad-login': 'Wrong name or password.',
  'name-taken': 'That name is taken. Choose another.',
  invalid: {
    default: mismatch,
    'sign-in': `${nameRule} A password has at least 8 characters.`,
    register: `${nameRule} A password has at least 8 characters.`,
    rename: nameRule,
    send: 'A message is 1 to 4000 characters.',
    type: 'A user is regular, crew or admin.',
  },
  'too-large': { default: 'That is too large to send.', send: 'A message is 1 to 4000 characters.' },
  'rate-limited': {
    default: 'Too many changes at once. Wait a little and try again.',
    'sign-in': 'Too many failed sign-ins. Wait a few minutes and try again.',
    register: 'Too many new users from here. Wait a while and try again.',
    send: 'You are sending faster than the server takes. Wait a moment and try again.',
  },
  busy: `The server is busy checking passwords. ${tryAgain}`,
  unavailable: `The server cannot reach its database. ${tryAgain}`,
  'outcome-unknown': {
    default: `The server could not tell whether it was saved. ${tryAgain}`,
    send: 'The server could not tell whether it was stored. Send it again: it will not be stored twice.',
  },
  'idempotency-key-reused': { default: mismatch, send: 'It could not be sent again as it was. Press Send once more.' },
  internal: serverFault,
  unauthenticated: 'You are not signed in any more. Sign in and try again.',
  unauthorized: 'You are not signed in any more. Sign in and try again.',
  forbidden: 'Your account may not do this.',
  'not-found': { default: 'It is not there any more.', rename: 'Your user is not there any more.', type: 'That user is not there any more.', delete: 'That user is not there any more.' },
  'request-timeout': `Your request took too long to arrive. ${tryAgain}`,
  'invalid-body': mismatch,
  'invalid-frame': mismatch,
  'invalid-event': mismatch,
  'invalid-idempotency-key': mismatch,
  'unsupported-media-type': mismatch,
  'method-not-allowed': mismatch,
  'invalid-last-event-id': mismatch,
  'invalid-subprotocol': mismatch,
  'invalid-authorization': mismatch,
  'invalid-audience': mismatch,
  'too-many-streams': 'Too many pages of tidings are open here. Close some and try again.',
  'database-unreachable': `The server cannot reach its database. ${tryAgain}`,
  starting: `The server is starting. ${tryAgain}`,
  'listener-down': `The server is not ready. ${tryAgain}`,
  'event-log-stalled': `The server is not ready. ${tryAgain}`,
  'forbidden-origin': 'This page is not allowed to talk to the server from where it was opened.',
  'misdirected-request': 'This server does not answer for the address in your browser.',
};

/**
 * The sentence that tells a person what went wrong.
 * @param {any} err a TidingsError (code, status), or anything thrown
 * @param {Doing} doing
 */
export function humanError(err, doing) {
  const code = typeof err?.code === 'string' ? err.code : '';
  const s = Object.hasOwn(errorSentences, code) ? errorSentences[code] : null;
  if (typeof s === 'string') return s;
  if (s) return s[doing] ?? s.default;
  if (err?.status >= 500) return serverFault;
  return code ? mismatch : serverFault;
}

/**
 * Why the server refused the stream for good (a close that a retry cannot cure).
 * @param {number|undefined} code the close code
 */
export function closeSentence(code) {
  return code === 1009 ? 'This page sent the server something too large.' : 'This page and the server do not understand each other.';
}
