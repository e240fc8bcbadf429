// The client fed every server frame of the shared fixture tests/fixtures/server-frames.json
// (the file tests/it/frames.rs checks a real rowcast against): for each `/ws` frame and close
// code, each Socket.IO event, `rowcast:error` code, acknowledgement and `connect_error`, the
// client must do what the protocol means. A fixture entry without an expectation here fails,
// so the server, the fixture and the client cannot drift apart. No server is needed: the
// transports run over a fake WebSocket and a fake `io`.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import { createClient } from '../index.js';
import { openWs } from '../transport-ws.js';

const FIXTURE = JSON.parse(readFileSync(new URL('../../tests/fixtures/server-frames.json', import.meta.url), 'utf8'));
const clone = (v) => JSON.parse(JSON.stringify(v));

// ---- the fixture's types (the same rules as tests/it/frames.rs) -------------------------

const keysOf = (entry) => (entry.shape ? FIXTURE.shapes[entry.shape].keys : entry.keys);

function conforms(spec, v) {
  return spec.split('|').some((alt) => {
    const t = alt.trim();
    if (t === 'string') return typeof v === 'string';
    if (t === 'integer') return Number.isInteger(v);
    if (t === 'boolean') return typeof v === 'boolean';
    if (t === 'null') return v === null;
    if (t === 'object') return v !== null && typeof v === 'object' && !Array.isArray(v);
    if (t === 'array') return Array.isArray(v);
    if (t.startsWith('array<') && t.endsWith('>')) return Array.isArray(v) && v.every((x) => conforms(t.slice(6, -1), x));
    if (t.startsWith('@')) return matches(FIXTURE.shapes[t.slice(1)].keys, v) === null;
    throw new Error(`unknown type ${t} in the fixture`);
  });
}

/** `null` when `v` has exactly `keys`, each of its type; otherwise what is wrong. */
function matches(keys, v) {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return `not an object: ${JSON.stringify(v)}`;
  const want = Object.keys(keys).sort();
  const got = Object.keys(v).sort();
  if (JSON.stringify(want) !== JSON.stringify(got)) return `keys ${got}, the fixture has ${want}`;
  for (const k of want) if (!conforms(keys[k], v[k])) return `${k} = ${JSON.stringify(v[k])} is not ${keys[k]}`;
  return null;
}

/** Runs `expect[name](entry, name)` for every entry of `entries`; fails for an entry without one. */
async function everyEntry(section, entries, expect) {
  const missing = Object.keys(entries).filter((name) => !expect[name]);
  assert.deepEqual(missing, [], `${section}: fixture entries the client tests do not cover`);
  for (const [name, entry] of Object.entries(entries)) {
    if (entry.example) assert.equal(matches(keysOf(entry), entry.example), null, `${section}/${name}: its example`);
    await expect[name](entry, name);
  }
}

// ---- fakes ----------------------------------------------------------------------------

const QUICK = { minDelay: 1, maxDelay: 5, factor: 2, jitter: 0 };

async function waitFor(what, check, ms = 2000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}

/** A WebSocket constructor whose server side the test plays. */
function fakeWsNetwork() {
  const net = { sockets: [] };
  net.WebSocket = class {
    constructor(url) {
      this.url = new URL(url);
      this.readyState = 1;
      this.sent = [];
      net.sockets.push(this);
    }
    send(text) {
      const f = JSON.parse(text);
      this.sent.push(f);
      if (f.type === 'ping' && net.onPing) queueMicrotask(() => net.onPing(this, f));
    }
    close(code = 1000, reason = '') {
      if (this.readyState === 3) return;
      this.readyState = 3;
      queueMicrotask(() => this.onclose && this.onclose({ code, reason }));
    }
    /** The server sends a frame. */
    frame(f) {
      this.onmessage({ data: JSON.stringify(f) });
    }
    /** The server closes the connection. */
    serverClose(code, reason) {
      this.readyState = 3;
      this.onclose({ code, reason });
    }
    request(type) {
      return this.sent.filter((f) => f.type === type).at(-1);
    }
  };
  net.last = () => net.sockets.at(-1);
  return net;
}

