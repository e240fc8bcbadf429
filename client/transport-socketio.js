// The Socket.IO transport, for apps that already ship `socket.io-client`: the same client API
// over rowcast's Socket.IO v4 endpoint (`io(url, { auth: { token, since } })`,
// `emit('join', rooms, ack)` answered `{ ok, error? }`). One connection attempt; the client
// reconnects (Socket.IO's own reconnection is off so that `since` is fresh on every attempt).

const ACK_TIMEOUT_MS = 10000;
/** Server events that are protocol, not data. */
const CONTROL = new Set(['resync_required', 'welcome', 'error']);

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
export function openSocketIo({ url, token, since, io }, on) {
  const base = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  if (base.protocol === 'ws:') base.protocol = 'http:';
  if (base.protocol === 'wss:') base.protocol = 'https:';
  base.pathname = base.pathname.replace(/\/ws\/?$/, '/');
  const auth = { token };
  if (since) auth.since = since;
  const socket = io(base.origin, {
    path: base.pathname.replace(/\/?$/, '/') + 'socket.io/',
    auth,
    reconnection: false,
    forceNew: true,
    transports: ['websocket', 'polling'],
  });
  let done = false;
  const close = (code, reason) => {
    if (done) return;
    done = true;
    socket.removeAllListeners();
    socket.offAny();
    socket.disconnect();
    on.close({ code, reason });
  };

  socket.on('connect', () => {
    // Socket.IO has no welcome frame: synthesize one so the client treats both alike.
    on.welcome({ type: 'welcome', session: socket.id, seq: null, expires_at: null });
  });
  socket.on('connect_error', (err) => {
    const message = (err && err.message) || 'connect_error';
    const unauthorized = /unauthori[sz]ed|expired|401|token|jwt/i.test(message);
    close(unauthorized ? 4401 : 1006, message);
  });
  socket.on('disconnect', (reason) => {
    // "io server disconnect": the server ended the session (shutdown, too slow, expiry).
    close(reason === 'io server disconnect' ? 1001 : 1006, reason);
  });
  // If the server announces its position at connect, a fresh client can resume from it.
  socket.on('welcome', (f) => f && f.seq && on.position(f.seq));
  socket.on('resync_required', (f) => on.resync({ type: 'resync_required', ...(f || {}) }));
  socket.on('error', (f) => on.error({ type: 'error', ...(typeof f === 'object' ? f : { message: String(f) }) }));
  socket.onAny((name, payload) => {
    if (CONTROL.has(name)) return;
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
        const ok = !!(res && res.ok);
        resolve(rooms.map((room) => (ok ? { room, ok } : { room, ok, error: (res && res.error) || `${name} refused` })));
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
