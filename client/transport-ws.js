// The `/ws` transport: rowcast's plain JSON WebSocket protocol, one connection attempt.
// Reconnecting, resuming and token refresh are the client's job (client.js); this file only
// speaks the frames and reports what the server said.

const ANSWER_TIMEOUT_MS = 10000;

/** `http(s)://host/base` or `ws(s)://host/base` → `ws(s)://host/base/ws?...`. */
export function wsUrl(url, { token, since, rooms }) {
  const u = new URL(url, typeof location !== 'undefined' ? location.href : undefined);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (!u.pathname.endsWith('/ws')) u.pathname = u.pathname.replace(/\/?$/, '/ws');
  if (token) u.searchParams.set('token', token);
  if (since) u.searchParams.set('since', since);
  const r = (rooms || []).filter((x) => !x.startsWith('user:'));
  if (r.length) u.searchParams.set('rooms', r.join(','));
  return u.toString();
}

/**
 * Opens one `/ws` connection. `on` receives: welcome(frame), event(name, payload, meta),
 * joined(frame), left(frame), error(frame), resync(frame), authenticated(frame), pong(frame),
 * close({ code, reason }). Returns the transport's commands.
 */
export function openWs({ url, token, since, rooms, WebSocket: WS }, on) {
  const Impl = WS || globalThis.WebSocket;
  if (!Impl) {
    throw new Error('no WebSocket implementation: pass `WebSocket` (e.g. from the `ws` package) to createClient in Node < 22');
  }
  const socket = new Impl(wsUrl(url, { token, since, rooms }));
  let nextId = 1;
  /** id → { rooms: Set, results: [], resolve, reject, timer } */
  const pending = new Map();
  let closed = false;

  const settle = (id, fn) => {
    const p = pending.get(id);
    if (!p) return false;
    fn(p);
    return true;
  };

  const finish = (id) => {
    const p = pending.get(id);
    if (!p) return;
    clearTimeout(p.timer);
    pending.delete(id);
    p.resolve(p.results);
  };

  const request = (frame, expect) =>
    new Promise((resolve, reject) => {
      if (closed || socket.readyState !== 1) {
        reject(new Error('not connected'));
        return;
      }
      const id = `c${nextId++}`;
      const timer = setTimeout(() => {
        pending.delete(id);
        reject(new Error(`no answer to ${frame.type} within ${ANSWER_TIMEOUT_MS} ms`));
      }, ANSWER_TIMEOUT_MS);
      pending.set(id, { expect: new Set(expect), results: [], resolve, reject, timer });
      socket.send(JSON.stringify({ ...frame, id }));
    });

  socket.onmessage = (msg) => {
    let f;
    try {
      f = JSON.parse(typeof msg.data === 'string' ? msg.data : String(msg.data));
    } catch {
      on.error({ type: 'error', code: 'bad_frame', message: 'the server sent a frame that is not JSON' });
      return;
    }
    const id = f.id;
    switch (f.type) {
      case 'welcome':
        on.welcome(f);
        break;
      case 'event':
        on.event(f.event, f.payload, { event: f.event, room: f.room, seq: f.seq ?? f.payload?.seq });
        break;
      case 'joined':
      case 'left':
        if (!settle(id, (p) => {
          p.results.push({ room: f.room, ok: true });
          p.expect.delete(f.room);
          if (p.expect.size === 0) finish(id);
        })) (f.type === 'joined' ? on.joined : on.left)(f);
        break;
      case 'error':
        if (!settle(id, (p) => {
          if (f.room && p.expect.has(f.room)) {
            p.results.push({ room: f.room, ok: false, error: f.message, code: f.code });
            p.expect.delete(f.room);
          } else {
            for (const room of p.expect) p.results.push({ room, ok: false, error: f.message, code: f.code });
            p.expect.clear();
          }
          if (p.expect.size === 0) finish(id);
        })) on.error(f);
        break;
      case 'authenticated':
        if (!settle(id, (p) => { p.results.push({ ok: true, expires_at: f.expires_at }); finish(id); })) on.authenticated(f);
        break;
      case 'pong':
        on.pong(f);
        break;
      case 'resync_required':
        on.resync(f);
        break;
      default:
        // Frames added by later server versions are ignored, not fatal.
        break;
    }
  };

  socket.onclose = (e) => {
    closed = true;
    for (const [, p] of pending) {
      clearTimeout(p.timer);
      p.reject(new Error('connection closed'));
    }
    pending.clear();
    on.close({ code: e.code, reason: e.reason || '' });
  };
  // Browsers fire `error` then `close`; the close handler does the work.
  socket.onerror = () => {};

  return {
    kind: 'ws',
    /** Joins rooms; resolves to one `{ room, ok, error? }` per room. */
    join: (rooms) => request({ type: 'join', room: rooms }, rooms),
    leave: (rooms) => request({ type: 'leave', room: rooms }, rooms),
    /** Sends a fresh token; resolves `[{ ok, expires_at }]` or an `{ ok: false }` result. */
    auth: (tok) => request({ type: 'auth', token: tok }, ['auth']).then((r) => {
      // An error answer without a room lands as the expected pseudo-room "auth".
      const first = r[0] || { ok: false, error: 'no answer' };
      return first;
    }),
    ping: () => {
      if (socket.readyState === 1) socket.send(JSON.stringify({ type: 'ping' }));
    },
    /** Closes the connection (the close handler runs once it is closed). */
    close: (code = 1000, reason = '') => {
      try {
        socket.close(code, reason);
      } catch {
        socket.close();
      }
    },
    /** The underlying WebSocket (tests use it to drop the connection abruptly). */
    socket,
  };
}
