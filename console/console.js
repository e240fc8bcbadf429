// The rowcast console: connect with a token, join rooms, watch events and notifications,
// manage the caller's webhook. Built on the @rowcast/client modules rowcast serves itself.

import { createClient, notificationsReducer } from '../client/index.js';
import { createWebhookApi } from '../client/webhooks.js';

const $ = (id) => document.getElementById(id);
const MAX_EVENTS = 300;
const params = new URLSearchParams(location.search);
const baseUrl = new URL('.', location.href).href.replace(/\/$/, '');

let client = null;
let notifications = [];
let eventCount = 0;

function say(text) {
  $('message').textContent = text;
}

function setState(state, detail) {
  $('dot').dataset.state = state;
  $('dot').title = state;
  const why = detail && detail.code ? ` (close ${detail.code}${detail.reason ? `: ${detail.reason}` : ''})` : '';
  $('state').textContent = { idle: 'not connected', connecting: 'connecting…', connected: 'connected', disconnected: 'disconnected — reconnecting', resync_required: 'resync required', closed: 'closed' }[state] + why;
}

function showRooms() {
  const rooms = client ? [client.user ? `user:${client.user}` : null, ...client.rooms].filter(Boolean) : [];
  $('joined').replaceChildren(...rooms.map((r) => Object.assign(document.createElement('span'), { textContent: r })));
}

function roomsInput() {
  return $('rooms').value.split(',').map((s) => s.trim()).filter(Boolean);
}

function summary(p) {
  if (!p || typeof p !== 'object') return '';
  if (p.notification) return `#${p.notification.id} ${p.notification.type}: ${p.notification.message}`;
  const d = p.data || {};
  const label = d.subject ?? d.title ?? d.name ?? d.filename ?? d.body ?? '';
  return `${p.op ?? ''} #${p.id ?? d.id ?? ''} ${String(label).slice(0, 80)}`;
}

