// Types of @rowcast/client (hand-written; the package ships plain ES modules).

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'resync_required' | 'closed';
export type Op = 'insert' | 'update' | 'delete';

/** The entity event payload: the same object on every transport and in webhooks. */
export interface EntityPayload<Row = Record<string, unknown>> {
  event: string; // "<entity>.created|updated|deleted"
  op: Op;
  entity: string;
  table: string;
  id: string | number;
  seq: string;
  /** The full current row (hidden columns removed); for deletes the old row. */
  data: Row;
  /** The key of the row; the whole old row for deletes. */
  old: Partial<Row> | null;
  committed_at: string;
}

export interface NotificationRow {
  id: string | number;
  type: string;
  message: string;
  related_id?: string | null;
  related_type?: string | null;
  created_at: string;
  read_at?: string | null;
  [column: string]: unknown;
}

/** Sent as event `notification` (created) or `notification.update`, to `user:<sub>` only. */
export interface NotificationPayload<Related = Record<string, unknown>> {
  event: 'notification.created' | 'notification.updated' | 'notification.deleted';
  op?: Op;
  id?: string | number;
  seq?: string;
  notification: NotificationRow;
  data: Related | null;
  committed_at?: string;
}

export interface EventMeta {
  event: string;
  /** The room it was delivered to (`/ws` only). */
  room?: string;
  seq?: string;
}

export interface ServerError {
  type?: 'error';
  code: string;
  message: string;
  room?: string | null;
  id?: unknown;
}

/** Socket.IO `rowcast:error`, sent right before the server disconnects the socket. */
export interface RowcastError {
  code: 'too_slow' | 'token_expired' | 'unavailable' | string;
  message: string;
  /** The last event sent to the socket. */
  seq: string | null;
}

export interface ResyncRequired {
  type: 'resync_required';
  since: string;
  oldest?: string;
  /** Continue from here once the data is refetched (the client already does). */
  seq: string;
  rooms: string[];
  message: string;
}

export interface Welcome {
  type: 'welcome';
  session: string | null;
  user?: string;
  roles?: string[];
  rooms?: string[];
  seq: string | null;
  expires_at: number | null;
}

export interface ReconnectOptions {
  /** First retry delay, ms (500). */
  minDelay?: number;
  /** Longest delay, ms (15000). */
  maxDelay?: number;
  /** Growth per attempt (2). */
  factor?: number;
  /** Random fraction of each delay, 0..1 (0.5). */
  jitter?: number;
}

export interface ClientOptions {
  /** rowcast's base URL: `https://host`, `http://host:8080`, or a `ws(s)://host/ws` URL. */
  url: string;
  token?: string;
  /** Called when no token is known, after a 4401 close or a refused handshake, and before expiry. */
  getToken?: () => string | Promise<string>;
  transport?: 'ws' | 'socket.io';
  /** Rooms to join (again after every reconnect). `user:<sub>` is joined automatically. */
  rooms?: string[];
  /** Resume after this seq on the first connect. */
  since?: string | null;
  /** Connect on the next tick (true). */
  autoConnect?: boolean;
  reconnect?: ReconnectOptions;
  /** `/ws` keep-alive: ping every (25000) ms, reconnect if no pong within (10000) ms; 0 disables. */
  pingInterval?: number;
  pingTimeout?: number;
  /** With getToken: refresh this many seconds before `exp` (60); 0 disables. */
  refreshBeforeExpiry?: number;
  /** How many recent seqs are remembered to drop duplicates (2000). */
  dedupeWindow?: number;
  /** A WebSocket constructor (Node < 22: `import WebSocket from 'ws'`). */
  WebSocket?: unknown;
  /** `io` from socket.io-client (else it is imported on demand). */
  io?: unknown;
}

export interface RoomResult {
  room: string;
  ok: boolean;
  error?: string;
  code?: string;
  pending?: boolean;
}

export interface JoinResult {
  ok: boolean;
  error?: string;
  pending?: boolean;
  results: RoomResult[];
}

export interface AnyEvent {
  event: string;
  room?: string;
  seq?: string;
  payload: unknown;
}

export interface ClientEvents {
  state: (state: ConnectionState, detail?: { code: number; reason: string }) => void;
  connecting: () => void;
  connected: () => void;
  /**
   * `code`: the `/ws` close code, or on Socket.IO the one its reason maps to (`rowcast:error`
   * too_slow 4008, token_expired 4401, unavailable 1011; a refused handshake 4401
   * (`unauthorized: ...`) or 1001 (`unavailable: ...`); a server disconnect 1001; otherwise
   * 1006). `serverError`: the Socket.IO `rowcast:error` that ended the session.
   */
  disconnected: (info: { code: number; reason: string; welcomed: boolean; serverError?: RowcastError }) => void;
  resync_required: (info: ResyncRequired) => void;
  welcome: (welcome: Welcome) => void;
  error: (error: ServerError & { cause?: unknown }) => void;
  '*': (event: AnyEvent) => void;
  notification: (payload: NotificationPayload, meta: EventMeta) => void;
  'notification.update': (payload: NotificationPayload, meta: EventMeta) => void;
}

export declare class RowcastClient {
  constructor(options: ClientOptions);
  readonly options: ClientOptions;
  readonly state: ConnectionState;
  readonly isConnected: boolean;
  readonly lastSeq: string | null;
  /** Socket.IO: whether the current connection recovered the previous session (its rooms and what it missed), as `socket.recovered` tells a socket.io-client app. */
  readonly recovered: boolean;
  readonly rooms: string[];
  user: string | null;
  roles: string[];
  session: string | null;
  expiresAt: number | null;
  connect(): this;
  close(): void;
  join(room: string | string[]): Promise<JoinResult>;
  leave(room: string | string[]): Promise<JoinResult>;
  setToken(token: string): Promise<{ ok: boolean; error?: string; pending?: boolean; reconnecting?: boolean }>;
  on<K extends keyof ClientEvents>(name: K, handler: ClientEvents[K]): () => void;
  on<Row = Record<string, unknown>>(name: string, handler: (payload: EntityPayload<Row>, meta: EventMeta) => void): () => void;
  once<K extends keyof ClientEvents>(name: K, handler: ClientEvents[K]): () => void;
  once(name: string, handler: (payload: any, meta: EventMeta) => void): () => void;
  off(name: string, handler: (...args: any[]) => void): void;
}

export declare function createClient(options: ClientOptions): RowcastClient;

export declare const CLIENT_EVENTS: readonly string[];
export declare const CLOSE_GOING_AWAY: 1001;
export declare const CLOSE_TOO_SLOW: 4008;
export declare const CLOSE_TOKEN_EXPIRED: 4401;
export declare const DEFAULT_RECONNECT: Readonly<Required<ReconnectOptions>>;
export declare function backoffDelay(attempt: number, options?: ReconnectOptions, random?: () => number): number;
export declare function compareSeq(a: string | null | undefined, b: string | null | undefined): number;
export declare function maxSeq(a: string | null | undefined, b: string | null | undefined): string | null;
export declare function parseSeq(seq: unknown): [bigint, bigint] | null;
export declare function wsUrl(url: string, params: { token?: string; since?: string | null; rooms?: string[] }): string;

export { realtimeReducer, notificationsReducer, entityId, RealtimeAction, NotificationItem, NotificationAction } from './state';
