// Unit tests of the library's HTTP side (web/client/tidings.js), in node, with a fake fetch and
// a fake WebSocket: the base URL, errors, bearer sessions as docs/protocol.md specifies them
// (the token on requests and as a subprotocol, its successor from a header or a token frame, an
// empty header that forgets it), and the users store over its snapshots.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { flush, sessionOf, setup } from './fakes.js';
import { Tidings, TidingsError, UsersStore } from '../client/tidings.js';

test('requests: the base URL, JSON both ways, no Content-Type without a body, errors as TidingsError', async () => {
  let next = {};
  const { client, requests, sock } = setup({ baseUrl: 'https://tidings.example:8443/base/', answer: () => next });
  client.connect();
  assert.equal(sock().url, 'wss://tidings.example:8443/base/api/events?lastEventId=10');

  next = { body: [{ id: 1, name: 'alice', type: 'admin' }] };
  assert.deepEqual(await client.users(), [{ id: 1, name: 'alice', type: 'admin' }]);
  let r = requests.at(-1);
  assert.equal(r.url, 'https://tidings.example:8443/base/api/users');
  assert.deepEqual(r.headers, { Accept: 'application/json' }, 'a GET sends no Content-Type and no Authorization');
  assert.equal(r.init.credentials, 'include');
  assert.equal(r.init.cache, 'no-store');

  next = { body: { id: 2, name: 'bob', type: 'crew' } };
  await client.updateUser(2, { type: 'crew' });
  r = requests.at(-1);
  assert.deepEqual([r.method, r.url, r.headers['Content-Type'], r.body], ['PATCH', 'https://tidings.example:8443/base/api/users/2', 'application/json', { type: 'crew' }]);

  next = { status: 204 };
  assert.equal(await client.deleteUser(2), undefined);
  next = { status: 401, body: { error: { code: 'unauthenticated', message: 'sign in first' } } };
  await assert.rejects(client.presence(), (e) => e instanceof TidingsError && e.code === 'unauthenticated' && e.status === 401 && e.message === 'sign in first');
  next = { status: 502, body: 'not json', headers: { 'Content-Type': 'text/plain' } };
  await assert.rejects(client.watermark(), (e) => e.code === 'http-502' && e.status === 502);
  next = { networkError: true };
  await assert.rejects(client.fetchSession(), (e) => e.code === 'network' && e.status === 0);
  next = { body: { lastEventId: 77 } };
  assert.equal(await client.watermark(), 77);
  next = { body: { online: [3, 'x', 4] } };
  assert.deepEqual(await client.presence(), [3, 4]);

  assert.throws(() => new Tidings({ baseUrl: 'ftp://x' }), TypeError);
  assert.throws(() => new Tidings({}), /baseUrl is required/, 'no page: no default origin');
});

test('bearer: the token on requests and as a subprotocol; the successor from the header; an empty one forgets it', async () => {
  let next = {};
  const told = [];
  const { client, requests, sock, reconnect } = setup({ token: 'tok1', onToken: (t) => told.push(t), answer: () => next });
  const events = [];
  client.on('token', (t) => events.push(t));
  client.connect();
  assert.deepEqual(sock().protocols, ['tidings', 'tidings-bearer.tok1'], 'offered, never in the URL');
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=10');

  next = { body: { session: sessionOf(7), notice: null }, headers: { 'Tidings-Session-Token': 'tok2' } };
  await client.fetchSession();
  assert.equal(requests.at(-1).headers.Authorization, 'Bearer tok1');
  assert.equal(client.token, 'tok2');
  assert.deepEqual(told, ['tok2']);
  assert.deepEqual(events, ['tok2']);

  next = { body: { session: sessionOf(7), notice: null } }; // no header: the token stays
  await client.fetchSession();
  assert.equal(requests.at(-1).headers.Authorization, 'Bearer tok2');
  assert.equal(client.token, 'tok2');

  sock().serverClose(4002, 'session-rotated');
  reconnect();
  assert.deepEqual(sock().protocols, ['tidings', 'tidings-bearer.tok2']);

  // Theft (section 4.4): answered anonymous, and told to forget the token.
  next = { body: { session: null, notice: 'session-taken' }, headers: { 'Tidings-Session-Token': '' } };
  const s = await client.fetchSession();
  assert.deepEqual(s, { session: null, notice: 'session-taken' });
  assert.equal(client.token, null);
  assert.deepEqual(told, ['tok2', null]);
  await client.fetchSession();
  assert.equal(requests.at(-1).headers.Authorization, undefined, 'no token, no header');
  sock().serverClose(1001, 'going-away');
  reconnect();
  assert.deepEqual(sock().protocols, ['tidings.v1', 'tidings'], 'a cookie stream again');
});

