// Declarations of tidings-client (tidings.js beside this file). Guide: docs/clients.md.
// SPDX-License-Identifier: AGPL-3.0-only

// Wire types (docs/protocol.md).

/** A user's rights, lowest first. */
export type UserType = 'regular' | 'crew' | 'admin';

/** A user, as GET /api/users and user-update events carry it. */
export interface ApiUser {
  id: number;
  name: string;
  type: UserType;
}

/** The signed-in user of a session. */
export type ApiAccount = ApiUser;

/** A session: its public id (never the token), its account, and when it rotates and expires. */
export interface ApiSession {
  id: number;
  account: ApiAccount | null;
  rotatesAt: string;
  expiresAt: string;
}

/** Why the server says a session is not what the client held: "session-taken" (section 4.4). */
export type Notice = 'session-taken' | (string & {});

/** An event as stored: its type, its data, and when it was stored (RFC 3339). */
export interface StoredEvent<D = unknown> {
  type: string;
  data: D;
  time: string;
}

/** An event with its id, as the stream hands it over (and as a page embeds its messages). */
export interface EventFrame<D = unknown> {
  id: number;
  event: StoredEvent<D>;
}

/** Built-in event data. */
export interface MessageData {
  userId: number;
  userName: string;
  text: string;
}

/** An ephemeral signal (section 8). Built in: typing, with data {}. */
export interface Signal {
  type: string;
  data: unknown;
}

/** Any server frame, as parsed: known ones and those of later versions alike. */
export interface Frame {
  type: string;
  [field: string]: unknown;
}

// The client.

/**
 * connecting: the first stream is opening; live: after ready; reconnecting: after a close,
 * waiting (retryIn) or opening again; offline: not connected until connect() (never started,
 * disconnect(), or a final close: 1000, 1008, 1009).
 */
export type ConnectionState = 'connecting' | 'live' | 'reconnecting' | 'offline';

/** What a state change comes with. */
export interface StateDetail {
  /** The close code that led to it. */
  code?: number;
  /** The close's reason text (4003: logout, access-changed, user-deleted, session-taken). */
  reason?: string;
  /** When reconnecting: the delay before the next attempt, in ms. */
  retryIn?: number;
  /** A final close that a fix of the client, not a retry, could cure (1008, 1009). */
  fatal?: boolean;
  /** The browser went offline: the stream was dropped, and opens again when it is back online. */
  offline?: boolean;
}

/** What the server says the session now is. */
export interface SessionChange {
  session: ApiSession | null;
  notice: Notice | null;
  /** The stream's session frame, or an answer of GET /api/session. */
  source: 'stream' | 'http';
  /** When the client asked because the stream closed with 4001 or 4003: that close. */
  closeCode?: number;
  closeReason?: string;
}

/** The listeners of Tidings.on, by name. */
export interface TidingsEvents {
  /** Each event the session may see, exactly once, in id order, across reconnects. */
  event: (e: EventFrame) => void;
  /** Events were lost (pruned, or the log moved back): refetch your state; events after lastEventId follow. */
  reset: (r: { lastEventId: number }) => void;
  /** The replay is done: the client is current up to lastEventId, live events follow. */
  ready: (r: { lastEventId: number }) => void;
  /** The session frame that opens every stream, or the answer of GET /api/session. */
  session: (s: SessionChange) => void;
  state: (state: ConnectionState, detail: StateDetail) => void;
  /** Who is online, once per signed-in stream after ready: the whole set, ascending. */
  presence: (p: { online: number[] }) => void;
  'presence-change': (c: { userId: number; online: boolean }) => void;
  /** An ephemeral signal, the sender's own included. */
  signal: (s: { from: number; signal: Signal }) => void;
  /** The bearer token changed: store it (null: forget it). */
  token: (token: string | null) => void;
  /** Every frame as parsed, before the client handles it: for frame types this version does not know. */
  frame: (f: Frame) => void;
}

export interface TidingsOptions {
  /** The server, e.g. "https://tidings.example.org"; default: the page's own origin. */
  baseUrl?: string;
  /**
   * Open the stream after this event id (the page's embedded state, or the app's own store,
   * read after GET /api/last-event-id); null or absent: start live, without replay.
   */
  lastEventId?: number | null;
  /** The session the app already knows (the page's embedded state), so that `account` is right before the stream says. */
  session?: ApiSession | null;
  /** A bearer token: sent as Authorization on requests and offered as a subprotocol on the stream. */
  token?: string | null;
  /** Called when the token changes (a rotation's successor, a new sign-in; null: forget it: logged out, or the server resolved it to no session). */
  onToken?: (token: string | null) => void;
  /** login and register ask for a bearer session (default: true when a token was given). */
  bearer?: boolean;
  /** fetch's credentials (default "include": the cookie, where the server allows it). */
  credentials?: RequestCredentials;
  /** How many publishes may wait for the stream (while it is away, or 8 are in flight); beyond: refused. Default 16; 0 refuses every publish made while not live. */
  publishQueue?: number;
  /** How long a publish may wait for its answer, queue included, in ms (default 30,000). */
  publishTimeout?: number;
  /** The reconnect backoff: full jitter up to base * 2^failures, at most max (defaults 250 and 10,000 ms). */
  backoff?: { base?: number; max?: number };
  /** For tests: the WebSocket, fetch, random and timer functions to use. */
  WebSocket?: new (url: string, protocols: string[]) => WebSocketLike;
  fetch?: (url: string, init: RequestInit) => Promise<Response>;
  random?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (timer: unknown) => void;
}

