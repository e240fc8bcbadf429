// The pure reducers behind useRealtimeData and the notifications list.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { realtimeReducer, notificationsReducer, entityId } from '../state.js';

const ev = (op, data, extra = {}) => ({ event: `ticket.${{ insert: 'created', update: 'updated', delete: 'deleted' }[op]}`, op, entity: 'ticket', id: data.id, data, old: { id: data.id }, ...extra });

test('insert appends, update replaces in place, delete removes', () => {
  let s = [{ id: 1, subject: 'a' }];
  s = realtimeReducer(s, ev('insert', { id: 2, subject: 'b' }));
  assert.deepEqual(s, [{ id: 1, subject: 'a' }, { id: 2, subject: 'b' }]);
  s = realtimeReducer(s, ev('update', { id: 1, subject: 'A' }));
  assert.deepEqual(s, [{ id: 1, subject: 'A' }, { id: 2, subject: 'b' }]);
  s = realtimeReducer(s, ev('delete', { id: 1, subject: 'A' }));
  assert.deepEqual(s, [{ id: 2, subject: 'b' }]);
});

test('an update for an unknown row inserts it (upsert); a repeated insert does not duplicate', () => {
  let s = realtimeReducer([], ev('update', { id: 5, status: 'open' }));
  s = realtimeReducer(s, ev('insert', { id: 5, status: 'pending' }));
  assert.deepEqual(s, [{ id: 5, status: 'pending' }]);
});

test('ids match across number and string; data.id wins over the payload id', () => {
  const s = realtimeReducer([{ id: '7', v: 1 }], { op: 'update', id: 'ignored', data: { id: 7, v: 2 } });
  assert.deepEqual(s, [{ id: 7, v: 2 }]);
  assert.equal(entityId({ op: 'delete', id: 9, old: { id: 8 } }), '8');
  assert.equal(entityId({ op: 'delete', id: 9 }), '9');
});

test('deleting an unknown row and malformed actions leave the state untouched (same array)', () => {
  const s = [{ id: 1 }];
  assert.equal(realtimeReducer(s, ev('delete', { id: 2 })), s);
  assert.equal(realtimeReducer(s, null), s);
  assert.equal(realtimeReducer(s, { op: 'update' }), s);
  assert.equal(realtimeReducer(s, { op: 'update', id: 3, data: 'nope' }), s);
});

test('prepend puts new rows first; reset replaces the list', () => {
  const s = realtimeReducer([{ id: 1 }], ev('insert', { id: 2 }), { prepend: true });
  assert.deepEqual(s.map((r) => r.id), [2, 1]);
  assert.deepEqual(realtimeReducer(s, { type: 'reset', items: [{ id: 9 }] }), [{ id: 9 }]);
});

test('notifications: newest first, updates merge, read/unread, delete', () => {
  const n = (id, extra = {}) => ({ event: 'notification.created', op: 'insert', id, notification: { id, type: 'comment_on_ticket', message: `m${id}`, created_at: '2024-01-01T00:00:00Z', read_at: null, ...extra }, data: { id: 100 + id } });
  let s = notificationsReducer([], n(1));
  s = notificationsReducer(s, n(2));
  assert.deepEqual(s.map((x) => x.id), [2, 1]);
  assert.deepEqual(s[0].related, { id: 102 });
  s = notificationsReducer(s, { type: 'read', id: '1', at: 't' });
  assert.equal(s[1].read_at, 't');
  s = notificationsReducer(s, { type: 'unread', id: 1 });
  assert.equal(s[1].read_at, null);
  s = notificationsReducer(s, { ...n(2, { read_at: 'x' }), event: 'notification.updated', op: 'update' });
  assert.equal(s[0].read_at, 'x');
  assert.equal(s.length, 2);
  s = notificationsReducer(s, { event: 'notification.deleted', op: 'delete', id: 2, notification: { id: 2 } });
  assert.deepEqual(s.map((x) => x.id), [1]);
});
