// Webhook helpers: the caller's webhook endpoint over rowcast's HTTP API, and validation of
// the payloads rowcast POSTs to it. Verify the signature first (Standard Webhooks, e.g. the
// `standardwebhooks` package), then call `processWebhookPayload` on the parsed body.

/** Entities of the default (helpdesk) mapping. */
export const WEBHOOK_ENTITIES = Object.freeze(['ticket', 'comment', 'user', 'kb', 'attachment']);

/** Every event name rowcast sends to webhooks under the default mapping. */
export const WEBHOOK_EVENTS = Object.freeze({
  NOTIFICATION_CREATED: 'notification.created',
  NOTIFICATION_UPDATED: 'notification.updated',
  ...Object.fromEntries(
    WEBHOOK_ENTITIES.flatMap((e) =>
      ['created', 'updated', 'deleted'].map((verb) => [`${e.toUpperCase()}_${verb.toUpperCase()}`, `${e}.${verb}`]),
    ),
  ),
});

const OPS = { created: 'insert', updated: 'update', deleted: 'delete' };

/** An HTTP answer that was not a success; `status`, `code` and `message` come from the server. */
export class RowcastApiError extends Error {
  constructor(status, code, message, body) {
    super(`${message} (HTTP ${status}${code ? `, ${code}` : ''})`);
    this.name = 'RowcastApiError';
    this.status = status;
    this.code = code;
    this.serverMessage = message;
    this.body = body;
  }
}

/** A webhook body that does not have the documented shape; `path` names the bad field. */
export class WebhookPayloadError extends Error {
  constructor(path, message) {
    super(path ? `invalid webhook payload: ${path}: ${message}` : `invalid webhook payload: ${message}`);
    this.name = 'WebhookPayloadError';
    this.path = path;
  }
}

/**
 * Bound API helpers for one rowcast (`baseUrl`, default: same origin) and one user
 * (`token` or async `getToken`). `fetch` may be given for tests or old runtimes.
 */
