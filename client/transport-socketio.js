// The Socket.IO transport, for apps that already ship `socket.io-client`: the same client API
// over rowcast's Socket.IO v4 endpoint (`io(url, { auth: { token, since } })`,
// `emit('join', rooms, ack)` answered `{ ok, rooms, seq }` or
// `{ ok: false, code, error, room?, rooms?, refused?, seq? }`). One connection attempt; the
// client reconnects (Socket.IO's own reconnection is off so that `since` is fresh on every
// attempt).
//
// What the server sends on Socket.IO (src/transport/socketio/; every shape is in
// tests/fixtures/server-frames.json): data events under their names (`ticket.update`,
// `notification`, ...), `resync_required`, and `rowcast:error` `{ code, message, seq }` right
// before it disconnects the socket. There is no `welcome` and no `error` event. A refused
// handshake is a `connect_error` whose message starts with a code: `unauthorized: ...`,
// `bad_request: ...`, `unavailable: ...`.

const ACK_TIMEOUT_MS = 10000;

/** `rowcast:error` codes → the `/ws` close code that means the same to the client. */
export const ROWCAST_ERROR_CLOSE = Object.freeze({
  too_slow: 4008, // reconnect at once, resuming from the last seq
  token_expired: 4401, // fetch a new token (getToken), then reconnect
  unavailable: 1011, // missed events could not be loaded: back off and reconnect
});

/** `connect_error` message codes → close codes (anything else: 1006, an abnormal close). */
const CONNECT_ERROR_CLOSE = Object.freeze({
  unauthorized: 4401,
  unavailable: 1001,
  bad_request: 1006,
});

/** Server events that are protocol, not data: never delivered as events. */
const isControl = (name) => name === 'resync_required' || name.startsWith('rowcast:');

let loaded = null;

/** Resolves `io` from the option, or imports the optional peer dependency. */
export async function resolveIo(io) {
  if (io) return io;
  if (!loaded) {
    loaded = import('socket.io-client').then(
      (m) => m.io || m.default,
      () => {
        throw new Error("transport 'socket.io' needs socket.io-client: npm install socket.io-client, or pass `io` to createClient");
      },
    );
  }
  return loaded;
}

/** Opens one Socket.IO connection; same callbacks and commands as `openWs`. */
export function openSocketIo({ url, token, since, pid, io }, on) {
  const base = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  if (base.protocol === 'ws:') base.protocol = 'http:';
  if (base.protocol === 'wss:') base.protocol = 'https:';
  base.pathname = base.pathname.replace(/\/ws\/?$/, '/');
  const auth = { token };
  if (since) auth.since = since;
  // Connection-state recovery, as socket.io-client's own reconnection sends it: the pid of
  // the previous connection and the last seq as the offset. rowcast answers with the same
  // pid (`recovered`) and replays what was missed; otherwise `since` resumes the rooms.
  if (pid) {
    auth.pid = pid;
    if (since) auth.offset = since;
  }
  const socket = io(base.origin, {
    path: base.pathname.replace(/\/?$/, '/') + 'socket.io/',
    auth,
    reconnection: false,
    forceNew: true,
    transports: ['websocket', 'polling'],
  });
  let done = false;
  const close = (code, reason, serverError) => {
    if (done) return;
    done = true;
    socket.removeAllListeners();
    socket.offAny();
    socket.disconnect();
    on.close(serverError ? { code, reason, serverError } : { code, reason });
  };

  socket.on('connect', () => {
    // Socket.IO has no welcome frame: synthesize one so the client treats both alike. The
    // pid is socket.io-client's own record of the CONNECT answer's pid; the session was
    // recovered when it is the pid this (new) socket sent (a new socket's own
    // `socket.recovered` compares with a pid it never had).
    const answered = socket._pid ?? null;
    on.welcome({
      type: 'welcome',
      session: socket.id,
      seq: null,
      expires_at: null,
      pid: answered,
      recovered: Boolean(socket.recovered || (pid && answered === pid)),
    });
  });
  socket.on('connect_error', (err) => {
    const message = (err && err.message) || 'connect_error';
    const code = /^([a-z_]+):/.exec(message)?.[1];
    if (code === 'bad_request') on.error({ type: 'error', code, message });
    close(CONNECT_ERROR_CLOSE[code] ?? 1006, message);
  });
  socket.on('disconnect', (reason) => {
    // "io server disconnect": the server ended the session (its reason, if any, came first
    // as `rowcast:error`); "transport close": e.g. the server shut down.
    close(reason === 'io server disconnect' ? 1001 : 1006, reason);
  });
  socket.on('resync_required', (f) => on.resync({ type: 'resync_required', ...(f || {}) }));
  // Sent right before the server disconnects: close now with the reason's close code, so
  // the client reconnects the right way (at once, with a new token, or with backoff).
  socket.on('rowcast:error', (f) => {
    const e = f && typeof f === 'object' ? f : { code: 'unknown', message: String(f) };
    if (e.seq) on.position(e.seq);
    close(ROWCAST_ERROR_CLOSE[e.code] ?? 1011, e.message || e.code, { ...e });
  });
  socket.onAny((name, payload) => {
    if (isControl(name)) return;
    // Events carry their seq as the trailing argument as well (the recovery offset); the
    // payload's `seq` is the same.
    on.event(name, payload, { event: name, room: undefined, seq: payload && payload.seq });
  });

  const ack = (name, rooms) =>
    new Promise((resolve, reject) => {
      if (done || !socket.connected) {
        reject(new Error('not connected'));
        return;
      }
      socket.timeout(ACK_TIMEOUT_MS).emit(name, rooms, (err, res) => {
        if (err) {
          reject(new Error(`no answer to ${name} within ${ACK_TIMEOUT_MS} ms`));
          return;
        }
        // Events after the answer's seq arrive live: a fresh client can resume from it.
        if (res && res.seq) on.position(res.seq);
        resolve(ackResults(name, rooms, res));
      });
    });

  return {
    kind: 'socket.io',
    join: (rooms) => ack('join', rooms),
    leave: (rooms) => ack('leave', rooms),
    // Socket.IO reads the token at connect: a fresh token means a fresh connection, which
    // the client resumes from its last seq. Resolving `reconnect` tells it to do so.
    auth: async () => ({ ok: false, reconnect: true }),
    ping: () => {},
    close: (code = 1000, reason = 'client closed') => close(code, reason),
    socket,
  };
}

/**
 * One `{ room, ok, error?, code? }` per requested room from a join/leave acknowledgement:
 * `{ ok: true, rooms }`; `{ ok: false, code, error, room, rooms: [done...], refused: [{ room,
 * code, error }] }` (some rooms refused); `{ ok: false, code, error }` (the whole request
 * refused).
 */
export function ackResults(name, rooms, res) {
  const a = res && typeof res === 'object' ? res : { ok: false, error: `${name}: no answer` };
  if (a.ok) return rooms.map((room) => ({ room, ok: true }));
  const done = new Set(Array.isArray(a.rooms) ? a.rooms : []);
  const refused = new Map((Array.isArray(a.refused) ? a.refused : []).map((r) => [r.room, r]));
  return rooms.map((room) => {
    if (done.has(room) && !refused.has(room)) return { room, ok: true };
    const r = refused.get(room) || a;
    return { room, ok: false, error: r.error || `${name} refused`, code: r.code };
  });
}
