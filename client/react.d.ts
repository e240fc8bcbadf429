import type { ReactNode, ReactElement } from 'react';
import type { ClientOptions, ConnectionState, RowcastClient, JoinResult } from './index';
import type { NotificationItem } from './state';

export { realtimeReducer, notificationsReducer, entityId } from './state';

export interface WebSocketProviderProps extends Partial<ClientOptions> {
  children?: ReactNode;
  /** A client you created yourself (else one is created from the options). */
  client?: RowcastClient;
  /** `"/api/notifications/{id}/read"` (fetched with the token as Bearer) or a function. */
  markAsRead?: string | ((id: string | number) => Promise<unknown>);
  markAsReadMethod?: string;
  fetchOptions?: RequestInit;
}

export declare function WebSocketProvider(props: WebSocketProviderProps): ReactElement;

export interface WebSocketContext {
  client: RowcastClient;
  state: ConnectionState;
  isConnected: boolean;
  notifications: NotificationItem[];
  /** The live list of rows seen for an entity event name (e.g. 'ticket.update'). */
  getRealtimeData<Row = Record<string, unknown>>(eventName: string): Row[];
  markAsRead(id: string | number): Promise<void>;
  join(room: string | string[]): Promise<JoinResult>;
  leave(room: string | string[]): Promise<JoinResult>;
}

export declare function useWebSocket(): WebSocketContext;
export declare function useRealtimeData<Row extends { id?: unknown } = Record<string, unknown>>(eventName: string, initial?: Row[], options?: { prepend?: boolean }): Row[];
export declare function useRealtimeNotifications(): {
  notifications: NotificationItem[];
  unreadCount: number;
  markAsRead(id: string | number): Promise<void>;
};
