// The client's Socket.IO transport against rowcast's /socket.io/, run by the Rust test
// `client::js_client_socketio`. (Every frame shape, fed without a server: frames.test.js.)

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { createClient, compareSeq } from '../index.js';
import { need, ROWCAST_URL, query, token, stopRowcast, startRowcast, waitFor, sleep } from './helpers.js';

const { io } = need('socket.io-client');

const insertTicket = async (subject) =>
  (await query(`INSERT INTO tickets (subject, requester_id) VALUES ('${subject}', 3) RETURNING id`))[0].id;

function record(client) {
  const rec = { events: [], errors: [] };
  client.on('*', (e) => rec.events.push(e));
  client.on('error', (e) => rec.errors.push(e));
  return rec;
}

test('socket.io: connect with auth.token, join with ack, receive ticket.update', async () => {
  const client = createClient({ url: ROWCAST_URL(), token: await token('1', 'agent'), transport: 'socket.io', io });
  const rec = record(client);
  try {
    await waitFor('connected', () => client.isConnected);
    const j = await client.join('tickets');
    assert.equal(j.ok, true, JSON.stringify(j));
    const id = await insertTicket('hello over socket.io');
    await waitFor('the event', () => rec.events.find((e) => e.event === 'ticket.update' && String(e.payload.id) === String(id)));
    const e = rec.events.find((x) => String(x.payload.id) === String(id));
    assert.equal(e.payload.event, 'ticket.created');
    assert.ok(e.seq, 'the payload carries seq');
  } finally {
    client.close();
  }
});

test('socket.io: a refused join answers { ok: false, error }', async () => {
  const client = createClient({ url: ROWCAST_URL(), token: await token('3', 'customer'), transport: 'socket.io', io });
  try {
    await waitFor('connected', () => client.isConnected);
    const j = await client.join('users');
    assert.equal(j.ok, false);
    assert.ok(j.error, 'the refusal says why');
    assert.deepEqual(client.rooms, []);
  } finally {
    client.close();
  }
});

test('socket.io: a bad token is a connect_error, reported and retried with getToken', async () => {
  let calls = 0;
  const client = createClient({
    url: ROWCAST_URL(),
    getToken: async () => (calls++ === 0 ? 'not-a-jwt' : token('1', 'agent')),
    transport: 'socket.io',
    io,
    reconnect: { minDelay: 50, maxDelay: 200 },
  });
  const closes = [];
  client.on('disconnected', (d) => closes.push(d));
  try {
    await waitFor('connected with the second token', () => client.isConnected);
    assert.equal(calls, 2);
    assert.ok(closes.length >= 1 && closes[0].welcomed === false, JSON.stringify(closes));
  } finally {
    client.close();
  }
});

test('socket.io: server restart, then resume with auth.since: missed events in order, once', async () => {
  const client = createClient({ url: ROWCAST_URL(), token: await token('1', 'agent'), transport: 'socket.io', io, rooms: ['tickets'], reconnect: { minDelay: 100, maxDelay: 500 } });
  const rec = record(client);
  try {
    await waitFor('connected', () => client.isConnected);
    await waitFor('tickets joined', async () => (await client.join('tickets')).ok);
    const first = await insertTicket('before restart (sio)');
    await waitFor('first event', () => rec.events.some((e) => String(e.payload.id) === String(first)));
    await stopRowcast();
    await waitFor('disconnected', () => !client.isConnected);
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(String(await insertTicket(`while down (sio) ${i}`)));
    await startRowcast();
    await waitFor('the missed events', () => rec.events.filter((e) => missed.includes(String(e.payload.id))).length === 3, 15000);
    assert.equal(client.recovered, true, 'the session was recovered with its pid');
    const live = await insertTicket('after restart (sio)');
    await waitFor('the live event', () => rec.events.some((e) => String(e.payload.id) === String(live)));
    await sleep(300);
    const after = rec.events.slice(rec.events.findIndex((e) => String(e.payload.id) === String(first)) + 1);
    assert.deepEqual(after.map((e) => String(e.payload.id)), [...missed, String(live)]);
    for (let i = 1; i < after.length; i++) assert.ok(compareSeq(after[i - 1].seq, after[i].seq) < 0);
  } finally {
    client.close();
  }
});

test('socket.io: rowcast:error token_expired is a 4401 close, not an event: getToken, reconnect, resume', async () => {
  let calls = 0;
  const client = createClient({
    url: ROWCAST_URL(),
    // First a token that expires in 2 s, then long-lived ones.
    getToken: async () => token('1', 'agent', calls++ === 0 ? 2 : 3600),
    transport: 'socket.io',
    io,
    rooms: ['tickets'],
    refreshBeforeExpiry: 0,
    reconnect: { minDelay: 50, maxDelay: 200 },
  });
  const rec = record(client);
  const closes = [];
  client.on('disconnected', (d) => closes.push(d));
  const asData = [];
  client.on('rowcast:error', (p) => asData.push(p));
  try {
    await waitFor('connected', () => client.isConnected);
    await waitFor('tickets joined', () => client.lastSeq);
    await waitFor('the token_expired close', () => closes.length > 0, 8000);
    assert.equal(closes[0].code, 4401, JSON.stringify(closes));
    assert.equal(closes[0].serverError.code, 'token_expired');
    await waitFor('reconnected', () => client.isConnected);
    assert.equal(calls, 2, 'one new token, fetched before the reconnect');
    assert.equal(closes.length, 1, 'no refused attempt with the expired token');
    const id = await insertTicket('after rowcast:error (sio)');
    await waitFor('an event after the reconnect', () => rec.events.some((e) => String(e.payload.id) === String(id)));
    assert.deepEqual(asData, [], 'rowcast:error is not delivered as an event');
    assert.ok(!rec.events.some((e) => e.event.startsWith('rowcast:')));
  } finally {
    client.close();
  }
});

test('socket.io: a client that drops before its first event recovers from its join (no events missed)', async () => {
  const client = createClient({ url: ROWCAST_URL(), token: await token('1', 'agent'), transport: 'socket.io', io, rooms: ['tickets'], reconnect: { minDelay: 100, maxDelay: 500 } });
  const rec = record(client);
  try {
    await waitFor('connected', () => client.isConnected);
    await waitFor('tickets joined', () => client.rooms.includes('tickets'));
    await sleep(300); // the join is recorded with the session's pid
    await stopRowcast();
    await waitFor('disconnected', () => !client.isConnected);
    const missed = [];
    for (let i = 0; i < 3; i++) missed.push(String(await insertTicket(`never seen (sio) ${i}`)));
    await startRowcast();
    await waitFor('the missed events', () => rec.events.filter((e) => missed.includes(String(e.payload.id))).length === 3, 15000);
    assert.equal(client.recovered, true);
    assert.deepEqual(rec.events.map((e) => String(e.payload.id)), missed, 'in order, once, nothing else');
  } finally {
    client.close();
  }
});
