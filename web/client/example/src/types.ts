// What the declarations refuse: each line under @ts-expect-error must be an error, or tsc fails
// ("unused directive"), so that the types stay as strict as they say.
import { KeyedStore, PresenceStore, Store, Tidings, TidingsError, maxInFlight } from 'tidings-client';
import type { ApiSession, ApiUser, ConnectionState, EventFrame, SessionChange, TidingsEvents } from 'tidings-client';

const client = new Tidings({ baseUrl: 'https://tidings.example.org', lastEventId: 0, publishQueue: 0 });

export const id: Promise<number> = client.publish({ type: 'message', data: { text: 'hi' } }, { key: 'k-1' });
// @ts-expect-error: an event has a type
client.publish({ data: { text: 'hi' } });
// @ts-expect-error: publish resolves with a number
export const wrong: Promise<string> = client.publish({ type: 'message' });

export const sent: boolean = client.signal({ type: 'typing', data: {} });
// @ts-expect-error: a signal's data is an object
client.signal({ type: 'typing', data: 'x' });

client.on('event', (e) => {
  const n: number = e.id;
  const t: string = e.event.type;
  const when: string = e.event.time;
  return [n, t, when];
});
client.on('reset', ({ lastEventId }) => lastEventId + 1);
client.on('presence-change', ({ userId, online }) => (online ? userId : -userId));
client.on('signal', ({ from, signal }) => `${from}:${signal.type}`);
client.on('token', (token: string | null) => token?.length);
client.on('session', (s: SessionChange) => s.session?.account?.type);
// @ts-expect-error: no such event
client.on('evnt', () => {});
// @ts-expect-error: the state listener is given a ConnectionState
client.on('state', (s: number) => s);
// @ts-expect-error: presence carries ids
client.on('presence', (p: { online: string[] }) => p);

export const state: ConnectionState = client.state;
// @ts-expect-error: not a state of the connection
export const open: ConnectionState = 'open';
export const last: number | null = client.lastEventId;
export const session: ApiSession | null | undefined = client.session;

// @ts-expect-error: a user's type is one of three
client.updateUser(1, { type: 'root' });
export const users: Promise<ApiUser[]> = client.users();
// @ts-expect-error: users are not strings
export const names: Promise<string[]> = client.users();

// @ts-expect-error: the backoff option is an object
new Tidings({ backoff: 100 });
// @ts-expect-error: a token is a string
new Tidings({ token: 42 });

export const err = new TidingsError('offline', 'not connected');
export const code: string = err.code;
export const status: number = err.status;
// @ts-expect-error: read-only
err.code = 'x';

export const window: 8 = maxInFlight;
export const online: ReadonlySet<number> = new PresenceStore(client, { online: [1] }).get();
export const count = new Store(0);
count.subscribe((n: number) => n);

/** A store of the app's own: the last note of each user, by event id. */
export class Notes extends KeyedStore<{ id: number; text: string }> {
  protected override applyOne(frame: EventFrame): boolean {
    if (frame.event.type !== 'note') return false;
    this.map.set(frame.id, { id: frame.id, text: String(frame.event.data) });
    return true;
  }
}
// @ts-expect-error: values need a numeric id
export class Bad extends KeyedStore<{ name: string }> {}

export type Listener = TidingsEvents['ready'];
