/**
 * Every WebSocket close code this service sends, in one place. The README's table and the AsyncAPI
 * document list the same codes; `test/contract.e2e-spec.ts` checks they agree.
 */
export const CloseCode = {
  /** Normal closure: the client or the server ended the session on purpose. */
  Normal: 1000,
  /** Going away: the instance is shutting down; reconnect (to another instance). */
  GoingAway: 1001,
  /** Invalid payload: a text frame that is not valid UTF-8 (sent by the `ws` library itself). */
  InvalidPayload: 1007,
  /** Policy violation: e.g. too many frames per second, or a binary frame. */
  PolicyViolation: 1008,
  /** A frame larger than the inbound limit. */
  MessageTooBig: 1009,
  /** Unexpected server error. */
  InternalError: 1011,
  /** Authentication failed: `token_required`, `token_invalid`, `token_expired` or `token_user_mismatch`. */
  Unauthorized: 4001,
  /** Authenticated, but not allowed to read this channel (or cross-origin upgrade refused). */
  Forbidden: 4003,
  /** No such endpoint or channel (unknown path, id that is not a positive integer). */
  NotFound: 4004,
  /** The client reads too slowly: its send buffer passed the bound. */
  TooSlow: 4008,
  /** Too many connections (instance, user or IP limit). */
  TooManyConnections: 4029,
} as const;

export type CloseCodeValue = (typeof CloseCode)[keyof typeof CloseCode];

/** Reasons sent with close codes (and used as metric labels): short, stable, machine-readable. */
export const CloseReason = {
  TokenRequired: 'token_required',
  TokenInvalid: 'token_invalid',
  TokenExpired: 'token_expired',
  TokenUserMismatch: 'token_user_mismatch',
  Forbidden: 'forbidden',
  OriginNotAllowed: 'origin_not_allowed',
  UnknownPath: 'unknown_path',
  InvalidId: 'invalid_id',
  TooSlow: 'send_buffer_full',
  TooManyConnections: 'too_many_connections',
  TooManyUserConnections: 'too_many_user_connections',
  TooManyIpConnections: 'too_many_ip_connections',
  RateLimited: 'rate_limited',
  BinaryFrame: 'binary_frame_not_supported',
  FrameTooLarge: 'frame_too_large',
  ShuttingDown: 'server_shutting_down',
  HeartbeatTimeout: 'heartbeat_timeout',
  InternalError: 'internal_error',
} as const;

export type CloseReasonValue = (typeof CloseReason)[keyof typeof CloseReason];