/** What the client uses of a WebSocket. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((e: { data: unknown }) => void) | null;
  onclose: ((e: { code: number; reason: string }) => void) | null;
  onerror: ((e: unknown) => void) | null;
}

/** A refusal: an HTTP error, a network failure (code "network"), or a refused publish. */
export declare class TidingsError extends Error {
  constructor(code: string, message: string, more?: { status?: number; key?: string | null; sent?: boolean });
  /**
   * The server's error code (docs/protocol.md: "invalid", "rate-limited", "unauthenticated", ...)
   * or the client's: "network", "offline" (a publish with no room to wait for the stream),
   * "queue-full", "timeout", "closed" (the stream closed for good, restarted, or the session
   * ended or changed before the answer).
   */
  readonly code: string;
  /** The HTTP status; 0 when there was no HTTP answer. */
  readonly status: number;
  /** A publish's idempotency key: publish again with { key } to store it at most once. */
  readonly key: string | null;
  /** Whether a publish reached the server (then it may have been stored). */
  readonly sent: boolean;
}

/** How many publishes a stream has unanswered at most (more wait in the queue). */
export declare const maxInFlight: 8;

export declare class Tidings {
  constructor(options?: TidingsOptions);
  readonly state: ConnectionState;
  /** The last event handed over (or of the last ready or reset): a reconnect resumes after it. */
  readonly lastEventId: number | null;
  /** As the stream or GET /api/session last said; undefined until then (unless given). */
  readonly session: ApiSession | null | undefined;
  readonly account: ApiAccount | null;
  readonly token: string | null;

  /** Listens; returns a function that stops listening. */
  on<K extends keyof TidingsEvents>(type: K, listener: TidingsEvents[K]): () => void;

  /** Opens the stream (after lastEventId when given and not connected). */
  connect(lastEventId?: number | null): void;
  /** Drops the stream and opens a new one after lastEventId (default: the last handed over). */
  restart(lastEventId?: number | null): void;
  /** Closes the stream; offline until connect(). */
  disconnect(): void;
  /** Skips a pending backoff. */
  reconnectNow(): void;

  /**
   * Publishes an event; resolves with its id. Sent at once on a live stream, else queued (see
   * publishQueue) and sent when it is live again; one in flight when the stream drops is sent
   * again with the same key, so it is stored once.
   */
  publish(event: { type: string; data?: unknown }, options?: { key?: string }): Promise<number>;
  /** Sends a signal on a live stream, best effort; false when not live. */
  signal(signal: { type: string; data?: object }): boolean;

  /** Sets the bearer token (null: none), as a new sign-in elsewhere gave it. */
  setToken(token: string | null): void;

  /** A request to the JSON API with this client's session. Resolves with the answer (null for 204). */
  request<T = unknown>(method: string, path: string, body?: unknown): Promise<T>;
  /** GET /api/session; tells the session listeners too. */
  fetchSession(): Promise<{ session: ApiSession | null; notice: Notice | null }>;
  /** Signs in. With bearer (the option, or here), the token is stored and onToken called. By default a running stream reopens with the new session. */
  login(name: string, password: string, options?: { bearer?: boolean; reconnect?: boolean }): Promise<ApiSession>;
  register(name: string, password: string, options?: { bearer?: boolean; reconnect?: boolean }): Promise<ApiSession>;
  /** Ends the session and forgets the token. */
  logout(options?: { reconnect?: boolean }): Promise<void>;
  users(): Promise<ApiUser[]>;
  user(id: number): Promise<ApiUser>;
  updateUser(id: number, patch: { name?: string; type?: UserType }): Promise<ApiUser>;
  deleteUser(id: number): Promise<void>;
  /** The ids of the users online. */
  presence(): Promise<number[]>;
  /** GET /api/last-event-id: read it before a snapshot, then connect(it). */
  watermark(): Promise<number>;
}

// Stores.

/** A value that listeners follow. */
export declare class Store<T> {
  constructor(value: T);
  get(): T;
  set(value: T): void;
  /** Calls fn with every new value; returns a function that stops it. */
  subscribe(fn: (value: T) => void): () => void;
}

/** Values with ids that events change, as an array sorted by id; refetches are safe against the events meanwhile. */
export declare class KeyedStore<V extends { id: number }> extends Store<V[]> {
  constructor();
  readonly map: Map<number, V>;
  /** Applies an event; returns whether the store changed. */
  apply(frame: EventFrame): boolean;
  /** The rule: applies one event to map, returns whether it changed it. */
  protected applyOne(frame: EventFrame): boolean;
  /** Takes a snapshot, then the events applied since a refetch began. */
  replaceWith(values: V[]): void;
  /** Loads a snapshot and takes it; false when another snapshot came first. */
  refetch(load: () => Promise<V[]>): Promise<boolean>;
  /** Publishes map as the sorted array. */
  publish(): void;
}

/** Every user while signed in: GET /api/users (or the users given), user-* events, refetched on reset and account change. */
export declare class UsersStore extends KeyedStore<ApiUser> {
  constructor(client: Tidings, options?: { users?: ApiUser[] });
  /** Fetches the snapshot again; false when it could not (or was not signed in). */
  reload(): Promise<boolean>;
  dispose(): void;
}

/** The ids of the users online: the presence frame's set, then presence-change; empty when anonymous. */
export declare class PresenceStore extends Store<ReadonlySet<number>> {
  constructor(client?: Tidings | null, options?: { online?: number[] });
  replaceWith(online: readonly number[] | null | undefined): void;
  change(userId: number, online: boolean): void;
  has(id: number): boolean;
  dispose(): void;
}