/** An `io` whose sockets behave like socket.io-client's towards their listeners. */
function fakeIo() {
  const net = { sockets: [] };
  class Socket {
    constructor(url, opts) {
      this.url = url;
      this.opts = opts;
      this.id = `sid-${net.sockets.length + 1}`;
      this.connected = false;
      this.handlers = new Map();
      this.anyHandlers = [];
      this.emitted = [];
      this.disconnected = false;
    }
    on(name, fn) {
      if (!this.handlers.has(name)) this.handlers.set(name, []);
      this.handlers.get(name).push(fn);
      return this;
    }
    onAny(fn) {
      this.anyHandlers.push(fn);
      return this;
    }
    offAny() {
      this.anyHandlers = [];
      return this;
    }
    removeAllListeners() {
      this.handlers.clear();
      return this;
    }
    disconnect() {
      this.connected = false;
      this.disconnected = true;
      return this;
    }
    timeout() {
      return { emit: (name, arg, cb) => this.emitted.push({ name, arg, cb }) };
    }
    /** Reserved events (connect, connect_error, disconnect) reach only their listeners. */
    fire(name, ...args) {
      for (const fn of [...(this.handlers.get(name) || [])]) fn(...args);
    }
    serverConnect() {
      this.connected = true;
      this.fire('connect');
    }
    /** A server event: first to the catch-all listeners, then to those of its name. */
    serverEmit(name, ...args) {
      for (const fn of [...this.anyHandlers]) fn(name, ...args);
      this.fire(name, ...args);
    }
    /** Answers the last `name` request with `answer`. */
    ack(name, answer) {
      const e = this.emitted.filter((x) => x.name === name).at(-1);
      assert.ok(e, `no ${name} was emitted`);
      e.cb(null, answer);
      return e.arg;
    }
  }
  net.io = (url, opts) => {
    const s = new Socket(url, opts);
    net.sockets.push(s);
    return s;
  };
  net.last = () => net.sockets.at(-1);
  return net;
}

function record(client) {
  const rec = { events: [], errors: [], disconnects: [], resyncs: [], byName: [] };
  client.on('*', (e) => rec.events.push(e));
  client.on('error', (e) => rec.errors.push(e));
  client.on('disconnected', (d) => rec.disconnects.push(d));
  client.on('resync_required', (f) => rec.resyncs.push(f));
  return rec;
}

/** A client over the fake `/ws`, welcomed with the fixture's welcome frame. */
async function wsClient(extra = {}) {
  const net = fakeWsNetwork();
  let tokens = 0;
  const client = createClient({
    url: 'http://rowcast.test',
    getToken: async () => `token-${++tokens}`,
    WebSocket: net.WebSocket,
    pingInterval: 0,
    refreshBeforeExpiry: 0,
    reconnect: QUICK,
    ...extra,
  });
  const rec = record(client);
  await waitFor('a WebSocket', () => net.sockets.length === 1);
  net.last().frame(clone(FIXTURE.ws.frames.welcome.example));
  assert.equal(client.state, 'connected');
  return { net, client, rec, tokens: () => tokens };
}

/** A client over the fake Socket.IO, connected. */
async function sioClient(extra = {}) {
  const net = fakeIo();
  let tokens = 0;
  const client = createClient({
    url: 'http://rowcast.test',
    getToken: async () => `token-${++tokens}`,
    transport: 'socket.io',
    io: net.io,
    reconnect: QUICK,
    ...extra,
  });
  const rec = record(client);
  await waitFor('a socket', () => net.sockets.length === 1);
  net.last().serverConnect();
  assert.equal(client.state, 'connected');
  return { net, client, rec, tokens: () => tokens };
}

// ---- /ws -------------------------------------------------------------------------------

test('/ws: every server frame of the fixture reaches its transport callback', async () => {
  const callbackOf = {
    welcome: 'welcome',
    joined: 'joined',
    left: 'left',
    event: 'event',
    error: 'error',
    pong: 'pong',
    authenticated: 'authenticated',
    resync_required: 'resync',
  };
  await everyEntry('ws/frames', FIXTURE.ws.frames, Object.fromEntries(Object.keys(callbackOf).map((type) => [type, async (entry) => {
    const net = fakeWsNetwork();
    const calls = [];
    const on = new Proxy({}, { get: (_, name) => (...args) => calls.push([name, ...args]) });
    openWs({ url: 'http://rowcast.test', token: 't', WebSocket: net.WebSocket }, on);
    net.last().frame(clone(entry.example));
    assert.deepEqual(calls.map((c) => c[0]), [callbackOf[type]], `${type} frame`);
    if (type === 'event') {
      const [, name, payload, meta] = calls[0];
      assert.equal(name, entry.example.event);
      assert.deepEqual(payload, entry.example.payload);
      assert.deepEqual(meta, { event: entry.example.event, room: entry.example.room, seq: entry.example.seq });
    } else {
      assert.deepEqual(calls[0][1], entry.example);
    }
  }])));
});

