/**
 * Frame types this service itself emits (server → client). Events from Django pass through with their own
 * `type` (see `KnownEventType`); the AsyncAPI document (`docs/asyncapi.yaml`) documents both lists and
 * `test/contract.e2e-spec.ts` checks that they agree with this file.
 */
export const ServerFrameType = {
  Connection: 'connection',
  SystemStatus: 'system_status',
  ExecutionStatus: 'execution_status',
  Pong: 'pong',
  Subscribed: 'subscribed',
  SubscriptionConfirmed: 'subscription_confirmed',
  Unsubscribed: 'unsubscribed',
  Authenticated: 'authenticated',
  Recovery: 'recovery',
  Batch: 'batch',
  /** The answer to one `control_command` (stop/restart), refused here or relayed from Django. */
  ControlCommandResult: 'control_command_result',
  Error: 'error',
} as const;

export type ServerFrameTypeValue = (typeof ServerFrameType)[keyof typeof ServerFrameType];

/** Event types Django publishes today (the frontend reads these); any other string `type` is relayed too. */
export const KnownEventType = {
  ExecutionStatus: 'execution_status',
  ExecutionUpdate: 'execution_update',
  StepProgress: 'step_progress',
  LogEntry: 'log_entry',
  PipelineUpdate: 'pipeline_update',
  ProjectUpdate: 'project_update',
  SystemNotification: 'system_notification',
} as const;

/** Frame types a client may send. */
export const ClientFrameType = {
  Ping: 'ping',
  Pong: 'pong',
  Auth: 'auth',
  Subscribe: 'subscribe',
  Unsubscribe: 'unsubscribe',
  GetStatus: 'get_status',
  SubscribeExecution: 'subscribe_execution',
  UnsubscribeExecution: 'unsubscribe_execution',
  ControlCommand: 'control_command',
} as const;

/** `code` of an `{"type":"error"}` frame. */
export const ErrorCode = {
  InvalidJson: 'invalid_json',
  InvalidFrame: 'invalid_frame',
  UnknownType: 'unknown_type',
  TooManySubscriptions: 'too_many_subscriptions',
  Forbidden: 'forbidden',
  /** `control_command` on an anonymous socket: Django acts as the socket's user, so there must be one. */
  AuthenticationRequired: 'authentication_required',
  /** More `control_command` frames per second than a socket may send. */
  RateLimited: 'rate_limited',
  /** `control_command` while DJANGO_API_URL is not set. */
  NotConfigured: 'not_configured',
  /** Django did not answer a `control_command` (unreachable, or slower than CONTROL_TIMEOUT_MS). */
  DjangoUnavailable: 'django_unavailable',
} as const;
