import type { EndpointKind } from '../metrics/metric-names';
import type { ClientConnection } from './client-connection';

/** A client frame after parsing: a JSON object with a string `type`. */
export type ClientFrame = Record<string, unknown> & { type: string };

/**
 * What a feature module tells the session service about its endpoint. The session service runs the common
 * protocol (auth, ping, subscribe, limits); an endpoint adds its greeting, its channels and its own frames.
 */
export interface EndpointDefinition {
  readonly kind: EndpointKind;
  /** The channels a socket of this endpoint reads, besides the user's own channel. */
  channels(conn: ClientConnection): string[];
  /** Frames sent first, before any channel frame: `connection` and what the endpoint adds. */
  greet(conn: ClientConnection): void;
  /**
   * Called right after the socket joined its channels; `recovered` is undefined without `since`. The execution
   * endpoint sends its snapshot here unless a complete recovery made it unnecessary.
   */
  afterSubscribe?(conn: ClientConnection, recovered: boolean | undefined): void;
  /** Frames specific to this endpoint; returns false for a type it does not know. */
  handleFrame?(conn: ClientConnection, frame: ClientFrame): boolean | Promise<boolean>;
  /** Extra fields of the `subscribed` reply (e.g. `execution_id` on execution sockets). */
  subscribedExtras?(conn: ClientConnection): Record<string, unknown>;
  /** Frames to send after the `subscribed` reply (the pipeline endpoint's `subscription_confirmed`). */
  afterSubscribed?(conn: ClientConnection, events: string[]): void;
}

/** ISO 8601 UTC with `Z`. */
export function now(): string {
  return new Date().toISOString();
}

/** The first frame of every endpoint (`connection`), with the fields today's frontend reads. */
export function connectionFrame(conn: ClientConnection, message: string, position: number, extras: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: 'connection',
    message,
    timestamp: now(),
    authenticated: conn.principal !== undefined,
    user_id: conn.principal?.userId ?? null,
    endpoint: conn.kind,
    position,
    ...extras,
  };
}
