// The client over `/ws` against a real rowcast: reconnect and resume (dropped connection,
// server restart), room re-joins, refused joins, token expiry and refresh.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient, compareSeq } from '../index.js';
import { need, ROWCAST_URL, query, token, stopRowcast, startRowcast, waitFor, sleep } from './helpers.js';

const WS = need('ws');

/** A WebSocket constructor whose connections the test can drop, and block while "offline". */
function flakyNetwork() {
  const net = { offline: false, sockets: [], attempts: 0 };
  net.WebSocket = class extends WS {
    constructor(url, ...rest) {
      net.attempts += 1;
      // Offline: connect to a closed port so the attempt fails like a dead network.
      super(net.offline ? 'ws://127.0.0.1:9/ws' : url, ...rest);
      net.sockets.push(this);
    }
  };
  net.drop = () => net.sockets.at(-1).terminate();
  return net;
}

/** Records every server event (after the client's de-duplication) and every state. */
function record(client) {
  const rec = { events: [], states: [], errors: [] };
  client.on('*', (e) => rec.events.push(e));
  client.on('state', (s) => rec.states.push(s));
  client.on('error', (e) => rec.errors.push(e));
  return rec;
}

const insertTicket = async (subject) =>
  (await query(`INSERT INTO tickets (subject, requester_id) VALUES ('${subject}', 3) RETURNING id`))[0].id;
const insertKb = async (title) =>
  (await query(`INSERT INTO kb_articles (title, body, published) VALUES ('${title}', 'body', true) RETURNING id`))[0].id;

/** Asserts seqs strictly increase (in order) and no seq repeats (once). */
function assertOrderedOnce(events) {
  for (let i = 1; i < events.length; i++) {
    assert.ok(compareSeq(events[i - 1].seq, events[i].seq) < 0, `events out of order or repeated at ${i}: ${events[i - 1].seq} then ${events[i].seq}`);
  }
}

test('connects with a token, auto-joins rooms, receives a ticket.update', async () => {
  const client = createClient({ url: ROWCAST_URL(), token: await token('1', 'agent'), rooms: ['tickets'], WebSocket: WS });
  const rec = record(client);
  try {
    await waitFor('connected', () => client.isConnected);
    assert.equal(client.user, '1');
    assert.ok(client.lastSeq, 'welcome seq is the resume point of a fresh client');
    const got = new Promise((resolve) => client.once('ticket.update', (p, meta) => resolve({ p, meta })));
    // A join is answered before the INSERT, so the event cannot be missed.
    const j = await client.join('tickets');
    assert.equal(j.ok, true);
    const id = await insertTicket('hello from node');
    const { p, meta } = await got;
    assert.equal(p.event, 'ticket.created');
    assert.equal(String(p.id), String(id));
    assert.equal(meta.room, 'tickets');
    assert.equal(client.lastSeq, p.seq);
    assert.deepEqual(rec.states.slice(0, 2), ['connecting', 'connected']);
  } finally {
    client.close();
  }
});

test('dropped connection: events committed while offline arrive after reconnect, in order, once; rooms re-joined', async () => {
  const net = flakyNetwork();
  const client = createClient({
    url: ROWCAST_URL(),
    token: await token('1', 'agent'),
    rooms: ['tickets'],
    WebSocket: net.WebSocket,
    reconnect: { minDelay: 100, maxDelay: 400 },
  });
  const rec = record(client);
  try {
    await waitFor('connected', () => client.isConnected);
    assert.equal((await client.join('kb')).ok, true, 'join kb after connect');
    const before = await insertTicket('before the drop');
    await waitFor('the first event', () => rec.events.some((e) => String(e.payload.id) === String(before)));

    net.offline = true;
    net.drop();
    await waitFor('disconnected', () => client.state === 'disconnected' || client.state === 'connecting');
    const attempts = net.attempts;
    await waitFor('a failed reconnect attempt', () => net.attempts > attempts, 5000);

    const missed = [];
    for (let i = 0; i < 3; i++) {
      missed.push(['ticket.update', String(await insertTicket(`offline ${i}`))]);
      missed.push(['kb.update', String(await insertKb(`offline kb ${i}`))]);
    }
    assert.ok(!client.isConnected, 'still offline while committing');
    net.offline = false;

    await waitFor('reconnected', () => client.isConnected, 10000);
    const sentinel = await insertTicket('after the reconnect');
    await waitFor('the sentinel', () => rec.events.some((e) => String(e.payload.id) === String(sentinel)));
    await sleep(300); // room for a duplicate to show up, if any

    const after = rec.events.slice(rec.events.findIndex((e) => String(e.payload.id) === String(before)) + 1);
    assert.deepEqual(
      after.map((e) => [e.event, String(e.payload.id)]),
      [...missed, ['ticket.update', String(sentinel)]],
      'missed events, then the live one, each once',
    );
    assertOrderedOnce(after);
    assert.ok(rec.states.includes('disconnected'));
    assert.deepEqual(client.rooms.sort(), ['kb', 'tickets']);
  } finally {
    client.close();
  }
});