export function createWebhookApi({ baseUrl = '', token, getToken, fetch: fetchImpl } = {}) {
  const call = async (method, path, body) => {
    const f = fetchImpl || globalThis.fetch;
    if (!f) throw new Error('no fetch available: pass `fetch` to createWebhookApi');
    const tok = getToken ? await getToken() : token;
    const headers = { Accept: 'application/json' };
    if (tok) headers.Authorization = `Bearer ${tok}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let res;
    try {
      res = await f(baseUrl.replace(/\/$/, '') + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new RowcastApiError(0, 'network', `${method} ${path} could not reach rowcast: ${err && err.message}`);
    }
    const text = await res.text();
    let json = null;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch {
        json = null;
      }
    }
    if (!res.ok) {
      const message = (json && json.message) || (res.status === 404 ? `${method} ${path} is not available on this server` : text.slice(0, 200) || res.statusText || 'request failed');
      throw new RowcastApiError(res.status, json && json.error, message, json ?? text);
    }
    return json;
  };
  const id = (v) => encodeURIComponent(String(v));
  return {
    /** `PUT /api/webhook {url}`: sets the caller's endpoint; the answer carries its secret. */
    setWebhookUrl: (url) => {
      if (typeof url !== 'string' || !/^https?:\/\//i.test(url)) {
        return Promise.reject(new TypeError(`setWebhookUrl: expected an http(s) URL, got ${JSON.stringify(url)}`));
      }
      return call('PUT', '/api/webhook', { url });
    },
    /** `GET /api/webhook`: the caller's endpoint, or null when none is set. */
    getWebhookUrl: async () => {
      try {
        return await call('GET', '/api/webhook');
      } catch (err) {
        if (err instanceof RowcastApiError && err.status === 404 && err.code) return null;
        throw err;
      }
    },
    /** `DELETE /api/webhook`. */
    deleteWebhook: () => call('DELETE', '/api/webhook'),
    /** `POST /api/webhook/test`: rowcast sends a test notification to the endpoint. */
    testWebhook: () => call('POST', '/api/webhook/test'),
    /** `GET /api/webhook/deliveries`: recent deliveries to the caller's endpoint. */
    getWebhookDeliveries: () => call('GET', '/api/webhook/deliveries'),
    /** `GET /api/webhook/deliveries/{id}`: one delivery with its attempts. */
    getWebhookDelivery: (deliveryId) => call('GET', `/api/webhook/deliveries/${id(deliveryId)}`),
    /** `POST /api/webhook/deliveries/{id}/retry`: sends a failed delivery again. */
    retryWebhookDelivery: (deliveryId) => call('POST', `/api/webhook/deliveries/${id(deliveryId)}/retry`),
  };
}

let defaults = createWebhookApi();

/** Sets where the module-level helpers send their requests and which token they use. */
export function configureWebhooks(options) {
  defaults = createWebhookApi(options);
}

export const setWebhookUrl = (url) => defaults.setWebhookUrl(url);
export const getWebhookUrl = () => defaults.getWebhookUrl();
export const deleteWebhook = () => defaults.deleteWebhook();
export const testWebhook = () => defaults.testWebhook();
export const getWebhookDeliveries = () => defaults.getWebhookDeliveries();
export const getWebhookDelivery = (id) => defaults.getWebhookDelivery(id);
export const retryWebhookDelivery = (id) => defaults.retryWebhookDelivery(id);

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Checks a webhook body (object or JSON string) against the documented payloads and returns
 * it typed: `{ kind: 'entity', event, entity, action, op, id, seq, data, old, committed_at }`
 * or `{ kind: 'notification', event, action, notification, data, ... }`. Throws
 * `WebhookPayloadError` naming the first bad field. Entities outside the default mapping are
 * accepted when well formed (`isKnownEvent` says whether the event is in WEBHOOK_EVENTS).
 */
export function processWebhookPayload(payload) {
  let p = payload;
  if (typeof p === 'string' || (typeof Uint8Array !== 'undefined' && p instanceof Uint8Array)) {
    const text = typeof p === 'string' ? p : new TextDecoder().decode(p);
    try {
      p = JSON.parse(text);
    } catch (err) {
      throw new WebhookPayloadError('', `body is not JSON (${err.message})`);
    }
  }
  if (!isObject(p)) throw new WebhookPayloadError('', `expected a JSON object, got ${p === null ? 'null' : Array.isArray(p) ? 'an array' : typeof p}`);
  if (typeof p.event !== 'string') throw new WebhookPayloadError('event', 'missing or not a string');
  const m = /^([a-z][a-z0-9_]*)\.(created|updated|deleted)$/.exec(p.event);
  if (!m) throw new WebhookPayloadError('event', `${JSON.stringify(p.event)} is not "<entity>.created|updated|deleted"`);
  const [, entity, action] = m;
  const op = OPS[action];
  if (p.op !== undefined && p.op !== op) throw new WebhookPayloadError('op', `${JSON.stringify(p.op)} does not match event ${p.event} (expected "${op}")`);
  if (p.seq !== undefined && p.seq !== null && typeof p.seq !== 'string') throw new WebhookPayloadError('seq', 'must be a string or null (test sends carry no seq)');
  if (p.committed_at !== undefined && (typeof p.committed_at !== 'string' || Number.isNaN(Date.parse(p.committed_at)))) {
    throw new WebhookPayloadError('committed_at', 'must be an RFC 3339 timestamp');
  }
  const base = { event: p.event, action, op, seq: p.seq ?? null, committed_at: p.committed_at ?? null, isKnownEvent: Object.values(WEBHOOK_EVENTS).includes(p.event) };
  if (entity === 'notification') {
    if (!isObject(p.notification)) throw new WebhookPayloadError('notification', 'missing or not an object');
    const n = p.notification;
    if (n.id === undefined || n.id === null) throw new WebhookPayloadError('notification.id', 'missing');
    for (const f of ['type', 'message']) {
      if (n[f] !== undefined && typeof n[f] !== 'string') throw new WebhookPayloadError(`notification.${f}`, 'must be a string');
    }
    if (p.data !== undefined && p.data !== null && !isObject(p.data)) throw new WebhookPayloadError('data', 'must be an object or null');
    return { kind: 'notification', ...base, entity, id: p.id ?? n.id, notification: n, data: p.data ?? null };
  }
  if (typeof p.entity === 'string' && p.entity !== entity) throw new WebhookPayloadError('entity', `${JSON.stringify(p.entity)} does not match event ${p.event}`);
  if (p.id === undefined || p.id === null) throw new WebhookPayloadError('id', 'missing');
  if (!isObject(p.data)) throw new WebhookPayloadError('data', 'missing or not an object (the row)');
  if (p.old !== undefined && p.old !== null && !isObject(p.old)) throw new WebhookPayloadError('old', 'must be an object');
  if (p.table !== undefined && typeof p.table !== 'string') throw new WebhookPayloadError('table', 'must be a string');
  return { kind: 'entity', ...base, entity, table: p.table ?? null, id: p.id, data: p.data, old: p.old ?? null };
}
