// The rowcast client: one logical connection that survives drops. It reconnects with
// backoff and jitter, resumes from the last `seq` it saw, re-joins its rooms, refreshes its
// token, delivers each event once and reports its state.

import { Emitter } from './emitter.js';
import { backoffDelay, DEFAULT_RECONNECT } from './backoff.js';
import { compareSeq, maxSeq } from './seq.js';
import { openWs } from './transport-ws.js';
import { openSocketIo, resolveIo } from './transport-socketio.js';

/** Names the client emits itself; every other name is a server event (`ticket.update`, ...). */
export const CLIENT_EVENTS = Object.freeze(['state', 'connecting', 'connected', 'disconnected', 'resync_required', 'welcome', 'error', '*']);

export const CLOSE_GOING_AWAY = 1001;
export const CLOSE_TOO_SLOW = 4008;
export const CLOSE_TOKEN_EXPIRED = 4401;

const DEFAULTS = {
  transport: 'ws',
  rooms: [],
  since: null,
  autoConnect: true,
  pingInterval: 25000,
  pingTimeout: 10000,
  refreshBeforeExpiry: 60,
  dedupeWindow: 2000,
};

export class RowcastClient extends Emitter {
  constructor(options = {}) {
    super();
    if (!options.url) throw new TypeError('createClient: `url` is required (e.g. "https://rowcast.example.com")');
    if (!options.token && typeof options.getToken !== 'function') {
      throw new TypeError('createClient: give `token` or `getToken` (an async function returning a JWT)');
    }
    if (options.transport && !['ws', 'socket.io'].includes(options.transport)) {
      throw new TypeError(`createClient: transport must be 'ws' or 'socket.io', not ${JSON.stringify(options.transport)}`);
    }
    this.options = { ...DEFAULTS, ...options, reconnect: { ...DEFAULT_RECONNECT, ...(options.reconnect || {}) } };
    this._token = options.token || null;
    this._freshToken = !this._token;
    /** Rooms the app wants; re-joined on every connect. */
    this._rooms = new Set(this.options.rooms.filter((r) => !r.startsWith('user:')));
    this._lastSeq = this.options.since || null;
    /** Socket.IO: the pid rowcast gave the last connection (connection-state recovery). */
    this._pid = null;
    /** Whether the current connection recovered the previous one's session (Socket.IO). */
    this.recovered = false;
    this._seen = new Set();
    this._seenOrder = [];
    this._state = 'idle';
    this._attempt = 0;
    this._transport = null;
    this._timers = new Set();
    this._stopped = false;
    /** Set by the server's welcome. */
    this.user = null;
    this.roles = [];
    this.session = null;
    this.expiresAt = null;
    if (this.options.autoConnect) queueMicrotask(() => this.connect());
  }

  /** `idle | connecting | connected | disconnected | resync_required | closed`. */
  get state() {
    return this._state;
  }

  get isConnected() {
    return this._state === 'connected' || this._state === 'resync_required';
  }

  /** The last event position seen: what a reconnect resumes from. */
  get lastSeq() {
    return this._lastSeq;
  }

  /** The rooms the client keeps joined (the private `user:<sub>` room is implicit). */
  get rooms() {
    return [...this._rooms];
  }

  /** Starts connecting (a no-op when already started). */
  connect() {
    if (this._state !== 'idle' && this._state !== 'closed') return this;
    this._stopped = false;
    this._open();
    return this;
  }

  /** Closes for good: no reconnect. `connect()` starts again. */
  close() {
    this._stopped = true;
    this._clearTimers();
    const t = this._transport;
    this._transport = null;
    if (t) t.close(1000, 'client closed');
    this._setState('closed');
  }

  /**
   * Joins a room or rooms, now if connected and again after every reconnect. Resolves
   * `{ ok, error?, results: [{ room, ok, error? }] }`; refused rooms are forgotten.
   */
  async join(room) {
    const rooms = toRooms(room, 'join');
    rooms.forEach((r) => this._rooms.add(r));
    if (!this.isConnected || !this._transport) return { ok: true, pending: true, results: rooms.map((r) => ({ room: r, ok: true, pending: true })) };
    const results = await this._transport.join(rooms);
    return this._joinResults(results);
  }