test('bearer: a token frame stores the successor before the 4002; a cookie stream ignores one', () => {
  const told = [];
  const { client, sock, reconnect, live, requests } = setup({ token: 'tok1', onToken: (t) => told.push(t) });
  client.connect();
  live(sessionOf(7)); // at rotatesAt, after ready: the token frame, then the 4002
  sock().frame({ type: 'token', token: 'tok 2' }); // not base64url: not a token
  sock().frame({ type: 'token', token: 'tok2' });
  sock().serverClose(4002, 'session-rotated');
  reconnect();
  assert.deepEqual(sock().protocols, ['tidings', 'tidings-bearer.tok2']);
  assert.deepEqual(told, ['tok2']);
  assert.equal(requests.length, 0, 'the reconnection presents it: nothing asked');

  const cookie = setup();
  cookie.client.connect();
  cookie.sock().frame({ type: 'token', token: 'stray' });
  assert.equal(cookie.client.token, null);
});

test('bearer: the upgrade rotated the session: its successor, from the token frame, is presented at once, never the old token', async () => {
  const told = [];
  const { client, sock, requests, live } = setup({
    token: 'tok1', session: sessionOf(7, 100), onToken: (t) => told.push(t),
    answer: () => ({ body: { session: sessionOf(7, 101), notice: null } }),
  });
  client.connect();
  // The session frame shows the successor session; its token follows in the token frame.
  sock().frame({ type: 'session', session: sessionOf(7, 101), notice: null });
  await flush();
  assert.equal(requests.length, 0, 'not presented with the old token');
  sock().frame({ type: 'token', token: 'tok2' });
  await flush();
  assert.deepEqual(requests.map((r) => [r.url, r.headers.Authorization]), [['http://test/api/session', 'Bearer tok2']]);
  assert.deepEqual(told, ['tok2']);
  live(sessionOf(7, 101));
  await flush();
  assert.equal(requests.length, 1, 'asked once');
  assert.equal(client.token, 'tok2');
});

test('bearer: a token the server resolves to no session (expired, ended, taken) is forgotten', async () => {
  const told = [];
  const { client, sock, reconnect } = setup({ token: 'tok1', onToken: (t) => told.push(t) });
  client.connect();
  sock().frame({ type: 'session', session: sessionOf(7), notice: null });
  assert.equal(client.token, 'tok1');
  sock().serverClose(1001, 'going-away');
  reconnect();
  sock().frame({ type: 'session', session: null, notice: 'session-taken' });
  assert.equal(client.token, null);
  assert.deepEqual(told, [null]);
  sock().serverClose(1001, 'going-away');
  reconnect();
  assert.deepEqual(sock().protocols, ['tidings.v1', 'tidings'], 'the dead token is not offered again');

  // Over HTTP too, but only about the token the request carried.
  const http = setup({ token: 'tok1', answer: () => ({ body: { session: null, notice: null } }) });
  await http.client.fetchSession();
  assert.equal(http.client.token, null);
});

test('bearer: login and register ask for a bearer session and store its token; logout forgets it; the stream reopens with each', async () => {
  let next = {};
  const told = [];
  const { client, requests, sock } = setup({ bearer: true, onToken: (t) => told.push(t), answer: () => next });
  client.connect();
  assert.deepEqual(sock().protocols, ['tidings.v1', 'tidings'], 'no token yet');

  next = { status: 201, body: { ...sessionOf(7), token: 'tokA' } };
  const s = await client.register('alice', 'password-alice');
  assert.deepEqual(requests.at(-1).body, { name: 'alice', password: 'password-alice', bearer: true });
  assert.deepEqual(s, sessionOf(7), 'the token is not in the session handed back');
  assert.equal(client.token, 'tokA');
  assert.deepEqual(sock().protocols, ['tidings', 'tidings-bearer.tokA'], 'the stream reopened with the new session');
  assert.equal(sock().url, 'ws://test/api/events?lastEventId=10');

  next = { status: 204 };
  const before = sock();
  await client.logout();
  assert.deepEqual([requests.at(-1).method, requests.at(-1).url, requests.at(-1).headers.Authorization],
    ['POST', 'http://test/api/auth/logout', 'Bearer tokA']);
  assert.equal(client.token, null);
  assert.notEqual(sock(), before);
  assert.deepEqual(sock().protocols, ['tidings.v1', 'tidings']);

  next = { body: { ...sessionOf(7), token: 'tokB' } };
  const quiet = sock();
  await client.login('alice', 'password-alice', { reconnect: false });
  assert.equal(client.token, 'tokB');
  assert.equal(sock(), quiet, 'reconnect: false leaves the stream to the app');
  assert.deepEqual(told, ['tokA', null, 'tokB']);

  // A cookie client asks for no token, and keeps none.
  const cookie = setup({ answer: () => ({ body: { ...sessionOf(8), token: 'tokC' } }) });
  await cookie.client.login('bob', 'password-bob');
  assert.deepEqual(cookie.requests.at(-1).body, { name: 'bob', password: 'password-bob' });
  assert.equal(cookie.client.token, null);
});

