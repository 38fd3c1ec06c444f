// A small app on tidings-client, as an app on another origin (or in a desktop wrapper) writes
// it: a bearer session kept in localStorage, the events of the stream in a list, who is online,
// and a form that publishes messages.
import { PresenceStore, Tidings, TidingsError, UsersStore } from 'tidings-client';
import type { EventFrame, MessageData, StateDetail } from 'tidings-client';

const $ = <T extends HTMLElement>(sel: string): T => {
  const el = document.querySelector<T>(sel);
  if (!el) throw new Error(`no ${sel}`);
  return el;
};

const saved = localStorage.getItem('tidings-last-event-id');
const client = new Tidings({
  baseUrl: 'http://127.0.0.1:8080',
  lastEventId: saved === null ? null : Number(saved),
  token: localStorage.getItem('tidings-token'),
  onToken: (token) => (token === null ? localStorage.removeItem('tidings-token') : localStorage.setItem('tidings-token', token)),
});
const users = new UsersStore(client);
const online = new PresenceStore(client);

function describe(state: string, detail: StateDetail): string {
  return detail.retryIn === undefined ? state : `${state} (again in ${Math.round(detail.retryIn)} ms)`;
}

client.on('state', (state, detail) => {
  $('#status').textContent = describe(state, detail);
});
client.on('event', (e: EventFrame) => {
  localStorage.setItem('tidings-last-event-id', String(e.id));
  if (e.event.type !== 'message') return;
  const data = e.event.data as MessageData;
  const li = document.createElement('li');
  li.textContent = `${users.map.get(data.userId)?.name ?? data.userName}: ${data.text}`;
  $('#events').append(li);
});
client.on('reset', () => $('#events').replaceChildren()); // older events were lost: start over
client.on('session', ({ session, notice }) => {
  if (notice === 'session-taken') alert('Your session was taken: sign in again.');
  if (!session?.account) void signIn();
});
online.subscribe((ids) => {
  const names = [...ids].map((id) => users.map.get(id)?.name ?? `#${id}`);
  $('#online').textContent = names.length > 0 ? names.join(', ') : 'nobody';
});

async function signIn(): Promise<void> {
  const name = prompt('Name');
  const password = prompt('Password');
  if (!name || !password) return;
  const session = await client.login(name, password, { bearer: true });
  console.log(`signed in as ${session.account?.name}, session ${session.id}`);
}

$<HTMLFormElement>('#send').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const input = $<HTMLInputElement>('#text');
  try {
    const id: number = await client.publish({ type: 'message', data: { text: input.value } });
    input.value = '';
    console.log(`stored as event ${id}`);
  } catch (err) {
    if (err instanceof TidingsError && err.sent && err.key !== null) console.warn(`maybe stored: publish again with key ${err.key}`);
    else if (err instanceof TidingsError) alert(`not sent: ${err.code} ${err.message}`);
  }
});

client.connect();
