import type { NotificationRow, Op } from './index';

export declare const WEBHOOK_ENTITIES: readonly ['ticket', 'comment', 'user', 'kb', 'attachment'];
export declare const WEBHOOK_EVENTS: Readonly<{
  NOTIFICATION_CREATED: 'notification.created';
  NOTIFICATION_UPDATED: 'notification.updated';
  TICKET_CREATED: 'ticket.created'; TICKET_UPDATED: 'ticket.updated'; TICKET_DELETED: 'ticket.deleted';
  COMMENT_CREATED: 'comment.created'; COMMENT_UPDATED: 'comment.updated'; COMMENT_DELETED: 'comment.deleted';
  USER_CREATED: 'user.created'; USER_UPDATED: 'user.updated'; USER_DELETED: 'user.deleted';
  KB_CREATED: 'kb.created'; KB_UPDATED: 'kb.updated'; KB_DELETED: 'kb.deleted';
  ATTACHMENT_CREATED: 'attachment.created'; ATTACHMENT_UPDATED: 'attachment.updated'; ATTACHMENT_DELETED: 'attachment.deleted';
}>;

export declare class RowcastApiError extends Error {
  status: number;
  code: string | null | undefined;
  serverMessage: string;
  body: unknown;
}
export declare class WebhookPayloadError extends Error {
  path: string;
}

export interface WebhookApiOptions {
  /** rowcast's base URL ('' = same origin). */
  baseUrl?: string;
  token?: string;
  getToken?: () => string | Promise<string>;
  fetch?: typeof fetch;
}

/** Server answers are returned as parsed JSON (see docs/client.md for their fields). */
export interface WebhookApi {
  setWebhookUrl(url: string): Promise<any>;
  getWebhookUrl(): Promise<any | null>;
  deleteWebhook(): Promise<any>;
  testWebhook(): Promise<any>;
  getWebhookDeliveries(): Promise<any>;
  getWebhookDelivery(id: string | number): Promise<any>;
  retryWebhookDelivery(id: string | number): Promise<any>;
}

export declare function createWebhookApi(options?: WebhookApiOptions): WebhookApi;
export declare function configureWebhooks(options: WebhookApiOptions): void;
export declare const setWebhookUrl: WebhookApi['setWebhookUrl'];
export declare const getWebhookUrl: WebhookApi['getWebhookUrl'];
export declare const deleteWebhook: WebhookApi['deleteWebhook'];
export declare const testWebhook: WebhookApi['testWebhook'];
export declare const getWebhookDeliveries: WebhookApi['getWebhookDeliveries'];
export declare const getWebhookDelivery: WebhookApi['getWebhookDelivery'];
export declare const retryWebhookDelivery: WebhookApi['retryWebhookDelivery'];

interface Common {
  event: string;
  action: 'created' | 'updated' | 'deleted';
  op: Op;
  seq: string | null;
  committed_at: string | null;
  /** True when the event is one of WEBHOOK_EVENTS. */
  isKnownEvent: boolean;
}
export interface EntityWebhookEvent<Row = Record<string, unknown>> extends Common {
  kind: 'entity';
  entity: string;
  table: string | null;
  id: string | number;
  data: Row;
  old: Partial<Row> | null;
}
export interface NotificationWebhookEvent<Related = Record<string, unknown>> extends Common {
  kind: 'notification';
  entity: 'notification';
  id: string | number;
  notification: NotificationRow;
  data: Related | null;
}
export type WebhookEvent = EntityWebhookEvent | NotificationWebhookEvent;

export declare function processWebhookPayload(payload: unknown): WebhookEvent;