test('server restart: the client reconnects and catches up from its last seq', async () => {
  const client = createClient({ url: ROWCAST_URL(), token: await token('1', 'agent'), rooms: ['tickets'], WebSocket: WS, reconnect: { minDelay: 100, maxDelay: 500 } });
  const rec = record(client);
  const closes = [];
  client.on('disconnected', (d) => closes.push(d.code));
  try {
    await waitFor('connected', () => client.isConnected);
    const first = await insertTicket('before restart');
    await waitFor('first event', () => rec.events.some((e) => String(e.payload.id) === String(first)));

    await stopRowcast();
    await waitFor('disconnected', () => !client.isConnected);
    assert.equal(closes[0], 1001, 'graceful shutdown closes with 1001');
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(String(await insertTicket(`while down ${i}`)));
    await startRowcast();

    await waitFor('the missed events', () => rec.events.filter((e) => missed.includes(String(e.payload.id))).length === 3, 15000);
    const live = await insertTicket('after restart');
    await waitFor('the live event', () => rec.events.some((e) => String(e.payload.id) === String(live)));
    await sleep(300);
    const after = rec.events.slice(rec.events.findIndex((e) => String(e.payload.id) === String(first)) + 1);
    assert.deepEqual(after.map((e) => String(e.payload.id)), [...missed, String(live)]);
    assertOrderedOnce(after);
  } finally {
    client.close();
  }
});

test('a refused join answers an error and is not retried', async () => {
  const client = createClient({ url: ROWCAST_URL(), token: await token('3', 'customer'), WebSocket: WS });
  const rec = record(client);
  try {
    await waitFor('connected', () => client.isConnected);
    const r = await client.join('users');
    assert.equal(r.ok, false);
    assert.match(r.error, /users/);
    assert.deepEqual(client.rooms, []);
    assert.ok(rec.errors.some((e) => e.room === 'users'));
    assert.equal((await client.join('kb')).ok, true, 'kb is open to every role');
  } finally {
    client.close();
  }
});

test('token expiry: close 4401 calls getToken and the session continues', async () => {
  let calls = 0;
  const client = createClient({
    url: ROWCAST_URL(),
    // First a token that expires in 1 s, then long-lived ones.
    getToken: async () => token('1', 'agent', calls++ === 0 ? 1 : 3600),
    rooms: ['tickets'],
    refreshBeforeExpiry: 0,
    WebSocket: WS,
    reconnect: { minDelay: 50, maxDelay: 200 },
  });
  const closes = [];
  client.on('disconnected', (d) => closes.push(d.code));
  const rec = record(client);
  try {
    await waitFor('the 4401 close', () => closes.includes(4401), 5000);
    await waitFor('reconnected', () => client.isConnected);
    assert.equal(calls, 2, 'getToken called once more after 4401');
    const id = await insertTicket('after token refresh');
    await waitFor('an event after the refresh', () => rec.events.some((e) => String(e.payload.id) === String(id)));
  } finally {
    client.close();
  }
});

test('token refresh before expiry goes over the open connection (auth frame)', async () => {
  let calls = 0;
  const client = createClient({
    url: ROWCAST_URL(),
    // A first token of 5 s (whole seconds: 4–5 s in fact), refreshed 3 s before it ends,
    // leaves a loaded machine time to connect before the refresh is due.
    getToken: async () => token('1', 'agent', calls++ === 0 ? 5 : 3600),
    refreshBeforeExpiry: 3,
    WebSocket: WS,
  });
  const closes = [];
  client.on('disconnected', (d) => closes.push(d.code));
  try {
    await waitFor('connected', () => client.isConnected);
    const firstExpiry = client.expiresAt;
    await waitFor('a refreshed expiry', () => client.expiresAt > firstExpiry + 60, 8000);
    await sleep(Math.max(0, firstExpiry * 1000 - Date.now()) + 1200);
    assert.deepEqual(closes, [], 'the session outlived the first token');
    assert.equal(calls, 2);
  } finally {
    client.close();
  }
});
