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
  NotSupported: 'not_supported',
} as const;
