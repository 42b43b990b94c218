/**
 * The frames ansflow-realtime sends, as types (docs/protocol.md, docs/asyncapi.yaml). Type-only module: nothing
 * here exists at run time, so the client stays free of a schema library; frames are trusted to match the
 * contract the service tests.
 */

/**
 * A value from a known list that still admits values a newer server may send: the `string & Record<never, never>` keeps editor
 * completion for the known literals while accepting any string.
 */
export type Open<T extends string> = T | (string & Record<never, never>);

export type Endpoint = 'execution' | 'pipeline' | 'project' | 'monitor' | 'system';

/** Execution status; the frontend also knows `starting` and `completed`. */
export type ExecutionStatus = Open<'pending' | 'starting' | 'running' | 'success' | 'completed' | 'failed' | 'cancelled' | 'timeout'>;

export type StepStatus = Open<'pending' | 'running' | 'success' | 'failed' | 'skipped' | 'cancelled'>;

/** Execution log level: Django sends info, success, error; the frontend type also allows warning and debug. */
export type LogLevel = Open<'info' | 'success' | 'error' | 'warning' | 'debug'>;

export type NotificationLevel = Open<'info' | 'warning' | 'error' | 'success'>;

/** One step of an execution as Django describes it in `steps` arrays. */
export interface ExecutionStep {
  id?: number;
  step_id?: number;
  name: string;
  status: StepStatus;
  order?: number;
  execution_time?: number | null;
  [field: string]: unknown;
}

/** A parallel group in `steps`: its own steps run side by side. */
export interface ParallelGroup {
  group_id: string;
  name: string;
  type: 'parallel_group';
  status: StepStatus;
  steps: ExecutionStep[];
  order: number;
  execution_time?: number | null;
}

export type StepEntry = ExecutionStep | ParallelGroup;

/** Fields the service adds to every relayed event frame. */
export interface EventMeta {
  /** The channel the event was published on, e.g. `execution.42`. */
  channel: string;
  /** Global, increasing position of the event: what `since` resumes from. */
  position: number;
  /** ISO 8601 UTC; set by the service when the publisher left it out. */
  timestamp: string;
}

// ---- frames the service itself emits ----------------------------------------------------------------------

export interface ConnectionFrame {
  type: 'connection';
  message: string;
  timestamp: string;
  authenticated: boolean;
  user_id: number | string | null;
  endpoint: Endpoint;
  /** The latest position the instance knows: where a later `since` starts when no event arrived yet. */
  position: number | null;
  service?: string;
  /** Execution endpoint only: the id as a string (compatibility with today's frontend). */
  execution_id?: string;
  pipeline_id?: number | string;
  project_id?: number | string;
}

export interface RecoveryFrame {
  type: 'recovery';
  /** False when the events after `since` are no longer all retained: reload the snapshot. */
  recovered: boolean;
  since: number;
  /** How many events are replayed right after this frame. */
  missed?: number;
  position?: number | null;
}

export interface SystemStatusFrame {
  type: 'system_status';
  data: { status: string; timestamp: string; active_connections: number; service: string };
}

export interface ExecutionSnapshot {
  execution_id: number;
  status: ExecutionStatus;
  /** Null until an event named the pipeline. */
  pipeline_name: string | null;
  steps: StepEntry[];
  total_steps: number;
  /** Steps in a final state. */
  completed_steps: number;
  successful_steps: number;
  failed_steps: number;
  /** The running step, or null. */
  current_step: StepEntry | string | null;
  /** Seconds, once Django sent it. */
  execution_time: number | null;
  /** Django's latest message about the execution, when it sent one. */
  message?: string;
  timestamp: string;
  /** Every other field Django published for the execution (latest value). */
  [field: string]: unknown;
}

/**
 * The execution's current state: on connect, after recovery, in reply to `get_status`. The snapshot is under
 * `data` and also at the top level (where AnsFlow's own page reads it).
 */
export type ExecutionStatusFrame = ExecutionSnapshot & {
  type: 'execution_status';
  data: ExecutionSnapshot;
  /** The latest position the instance knows. */
  position?: number;
};

/** The one reply to a `control_command` (stop / restart). */
export interface ControlCommandResultFrame {
  type: 'control_command_result';
  command: Open<'stop' | 'restart'> | null;
  execution_id: number | null;
  /** Django carried the command out (2xx). */
  ok: boolean;
  /** Django's HTTP status, or null when the command did not reach Django (see `code`). */
  status: number | null;
  /** Django's message, when ok. */
  message?: string;
  /** Django's error (or `detail`), or why the service refused the command. */
  error?: string;
  /** Why the command did not reach Django (or Django did not answer), when `status` is null. */
  code?: Open<'invalid_frame' | 'authentication_required' | 'rate_limited' | 'not_configured' | 'django_unavailable'>;
  /** restart: the execution Django created. */
  new_execution_id?: number;
  timestamp: string;
}

