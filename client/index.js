// @rowcast/client: live PostgreSQL changes from rowcast over `/ws` or Socket.IO.

import { RowcastClient } from './client.js';

export { RowcastClient, CLIENT_EVENTS, CLOSE_GOING_AWAY, CLOSE_TOO_SLOW, CLOSE_TOKEN_EXPIRED } from './client.js';
export { backoffDelay, DEFAULT_RECONNECT } from './backoff.js';
export { compareSeq, maxSeq, parseSeq } from './seq.js';
export { wsUrl } from './transport-ws.js';
export { realtimeReducer, notificationsReducer, entityId } from './state.js';

/**
 * Creates a client and (unless `autoConnect: false`) starts connecting on the next tick,
 * so handlers registered right after this call see every state change and event.
 */
export function createClient(options) {
  return new RowcastClient(options);
}
