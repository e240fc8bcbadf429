// React bindings: one client per <WebSocketProvider>, hooks for connection state, live lists
// and notifications. Plain `createElement` (no JSX), so it works without a build step.

import { createContext, createElement, useCallback, useContext, useEffect, useMemo, useReducer, useRef, useState } from 'react';
import { createClient } from './index.js';
import { notificationsReducer, realtimeReducer } from './state.js';

export { realtimeReducer, notificationsReducer, entityId } from './state.js';

const RowcastContext = createContext(null);

/**
 * Owns a client for its children. Props: the `createClient` options (`url`, `token` or
 * `getToken`, `transport`, `rooms`, `io`, ...) or a ready `client`; `markAsRead`: a URL
 * template such as `"/api/notifications/{id}/read"` (POSTed with the token as Bearer) or a
 * function `(id) => Promise`. A `token` prop that changes is sent as a token refresh.
 */
export function WebSocketProvider(props) {
  const { children, client: given, markAsRead, markAsReadMethod = 'POST', fetchOptions, url, transport, token } = props;
  const own = useRef(null);
  if (!given && (!own.current || own.current.options.url !== url || own.current.options.transport !== (transport || 'ws'))) {
    if (own.current) own.current.close();
    const { children: _c, client: _g, markAsRead: _m, markAsReadMethod: _mm, fetchOptions: _f, ...options } = props;
    own.current = createClient({ ...options, autoConnect: false });
  }
  const client = given || own.current;
  const [state, setState] = useState(client.state);
  const [notifications, dispatchNotification] = useReducer(notificationsReducer, []);
  const store = useRef(new Map());
  const [version, setVersion] = useState(0);

  useEffect(() => {
    const offs = [
      client.on('state', (s) => setState(s)),
      client.on('notification', (p) => dispatchNotification(p)),
      client.on('notification.update', (p) => dispatchNotification(p)),
      client.on('*', ({ event, payload }) => {
        if (!event.endsWith('.update') || event === 'notification.update') return;
        const before = store.current.get(event) || [];
        const after = realtimeReducer(before, payload);
        if (after !== before) {
          store.current.set(event, after);
          setVersion((v) => v + 1);
        }
      }),
    ];
    setState(client.state);
    if (client.state === 'idle' || (!given && client.state === 'closed')) client.connect();
    return () => {
      offs.forEach((off) => off());
      if (!given) client.close();
    };
  }, [client, given]);

  useEffect(() => {
    if (token && client.isConnected && token !== client._token) client.setToken(token).catch(() => {});
  }, [client, token]);

  const getRealtimeData = useCallback((eventName) => store.current.get(eventName) || [], [version]);

  const markRead = useCallback(
    async (id) => {
      if (!markAsRead) throw new Error('markAsRead is not configured: give <WebSocketProvider markAsRead="/api/notifications/{id}/read"> or a function');
      dispatchNotification({ type: 'read', id });
      try {
        if (typeof markAsRead === 'function') {
          await markAsRead(id);
        } else {
          const target = markAsRead.replace('{id}', encodeURIComponent(String(id)));
          const headers = { ...(fetchOptions?.headers || {}) };
          if (client._token) headers.Authorization = `Bearer ${client._token}`;
          const res = await fetch(target, { credentials: 'same-origin', ...fetchOptions, method: markAsReadMethod, headers });
          if (!res.ok) throw new Error(`marking notification ${id} as read failed: HTTP ${res.status}`);
        }
      } catch (err) {
        dispatchNotification({ type: 'unread', id });
        throw err;
      }
    },
    [client, markAsRead, markAsReadMethod, fetchOptions],
  );

  const value = useMemo(
    () => ({
      client,
      state,
      isConnected: state === 'connected' || state === 'resync_required',
      notifications,
      getRealtimeData,
      markAsRead: markRead,
      join: (room) => client.join(room),
      leave: (room) => client.leave(room),
    }),
    [client, state, notifications, getRealtimeData, markRead],
  );
  return createElement(RowcastContext.Provider, { value }, children);
}

/** `{ isConnected, state, notifications, getRealtimeData, client, join, leave }`. */
export function useWebSocket() {
  const ctx = useContext(RowcastContext);
  if (!ctx) throw new Error('useWebSocket must be used inside <WebSocketProvider>');
  return ctx;
}

/**
 * A live list for `eventName` (e.g. `'ticket.update'`), starting from `initial` (reset when
 * `initial` changes): rows are upserted by `data.id` and removed on `op: 'delete'`.
 */
export function useRealtimeData(eventName, initial = EMPTY, options = EMPTY_OPTIONS) {
  const { client } = useWebSocket();
  const prepend = !!options.prepend;
  const [items, dispatch] = useReducer((s, a) => realtimeReducer(s, a, { prepend }), initial);
  const first = useRef(true);
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    dispatch({ type: 'reset', items: initial });
  }, [initial]);
  useEffect(() => client.on(eventName, (payload) => dispatch(payload)), [client, eventName]);
  return items;
}

/** `{ notifications, unreadCount, markAsRead(id) }` for the signed-in user. */
export function useRealtimeNotifications() {
  const { notifications, markAsRead } = useWebSocket();
  const unreadCount = useMemo(() => notifications.filter((n) => !n.read_at).length, [notifications]);
  return { notifications, unreadCount, markAsRead };
}

const EMPTY = [];
const EMPTY_OPTIONS = {};