test('/ws: the client acts on every server frame of the fixture', async () => {
  const F = FIXTURE.ws.frames;
  await everyEntry('ws/frames', F, {
    welcome: async (entry) => {
      const { client } = await wsClient();
      assert.equal(client.user, entry.example.user);
      assert.deepEqual(client.roles, entry.example.roles);
      assert.equal(client.session, entry.example.session);
      assert.equal(client.expiresAt, entry.example.expires_at);
      assert.equal(client.lastSeq, entry.example.seq, 'a fresh client resumes from the welcome seq');
      client.close();
    },
    joined: async (entry) => {
      const { net, client } = await wsClient();
      const joining = client.join(entry.example.room);
      const req = net.last().request('join');
      net.last().frame({ ...clone(entry.example), id: req.id });
      assert.deepEqual(await joining, { ok: true, results: [{ room: entry.example.room, ok: true }] });
      assert.deepEqual(client.rooms, [entry.example.room]);
      client.close();
    },
    left: async (entry) => {
      const { net, client } = await wsClient({ rooms: [entry.example.room] });
      const leaving = client.leave(entry.example.room);
      const req = net.last().request('leave');
      net.last().frame({ ...clone(entry.example), id: req.id });
      assert.equal((await leaving).ok, true);
      assert.deepEqual(client.rooms, []);
      client.close();
    },
    error: async (entry) => {
      for (const code of entry.codes) {
        const { net, client, rec } = await wsClient();
        const joining = client.join(entry.example.room);
        const req = net.last().request('join');
        net.last().frame({ ...clone(entry.example), code, id: req.id });
        const r = await joining;
        assert.equal(r.ok, false, code);
        assert.equal(r.error, entry.example.message);
        assert.equal(r.results[0].code, code);
        assert.deepEqual(client.rooms, [], 'a refused room is forgotten');
        assert.equal(rec.errors.at(-1).code, code);
        // Unasked (no request id): reported as an error, the connection goes on.
        net.last().frame({ ...clone(entry.example), code, id: null, room: null });
        assert.equal(rec.errors.at(-1).code, code);
        assert.equal(client.state, 'connected');
        client.close();
      }
    },
    event: async (entry) => {
      const { net, client, rec } = await wsClient();
      const got = [];
      client.on(entry.example.event, (payload, meta) => got.push({ payload, meta }));
      net.last().frame(clone(entry.example));
      assert.deepEqual(got, [{ payload: entry.example.payload, meta: { event: entry.example.event, room: entry.example.room, seq: entry.example.seq } }]);
      assert.equal(rec.events.length, 1);
      assert.equal(client.lastSeq, entry.example.seq);
      net.last().frame(clone(entry.example));
      assert.equal(rec.events.length, 1, 'a repeated seq is delivered once');
      // A notification through the private room.
      const n = { ...clone(entry.example), event: 'notification', room: 'user:1', seq: FIXTURE.events.notification.example.seq, payload: clone(FIXTURE.events.notification.example) };
      net.last().frame(n);
      assert.equal(rec.events.at(-1).event, 'notification');
      assert.equal(rec.events.at(-1).payload.notification.id, n.payload.notification.id);
      client.close();
    },
    pong: async (entry) => {
      // Every ping answered: the connection stays.
      const { net, client } = await wsClient({ pingInterval: 20, pingTimeout: 60 });
      net.onPing = (ws) => ws.frame(clone(entry.example));
      await waitFor('three pings', () => net.last().sent.filter((f) => f.type === 'ping').length >= 3);
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(net.sockets.length, 1, 'answered pings keep the connection');
      assert.equal(client.state, 'connected');
      // Unanswered: the client gives up on the connection and reconnects.
      net.onPing = null;
      await waitFor('a reconnect without pongs', () => net.sockets.length === 2);
      client.close();
    },
    authenticated: async (entry) => {
      const { net, client } = await wsClient();
      const refreshing = client.setToken('a-new-token');
      const req = net.last().request('auth');
      assert.equal(req.token, 'a-new-token');
      net.last().frame({ ...clone(entry.example), id: req.id });
      assert.equal((await refreshing).ok, true);
      assert.equal(client.expiresAt, entry.example.expires_at);
      assert.equal(net.sockets.length, 1, 'no reconnect');
      client.close();
    },
    resync_required: async (entry) => {
      const { net, client, rec } = await wsClient();
      const states = [];
      client.on('state', (s) => states.push(s));
      net.last().frame(clone(entry.example));
      assert.deepEqual(rec.resyncs, [entry.example]);
      assert.equal(client.lastSeq, entry.example.seq, 'continues from the frame seq');
      assert.deepEqual(states, ['resync_required', 'connected']);
      assert.equal(rec.events.length, 0, 'not a data event');
      client.close();
    },
  });
});

