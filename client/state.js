// Pure state transitions for live lists: what the React hooks use, testable without a DOM.

/**
 * The key of an entity event: `data.id`, else `old.id`, else the payload's `id`; as a string
 * so that `7` and `"7"` are the same row.
 */
export function entityId(payload) {
  const id = payload?.data?.id ?? payload?.old?.id ?? payload?.id;
  return id === undefined || id === null ? null : String(id);
}

/**
 * Applies one entity event payload (`{ op, id, data, old }`) to a list of rows:
 * `insert`/`update` replace the row with the same id in place or add `data` (at the end,
 * or at the start with `{ prepend: true }`); `delete` removes it. `{ type: 'reset', items }`
 * replaces the list. Returns the same array when nothing changed, so React skips a render.
 */
export function realtimeReducer(items, action, options = {}) {
  if (!action || typeof action !== 'object') return items;
  if (action.type === 'reset') return Array.isArray(action.items) ? action.items : [];
  const id = entityId(action);
  if (id === null) return items;
  const at = items.findIndex((row) => row && row.id !== undefined && String(row.id) === id);
  if (action.op === 'delete') {
    return at === -1 ? items : items.filter((_, i) => i !== at);
  }
  const row = action.data;
  if (!row || typeof row !== 'object') return items;
  if (at === -1) return options.prepend ? [row, ...items] : [...items, row];
  const next = items.slice();
  next[at] = row;
  return next;
}

/**
 * Applies a notification payload (`{ event: "notification.created" | "notification.updated",
 * op, notification, data }`) to a list, newest first. Each item is the notification row
 * plus `related` (the related entity). `{ type: 'read', id, at }` marks one read locally;
 * `{ type: 'unread', id }` undoes that; `{ type: 'reset', items }` replaces the list.
 */
export function notificationsReducer(items, action) {
  if (!action || typeof action !== 'object') return items;
  if (action.type === 'reset') return Array.isArray(action.items) ? action.items : [];
  if (action.type === 'read' || action.type === 'unread') {
    const id = String(action.id);
    const read_at = action.type === 'read' ? action.at || new Date().toISOString() : null;
    let changed = false;
    const next = items.map((n) => {
      if (String(n.id) !== id) return n;
      changed = true;
      return { ...n, read_at };
    });
    return changed ? next : items;
  }
  const row = action.notification;
  const id = row?.id ?? action.id;
  if (id === undefined || id === null) return items;
  const key = String(id);
  const at = items.findIndex((n) => String(n.id) === key);
  if (action.op === 'delete') return at === -1 ? items : items.filter((_, i) => i !== at);
  if (!row || typeof row !== 'object') return items;
  const item = { ...row, related: action.data ?? null };
  if (at === -1) return [item, ...items];
  const next = items.slice();
  next[at] = { ...items[at], ...item };
  return next;
}
