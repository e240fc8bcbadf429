import type { EntityPayload, NotificationPayload, NotificationRow } from './index';

export type RealtimeAction<Row> = EntityPayload<Row> | { type: 'reset'; items: Row[] };
export declare function entityId(payload: unknown): string | null;
export declare function realtimeReducer<Row extends { id?: unknown }>(items: Row[], action: RealtimeAction<Row>, options?: { prepend?: boolean }): Row[];

export type NotificationItem<Related = Record<string, unknown>> = NotificationRow & { related: Related | null };
export type NotificationAction =
  | NotificationPayload
  | { type: 'read'; id: string | number; at?: string }
  | { type: 'unread'; id: string | number }
  | { type: 'reset'; items: NotificationItem[] };
export declare function notificationsReducer(items: NotificationItem[], action: NotificationAction): NotificationItem[];