  /** Leaves a room or rooms (also for later reconnects). */
  async leave(room) {
    const rooms = toRooms(room, 'leave');
    rooms.forEach((r) => this._rooms.delete(r));
    if (!this.isConnected || !this._transport) return { ok: true, results: rooms.map((r) => ({ room: r, ok: true })) };
    const results = await this._transport.leave(rooms);
    return { ok: results.every((r) => r.ok), results };
  }

  /**
   * Replaces the token. On `/ws` it is sent as an `auth` frame (the session continues); on
   * Socket.IO the client reconnects with it and resumes from `lastSeq`.
   */
  async setToken(token) {
    this._token = token;
    this._freshToken = false;
    const t = this._transport;
    if (!t || !this.isConnected) return { ok: true, pending: true };
    const r = await t.auth(token);
    if (r.reconnect) {
      t.close(4000, 'new token');
      return { ok: true, reconnecting: true };
    }
    if (r.ok && r.expires_at) {
      this.expiresAt = r.expires_at;
      this._scheduleRefresh();
    }
    if (!r.ok) this.emit('error', { code: r.code || 'unauthorized', message: r.error || 'the new token was refused' });
    return r;
  }

  _joinResults(results) {
    for (const r of results) {
      if (!r.ok) {
        this._rooms.delete(r.room);
        this.emit('error', { type: 'error', code: r.code || 'join_refused', room: r.room, message: r.error });
      }
    }
    const bad = results.find((r) => !r.ok);
    return bad ? { ok: false, error: bad.error, results } : { ok: true, results };
  }

  async _open() {
    if (this._stopped) return;
    this._setState('connecting');
    let token = this._token;
    try {
      if ((this._freshToken || !token) && this.options.getToken) {
        token = await this.options.getToken();
        this._token = token;
        this._freshToken = false;
      }
      if (!token) throw new Error('getToken returned no token');
    } catch (err) {
      this.emit('error', { code: 'token_unavailable', message: `getToken failed: ${err && err.message}`, cause: err });
      this._retry({ code: 0, reason: 'no token' });
      return;
    }
    if (this._stopped) return;
    const params = {
      url: this.options.url,
      token,
      since: this._lastSeq,
      // Socket.IO: the pid of the last connection, so rowcast recovers the session (its
      // rooms and what it missed) the way socket.io-client's own reconnection does.
      pid: this._pid,
      rooms: [...this._rooms],
      WebSocket: this.options.WebSocket,
    };
    const handlers = this._callbacks(this.options.transport === 'ws' ? params.rooms : []);
    try {
      if (this.options.transport === 'socket.io') {
        const io = await resolveIo(this.options.io);
        if (this._stopped) return;
        this._transport = openSocketIo({ ...params, io }, handlers);
      } else {
        this._transport = openWs(params, handlers);
      }
    } catch (err) {
      this.emit('error', { code: 'transport_failed', message: err && err.message, cause: err });
      this._retry({ code: 0, reason: String(err && err.message) });
    }
  }

  /** Callbacks for one connection attempt; `sentRooms` were joined by the connect URL. */
  _callbacks(sentRooms) {
    let welcomed = false;
    let transport = null;
    const current = () => {
      transport = transport || this._transport;
      return transport && transport === this._transport;
    };
    return {
      welcome: (f) => {
        if (!current()) return;
        welcomed = true;
        this._attempt = 0;
        this.session = f.session ?? null;
        if (f.pid) this._pid = f.pid;
        this.recovered = Boolean(f.recovered);
        if (f.user !== undefined) this.user = f.user;
        if (f.roles) this.roles = f.roles;
        if (f.expires_at) this.expiresAt = f.expires_at;
        // A first connection resumes later from the moment it opened.
        if (!this._lastSeq && f.seq) this._lastSeq = f.seq;
        this.emit('welcome', f);
        this._setState('connected');
        this._startPing();
        this._scheduleRefresh();
        // Rooms asked for while connecting (or every room, on Socket.IO) are joined now.
        const missing = [...this._rooms].filter((r) => !sentRooms.includes(r));
        if (missing.length) this._transport.join(missing).then((r) => this._joinResults(r), () => {});
      },
      event: (name, payload, meta) => {
        if (!current()) return;
        this._deliver(name, payload, meta);
      },
      position: (seq) => {
        if (current() && !this._lastSeq) this._lastSeq = seq;
      },
      joined: () => {},
      left: () => {},
      error: (f) => {
        if (!current()) return;
        if (f.room) this._rooms.delete(f.room);
        this.emit('error', f);
      },
      resync: (f) => {
        if (!current()) return;
        if (f.seq) this._lastSeq = f.seq;
        this._setState('resync_required');
        this.emit('resync_required', f);
        if (this._state === 'resync_required') this._setState('connected');
      },
      authenticated: (f) => {
        if (f.expires_at) this.expiresAt = f.expires_at;
      },
      pong: () => {
        this._pongAt = Date.now();
      },
      // `serverError`: Socket.IO's `rowcast:error` `{ code, message, seq }` that ended the
      // session, mapped to `code` (too_slow 4008, token_expired 4401, unavailable 1011).
      close: ({ code, reason, serverError }) => {
        if (transport && transport !== this._transport) return;
        this._transport = null;
        this._clearTimers();
        if (this._stopped) return;
        if (code === CLOSE_TOKEN_EXPIRED || (!welcomed && this.options.getToken)) this._freshToken = true;
        this._setState('disconnected', { code, reason });
        this.emit('disconnected', serverError ? { code, reason, welcomed, serverError } : { code, reason, welcomed });
        if (code === CLOSE_TOKEN_EXPIRED && !this.options.getToken) {
          this.emit('error', { code: 'token_expired', message: 'the token expired and no getToken was given: call setToken() then connect()' });
          this._stopped = true;
          this._setState('closed');
          return;
        }
        this._retry({ code, reason });
      },
    };
  }

