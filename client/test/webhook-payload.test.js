// processWebhookPayload on the documented payloads and on malformed ones.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { processWebhookPayload, WebhookPayloadError, WEBHOOK_EVENTS } from '../webhooks.js';

const ticket = {
  event: 'ticket.updated', op: 'update', entity: 'ticket', table: 'public.tickets', id: 42, seq: '900-12',
  data: { id: 42, subject: 'Printer on fire', status: 'pending' }, old: { id: 42 }, committed_at: '2024-05-01T10:00:00.123Z',
};
const notification = {
  event: 'notification.created', op: 'insert', id: 7, seq: '901',
  notification: { id: 7, type: 'comment_on_ticket', message: 'New comment', related_id: '3', related_type: 'comment', created_at: '2024-05-01T10:00:00Z' },
  data: { id: 3, body: 'hi' }, committed_at: '2024-05-01T10:00:00Z',
};

test('WEBHOOK_EVENTS lists notifications and every entity verb', () => {
  const names = Object.values(WEBHOOK_EVENTS);
  assert.equal(names.length, 2 + 5 * 3);
  for (const e of ['ticket', 'comment', 'user', 'kb', 'attachment']) for (const v of ['created', 'updated', 'deleted']) assert.ok(names.includes(`${e}.${v}`));
  assert.ok(names.includes('notification.created') && names.includes('notification.updated'));
});

test('a valid entity payload (object, JSON string, bytes) becomes a typed event', () => {
  for (const input of [ticket, JSON.stringify(ticket), new TextEncoder().encode(JSON.stringify(ticket))]) {
    const e = processWebhookPayload(input);
    assert.equal(e.kind, 'entity');
    assert.equal(e.entity, 'ticket');
    assert.equal(e.action, 'updated');
    assert.equal(e.op, 'update');
    assert.equal(e.id, 42);
    assert.equal(e.data.status, 'pending');
    assert.equal(e.isKnownEvent, true);
  }
});

test('a delete carries the old row as data', () => {
  const e = processWebhookPayload({ ...ticket, event: 'ticket.deleted', op: 'delete', old: ticket.data });
  assert.equal(e.action, 'deleted');
  assert.equal(e.data.subject, 'Printer on fire');
});

test('a valid notification payload becomes a typed notification', () => {
  const e = processWebhookPayload(notification);
  assert.equal(e.kind, 'notification');
  assert.equal(e.notification.type, 'comment_on_ticket');
  assert.equal(e.data.body, 'hi');
  assert.equal(e.id, 7);
});

test('entities outside the default mapping are accepted but flagged', () => {
  const e = processWebhookPayload({ ...ticket, event: 'invoice.created', op: 'insert', entity: 'invoice' });
  assert.equal(e.entity, 'invoice');
  assert.equal(e.isKnownEvent, false);
});

test('malformed payloads throw a WebhookPayloadError naming the field', () => {
  const bad = [
    ['not json', '', /not JSON/],
    [[1, 2], '', /array/],
    [null, '', /null/],
    [{ ...ticket, event: undefined }, 'event', /missing/],
    [{ ...ticket, event: 'ticket.exploded' }, 'event', /created\|updated\|deleted/],
    [{ ...ticket, op: 'delete' }, 'op', /expected "update"/],
    [{ ...ticket, entity: 'comment' }, 'entity', /does not match/],
    [{ ...ticket, id: undefined }, 'id', /missing/],
    [{ ...ticket, data: undefined }, 'data', /row/],
    [{ ...ticket, data: [1] }, 'data', /not an object/],
    [{ ...ticket, seq: 5 }, 'seq', /string/],
    [{ ...ticket, committed_at: 'yesterday' }, 'committed_at', /RFC 3339/],
    [{ ...notification, notification: undefined }, 'notification', /missing/],
    [{ ...notification, notification: { type: 'x' } }, 'notification.id', /missing/],
    [{ ...notification, data: 'x' }, 'data', /object or null/],
  ];
  for (const [input, path, message] of bad) {
    assert.throws(
      () => processWebhookPayload(input),
      (err) => err instanceof WebhookPayloadError && err.path === path && message.test(err.message),
      `expected ${path} error for ${JSON.stringify(input)}`,
    );
  }
});