function addEvent({ event, room, seq, payload }) {
  eventCount += 1;
  $('event-count').textContent = String(eventCount);
  const li = document.createElement('li');
  li.className = `op-${payload?.op ?? 'none'}`;
  li.dataset.event = event;
  li.dataset.seq = seq ?? '';
  const time = new Date().toLocaleTimeString();
  li.innerHTML = '<span class="meta"></span> <span class="name"></span> <span class="summary"></span><pre></pre>';
  li.querySelector('.meta').textContent = `${time} ${room ?? ''} ${seq ?? ''}`;
  li.querySelector('.name').textContent = event;
  li.querySelector('.summary').textContent = summary(payload);
  li.querySelector('pre').textContent = JSON.stringify(payload, null, 2);
  li.addEventListener('click', () => li.classList.toggle('open'));
  const list = $('events');
  list.prepend(li);
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function renderNotifications() {
  $('unread').textContent = String(notifications.filter((n) => !n.read_at).length);
  $('notifications').replaceChildren(
    ...notifications.slice(0, 100).map((n) => {
      const li = document.createElement('li');
      li.className = n.read_at ? 'read' : 'unread';
      li.textContent = `${n.created_at ?? ''} ${n.type}: ${n.message}`;
      return li;
    }),
  );
}

function connect(token) {
  if (client) client.close();
  notifications = [];
  renderNotifications();
  client = createClient({ url: baseUrl, token, rooms: roomsInput(), reconnect: { minDelay: 250, maxDelay: 5000 } });
  client.on('state', (s, detail) => {
    setState(s, detail);
    showRooms();
  });
  client.on('welcome', (w) => {
    $('who').textContent = `user ${w.user ?? '?'} (${(w.roles || []).join(', ') || 'no role'})`;
    say('');
  });
  client.on('error', (e) => say(`${e.room ? `room ${e.room}: ` : ''}${e.message ?? e.code}`));
  client.on('resync_required', (r) => say(`resync required: ${r.message}`));
  client.on('*', addEvent);
  for (const name of ['notification', 'notification.update']) {
    client.on(name, (p) => {
      notifications = notificationsReducer(notifications, p);
      renderNotifications();
    });
  }
  webhooks = createWebhookApi({ baseUrl, token });
  loadWebhook();
}

// ---- webhook panel: every server error is shown, never swallowed ----

let webhooks = null;

function webhookError(err) {
  $('webhook-error').textContent = err ? `${err.message}` : '';
}

async function webhookCall(what, fn) {
  if (!webhooks) {
    webhookError(new Error('connect with a token first'));
    return undefined;
  }
  try {
    const r = await fn(webhooks);
    webhookError(null);
    return r;
  } catch (err) {
    webhookError(new Error(`${what} failed: ${err.message}`));
    return undefined;
  }
}

function showWebhook(w) {
  if (!w) {
    $('webhook-info').textContent = 'No webhook set.';
    return;
  }
  const url = w.url ?? w.endpoint?.url ?? '';
  if (url) $('webhook-url').value = url;
  const secret = w.secret ? ` — signing secret: ${w.secret}` : '';
  $('webhook-info').textContent = `${url}${secret}`;
}

async function loadWebhook() {
  const w = await webhookCall('Loading your webhook', (api) => api.getWebhookUrl());
  if (w !== undefined) showWebhook(w);
  await loadDeliveries();
}

async function loadDeliveries() {
  const r = await webhookCall('Loading deliveries', (api) => api.getWebhookDeliveries());
  if (r === undefined) return;
  const list = r?.deliveries ?? [];
  $('deliveries').tBodies[0].replaceChildren(
    ...list.map((d) => {
      const tr = document.createElement('tr');
      for (const v of [d.id, d.event_type, d.status, d.attempts, d.created_at]) {
        tr.appendChild(Object.assign(document.createElement('td'), { textContent: String(v) }));
      }
      tr.addEventListener('click', async () => {
        const detail = await webhookCall(`Loading delivery ${d.id}`, (api) => api.getWebhookDelivery(d.id));
        if (detail !== undefined) $('delivery-detail').textContent = JSON.stringify(detail, null, 2);
      });
      return tr;
    }),
  );
}

// ---- wiring ----

$('connect-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const token = $('token').value.trim();
  if (!token) {
    say('paste a token first');
    return;
  }
  connect(token);
});
$('disconnect').addEventListener('click', () => client && client.close());
$('rooms-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!client) return say('connect first');
  const r = await client.join(roomsInput()).catch((err) => ({ ok: false, error: err.message }));
  say(r.ok ? `joined ${roomsInput().join(', ')}` : `join refused: ${r.error}`);
  showRooms();
});
$('leave').addEventListener('click', async () => {
  if (!client) return;
  await client.leave(roomsInput()).catch(() => {});
  showRooms();
});
$('clear').addEventListener('click', () => {
  $('events').replaceChildren();
  eventCount = 0;
  $('event-count').textContent = '0';
});
$('webhook-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const w = await webhookCall('Saving the webhook', (api) => api.setWebhookUrl($('webhook-url').value.trim()));
  if (w !== undefined) showWebhook(w);
});
$('webhook-test').addEventListener('click', async () => {
  const r = await webhookCall('Sending a test', (api) => api.testWebhook());
  if (r !== undefined) {
    $('webhook-info').textContent = 'Test sent.';
    setTimeout(loadDeliveries, 1000);
  }
});
$('webhook-delete').addEventListener('click', async () => {
  const r = await webhookCall('Removing the webhook', (api) => api.deleteWebhook());
  if (r !== undefined) showWebhook(null);
});
$('deliveries-refresh').addEventListener('click', loadDeliveries);

setState('idle');
const initial = params.get('token');
if (params.get('rooms')) $('rooms').value = params.get('rooms');
if (initial) {
  $('token').value = initial;
  connect(initial);
}