test('/ws: the client reconnects the right way after every close code of the fixture', async () => {
  const expect = {
    1001: { freshToken: false },
    4008: { freshToken: false },
    4401: { freshToken: true },
    1011: { freshToken: false },
    1009: { freshToken: false },
  };
  const codes = Object.fromEntries(Object.keys(FIXTURE.ws.close_codes).map((code) => [code, async (entry) => {
    assert.ok(expect[code], `no expectation for close code ${code}`);
    const { net, client, rec, tokens } = await wsClient({ rooms: ['tickets'] });
    net.last().frame(clone(FIXTURE.ws.frames.event.example));
    const seq = client.lastSeq;
    net.last().serverClose(Number(code), entry.reason);
    assert.deepEqual(rec.disconnects.at(-1), { code: Number(code), reason: entry.reason, welcomed: true });
    await waitFor(`a reconnect after ${code}`, () => net.sockets.length === 2);
    const url = net.last().url;
    assert.equal(url.searchParams.get('since'), seq, 'resumes from the last seq');
    assert.equal(url.searchParams.get('rooms'), 'tickets', 'with its rooms');
    assert.equal(tokens() === 2, expect[code].freshToken, `a new token after ${code}`);
    assert.equal(url.searchParams.get('token'), `token-${tokens()}`);
    client.close();
  }]));
  for (const [code, entry] of Object.entries(FIXTURE.ws.close_codes)) await codes[code](entry);
});

// ---- Socket.IO -------------------------------------------------------------------------

test('socket.io: every data event of the fixture reaches its listeners', async () => {
  await everyEntry('events', FIXTURE.events, Object.fromEntries(Object.keys(FIXTURE.events).map((name) => [name, async (entry) => {
    const { net, client, rec } = await sioClient();
    const got = [];
    client.on(name, (payload, meta) => got.push({ payload, meta }));
    net.last().serverEmit(name, clone(entry.example));
    assert.deepEqual(got, [{ payload: entry.example, meta: { event: name, room: undefined, seq: entry.example.seq } }]);
    assert.deepEqual(rec.events.map((e) => e.event), [name]);
    assert.equal(client.lastSeq, entry.example.seq);
    client.close();
  }])));
});

test('socket.io: the control events of the fixture are handled, never delivered as data', async () => {
  const rowcastErrorClose = { too_slow: { close: 4008, freshToken: false }, token_expired: { close: 4401, freshToken: true }, unavailable: { close: 1011, freshToken: false } };
  await everyEntry('socketio/events', FIXTURE.socketio.events, {
    resync_required: async (entry) => {
      const { net, client, rec } = await sioClient();
      net.last().serverEmit('resync_required', clone(entry.example));
      assert.deepEqual(rec.resyncs, [{ type: 'resync_required', ...entry.example }]);
      assert.equal(client.lastSeq, entry.example.seq);
      assert.equal(client.state, 'connected');
      assert.deepEqual(rec.events, [], 'not a data event');
      client.close();
    },
    'rowcast:error': async (entry) => {
      for (const code of entry.codes) {
        const want = rowcastErrorClose[code];
        assert.ok(want, `no expectation for rowcast:error ${code}`);
        const { net, client, rec, tokens } = await sioClient({ rooms: ['tickets'] });
        const asData = [];
        client.on('rowcast:error', (p) => asData.push(p));
        const first = net.last();
        first.ack('join', { ok: true, rooms: ['tickets'], seq: '1180' });
        await new Promise((r) => setImmediate(r));
        first.serverEmit('ticket.update', clone(FIXTURE.events['ticket.update'].example));
        const seq = client.lastSeq;
        const error = { ...clone(entry.example), code };
        first.serverEmit('rowcast:error', error);
        // The server disconnects right after; the client has already closed.
        first.fire('disconnect', 'io server disconnect');
        assert.deepEqual(asData, [], `rowcast:error ${code} is not a data event`);
        assert.deepEqual(rec.events.map((e) => e.event), ['ticket.update']);
        assert.equal(rec.disconnects.length, 1);
        assert.deepEqual(rec.disconnects[0], { code: want.close, reason: error.message, welcomed: true, serverError: error });
        assert.ok(first.disconnected, 'the client closed the socket');
        await waitFor(`a reconnect after rowcast:error ${code}`, () => net.sockets.length === 2);
        assert.equal(net.last().opts.auth.since, seq, 'resumes from the last seq');
        assert.equal(tokens() === 2, want.freshToken, `a new token after ${code}`);
        assert.equal(net.last().opts.auth.token, `token-${tokens()}`);
        net.last().serverConnect();
        await waitFor('the rooms joined again', () => net.last().emitted.some((e) => e.name === 'join'));
        assert.deepEqual(net.last().emitted.find((e) => e.name === 'join').arg, ['tickets']);
        client.close();
      }
    },
  });
});