export interface PongFrame {
  type: 'pong';
  timestamp: string;
}

export interface SubscribedFrame {
  type: 'subscribed';
  events?: string[];
  execution_id?: string | number;
}

export interface SubscriptionConfirmedFrame {
  type: 'subscription_confirmed';
  pipeline_id: number | string;
  events?: string[];
}

export interface UnsubscribedFrame {
  type: 'unsubscribed';
  execution_id: number;
}

export interface AuthenticatedFrame {
  type: 'authenticated';
  user_id: number | string;
  expires_at: string | number;
}

export interface ErrorFrame {
  type: 'error';
  code: Open<'invalid_json' | 'invalid_frame' | 'unknown_type' | 'too_many_subscriptions' | 'forbidden'>;
  message: string;
  timestamp: string;
}

// ---- events Django publishes, relayed flat with EventMeta ---------------------------------------------------

export interface ExecutionUpdateEvent extends EventMeta {
  type: 'execution_update';
  execution_id: number;
  status: ExecutionStatus;
  pipeline_name: string;
  steps: StepEntry[];
  total_steps: number;
  completed_steps: number;
  /** Seconds since the execution started. */
  execution_time: number;
}

export interface StepProgressEvent extends EventMeta {
  type: 'step_progress';
  execution_id: number;
  /** Null for a parallel group. */
  step_id: number | null;
  step_name: string;
  status: StepStatus;
  /** Seconds. */
  execution_time: number | null;
  output: string;
  error_message: string;
}

export interface LogEntryEvent extends EventMeta {
  type: 'log_entry';
  execution_id: number;
  level: LogLevel;
  message: string;
  step_name?: string | null;
  source: Open<'pipeline' | 'step' | 'step_output'>;
}

export interface PipelineUpdateEvent extends EventMeta {
  type: 'pipeline_update';
  pipeline_id: number;
  status: string;
  progress: number;
  logs: unknown;
}

export interface ProjectUpdateEvent extends EventMeta {
  type: 'project_update';
  project_id: number;
  event: string;
  data: Record<string, unknown>;
}

export interface SystemNotificationEvent extends EventMeta {
  type: 'system_notification';
  level: NotificationLevel;
  title: string;
  message: string;
  /** The same fields again: the frontend's notification bell reads them here. */
  data: { level: NotificationLevel; title: string; message: string };
}

/** An event of a type this client does not know: relayed by the service unchanged. */
export interface UnknownEvent extends EventMeta {
  type: string;
  [field: string]: unknown;
}

/** Every frame type the client can receive, by `type`. `batch` frames are unwrapped into their events. */
export interface ServerEvents {
  connection: ConnectionFrame;
  recovery: RecoveryFrame;
  system_status: SystemStatusFrame;
  execution_status: ExecutionStatusFrame;
  execution_update: ExecutionUpdateEvent;
  step_progress: StepProgressEvent;
  log_entry: LogEntryEvent;
  pipeline_update: PipelineUpdateEvent;
  project_update: ProjectUpdateEvent;
  system_notification: SystemNotificationEvent;
  pong: PongFrame;
  subscribed: SubscribedFrame;
  subscription_confirmed: SubscriptionConfirmedFrame;
  unsubscribed: UnsubscribedFrame;
  authenticated: AuthenticatedFrame;
  control_command_result: ControlCommandResultFrame;
  error: ErrorFrame;
}

export type ServerFrame = ServerEvents[keyof ServerEvents];

export interface BatchFrame {
  type: 'batch';
  events: EventMeta[];
}

// ---- frames the client sends ------------------------------------------------------------------------------

export type ClientFrame =
  | { type: 'ping' }
  | { type: 'pong' }
  | { type: 'auth'; token: string }
  | { type: 'subscribe'; events?: string[] }
  | { type: 'unsubscribe'; events?: string[] }
  | { type: 'get_status' }
  | { type: 'subscribe_execution'; executionId: number; since?: number }
  | { type: 'unsubscribe_execution'; executionId: number }
  /** On an execution socket `execution_id` may be left out (the path's); the monitor needs it. */
  | { type: 'control_command'; command: 'stop' | 'restart'; execution_id?: number };