  _deliver(name, payload, meta) {
    const seq = meta.seq;
    if (seq) {
      if (this._seen.has(seq)) return;
      this._seen.add(seq);
      this._seenOrder.push(seq);
      if (this._seenOrder.length > this.options.dedupeWindow) this._seen.delete(this._seenOrder.shift());
      this._lastSeq = maxSeq(this._lastSeq, seq);
    }
    this.emit(name, payload, meta);
    this.emit('*', { event: name, room: meta.room, seq, payload });
  }

  _retry({ code }) {
    if (this._stopped) return;
    // Too slow (4008): come back at once and catch up; otherwise back off.
    const delay = code === CLOSE_TOO_SLOW ? backoffDelay(0, this.options.reconnect) : backoffDelay(this._attempt, this.options.reconnect);
    this._attempt += 1;
    this._later(delay, () => this._open());
  }

  _startPing() {
    const { pingInterval, pingTimeout } = this.options;
    if (!pingInterval || this._transport.kind !== 'ws') return;
    const tick = () => {
      const t = this._transport;
      if (!t) return;
      const sent = Date.now();
      t.ping();
      this._later(pingTimeout, () => {
        if (this._transport === t && !(this._pongAt >= sent)) t.close(4000, 'no pong');
      });
      this._later(pingInterval, tick);
    };
    this._later(pingInterval, tick);
  }

  _scheduleRefresh() {
    const margin = this.options.refreshBeforeExpiry;
    if (!margin || !this.options.getToken || !this.expiresAt) return;
    if (this._refreshTimer) this._cancel(this._refreshTimer);
    const ms = Math.max(0, this.expiresAt * 1000 - Date.now() - margin * 1000);
    this._refreshTimer = this._later(ms, async () => {
      this._refreshTimer = null;
      try {
        await this.setToken(await this.options.getToken());
      } catch (err) {
        this.emit('error', { code: 'token_refresh_failed', message: `token refresh failed: ${err && err.message}`, cause: err });
      }
    });
  }

  _later(ms, fn) {
    const h = setTimeout(() => {
      this._timers.delete(h);
      fn();
    }, ms);
    this._timers.add(h);
    return h;
  }

  _cancel(h) {
    clearTimeout(h);
    this._timers.delete(h);
  }

  _clearTimers() {
    for (const h of this._timers) clearTimeout(h);
    this._timers.clear();
    this._refreshTimer = null;
  }

  _setState(state, detail) {
    if (this._state === state) return;
    this._state = state;
    this.emit('state', state, detail);
    if (state === 'connecting' || state === 'connected') this.emit(state, detail);
  }
}

function toRooms(room, what) {
  const rooms = Array.isArray(room) ? room : [room];
  if (!rooms.length || rooms.some((r) => typeof r !== 'string' || !r)) {
    throw new TypeError(`${what}: give a room name or an array of room names`);
  }
  return rooms;
}

export { compareSeq };