test('socket.io: every acknowledgement of the fixture resolves join/leave', async () => {
  const A = FIXTURE.socketio.acks;
  await everyEntry('socketio/acks', A, {
    join_ok: async (entry) => {
      const { net, client } = await sioClient();
      const joining = client.join(entry.example.rooms);
      net.last().ack('join', clone(entry.example));
      assert.deepEqual(await joining, { ok: true, results: entry.example.rooms.map((room) => ({ room, ok: true })) });
      assert.deepEqual(client.rooms, entry.example.rooms);
      assert.equal(client.lastSeq, entry.example.seq, 'a fresh client resumes from the join answer');
      client.close();
    },
    join_refused: async (entry) => {
      const { net, client, rec } = await sioClient();
      const asked = [...entry.example.rooms, ...entry.example.refused.map((r) => r.room)];
      const joining = client.join(asked);
      net.last().ack('join', clone(entry.example));
      const r = await joining;
      assert.equal(r.ok, false);
      assert.equal(r.error, entry.example.refused[0].error);
      assert.deepEqual(r.results, [
        ...entry.example.rooms.map((room) => ({ room, ok: true })),
        ...entry.example.refused.map((x) => ({ room: x.room, ok: false, error: x.error, code: x.code })),
      ]);
      assert.deepEqual(client.rooms, entry.example.rooms, 'joined rooms kept, refused ones forgotten');
      assert.deepEqual(rec.errors.map((e) => [e.room, e.code]), entry.example.refused.map((x) => [x.room, x.code]));
      for (const code of entry.codes) {
        const again = client.join('other');
        net.last().ack('join', { ...clone(entry.example), code, room: 'other', rooms: [], refused: [{ room: 'other', code, error: 'no' }] });
        assert.equal((await again).results[0].code, code);
      }
      client.close();
    },
    leave_ok: async (entry) => {
      const { net, client } = await sioClient({ rooms: entry.example.rooms });
      net.last().ack('join', { ok: true, rooms: entry.example.rooms, seq: '1' });
      const leaving = client.leave(entry.example.rooms);
      net.last().ack('leave', clone(entry.example));
      assert.deepEqual(await leaving, { ok: true, results: entry.example.rooms.map((room) => ({ room, ok: true })) });
      assert.deepEqual(client.rooms, []);
      client.close();
    },
    refused: async (entry) => {
      for (const code of entry.codes) {
        const { net, client, rec } = await sioClient();
        const joining = client.join(['a', 'b']);
        net.last().ack('join', { ...clone(entry.example), code });
        const r = await joining;
        assert.equal(r.ok, false);
        assert.deepEqual(r.results, ['a', 'b'].map((room) => ({ room, ok: false, error: entry.example.error, code })));
        assert.deepEqual(client.rooms, []);
        assert.equal(rec.errors.length, 2);
        const leaving = client.leave('user:1');
        net.last().ack('leave', { ...clone(entry.example), code });
        assert.equal((await leaving).ok, false, `leave refused with ${code}`);
        client.close();
      }
    },
  });
});

test('socket.io: every connect_error of the fixture closes with the code that tells the client what to do', async () => {
  const entry = FIXTURE.socketio.connect_error;
  const expect = {
    unauthorized: { close: 4401, error: null },
    unavailable: { close: 1001, error: null },
    bad_request: { close: 1006, error: 'bad_request' },
  };
  assert.deepEqual(entry.codes.filter((c) => !expect[c]), [], 'connect_error codes the client tests do not cover');
  for (const message of entry.examples) {
    const code = message.split(': ')[0];
    assert.ok(entry.codes.includes(code), message);
    assert.equal(matches(entry.keys, { message }), null);
    const net = fakeIo();
    let tokens = 0;
    const client = createClient({ url: 'http://rowcast.test', getToken: async () => `token-${++tokens}`, transport: 'socket.io', io: net.io, reconnect: QUICK });
    const rec = record(client);
    await waitFor('a socket', () => net.sockets.length === 1);
    net.last().fire('connect_error', new Error(message));
    assert.deepEqual(rec.disconnects, [{ code: expect[code].close, reason: message, welcomed: false }], message);
    assert.deepEqual(rec.errors.map((e) => e.code), expect[code].error ? [expect[code].error] : [], message);
    await waitFor(`a retry after ${message}`, () => net.sockets.length === 2);
    assert.equal(tokens, 2, 'a refused handshake fetches a new token');
    client.close();
  }
});