test('bearer: a header about a token the client no longer holds changes nothing; a bad token is refused', async () => {
  const { client, requests } = setup({ token: 'tok1', answer: () => ({ headers: { 'Tidings-Session-Token': '' } }) });
  const out = client.fetchSession(); // sent with tok1; its answer comes after the next line
  client.setToken('tok9'); // a sign-in elsewhere gave another token while the request was out
  await out;
  assert.equal(requests[0].headers.Authorization, 'Bearer tok1');
  assert.equal(client.token, 'tok9', 'the answer was about tok1');
  assert.throws(() => client.setToken('a b'), TypeError);
  assert.throws(() => new Tidings({ baseUrl: 'http://x', token: 'x=' }), TypeError, 'base64url has no padding');
});

test('users: a snapshot, user events applied once in id order, refetched after a reset with the events meanwhile, emptied when anonymous', async () => {
  let users = [{ id: 1, name: 'alice', type: 'regular' }];
  const { client, sock, requests } = setup({
    session: sessionOf(1),
    answer: (req) => (req.url.endsWith('/api/users') ? { body: users } : {}),
  });
  const fetchUsers = () => requests.filter((r) => r.url.endsWith('/api/users')).length;
  const store = new UsersStore(client, { users: [{ id: 2, name: 'bob', type: 'regular' }, { id: 1, name: 'alice', type: 'admin' }] });
  let published = 0;
  store.subscribe(() => published++);
  assert.deepEqual(store.get().map((u) => u.id), [1, 2]);
  client.connect();
  sock().frame({ type: 'session', session: sessionOf(1), notice: null });
  assert.equal(fetchUsers(), 0, 'the snapshot given is this session\'s');
  const ev = (id, type, data) => sock().frame({ type: 'event', id, event: { type, data, time: '' } });
  ev(11, 'user-update', { id: 2, name: 'bob', type: 'regular' }); // no change
  ev(12, 'user-update', { id: 2, name: 'robert', type: 'crew' });
  ev(12, 'user-update', { id: 2, name: 'robert', type: 'crew' }); // seen: not handed over again
  ev(13, 'user-update', { id: 3, name: 'carol', type: 'regular' });
  ev(14, 'user-delete', { id: 1 });
  ev(15, 'message', { text: 'x' });
  ev(16, 'user-update', { id: 4, name: 7, type: 'regular' }); // malformed
  assert.deepEqual(store.get(), [{ id: 2, name: 'robert', type: 'crew' }, { id: 3, name: 'carol', type: 'regular' }]);
  assert.equal(published, 3);

  // A reset: the store fetches /api/users; the snapshot it gets is older than events that
  // arrive meanwhile, which apply again over it.
  users = [{ id: 1, name: 'alice', type: 'regular' }, { id: 2, name: 'bob', type: 'regular' }];
  sock().frame({ type: 'reset', lastEventId: 100 });
  assert.equal(fetchUsers(), 1);
  ev(101, 'user-update', { id: 5, name: 'dave', type: 'regular' });
  ev(102, 'user-delete', { id: 1 });
  await flush();
  assert.deepEqual(store.get().map((u) => `${u.id}:${u.name}`), ['2:bob', '5:dave']);

  // Another account: its users; anonymous: none.
  users = [{ id: 9, name: 'zed', type: 'regular' }];
  sock().frame({ type: 'session', session: sessionOf(9), notice: null });
  await flush();
  assert.deepEqual(store.get().map((u) => u.id), [9]);
  sock().frame({ type: 'session', session: null, notice: null });
  assert.deepEqual(store.get(), []);
  sock().frame({ type: 'reset', lastEventId: 200 });
  assert.equal(fetchUsers(), 2, 'anonymous: nothing to fetch after a reset');
  store.dispose();
  sock().frame({ type: 'session', session: sessionOf(9), notice: null });
  assert.equal(fetchUsers(), 2, 'disposed: it follows no more');
});

test('users: a snapshot taken while a fetch is out wins; the older fetch is dropped', async () => {
  let answer;
  const { client } = setup({ session: sessionOf(1) });
  const store = new UsersStore(client, { users: [] });
  const late = store.refetch(() => new Promise((r) => {
    answer = r;
  }));
  store.replaceWith([{ id: 7, name: 'new', type: 'regular' }]); // e.g. a fresh page state
  answer([{ id: 6, name: 'old', type: 'regular' }]);
  assert.equal(await late, false);
  assert.deepEqual(store.get().map((u) => u.name), ['new']);
});
