/**
 * Every Prometheus metric name, in one place. `endpoint` labels are endpoint kinds
 * (monitor, execution, pipeline, project, system), never ids.
 */
export const MetricName = {
  Connections: 'websocket_connections',
  ConnectionsOpened: 'websocket_connections_opened_total',
  ConnectionsClosed: 'websocket_connections_closed_total',
  AuthFailures: 'websocket_auth_failures_total',
  FramesSent: 'websocket_frames_sent_total',
  BytesSent: 'websocket_bytes_sent_total',
  /** Events written (a `batch` frame carries several). */
  EventsSent: 'websocket_events_sent_total',
  FramesReceived: 'websocket_frames_received_total',
  MessagesDropped: 'websocket_messages_dropped_total',
  MessageLatency: 'websocket_message_latency_seconds',
  SubscribedChannels: 'websocket_subscribed_channels',
  ConnectionsLimit: 'websocket_connections_limit',
  LimitHits: 'websocket_limit_hits_total',
  Recoveries: 'websocket_recoveries_total',
  AuthzDecisions: 'websocket_authz_decisions_total',
  EventsPublished: 'realtime_events_published_total',
  BrokerConsumed: 'realtime_broker_messages_consumed_total',
  BrokerDeadLettered: 'realtime_broker_messages_dead_lettered_total',
  BrokerDuplicates: 'realtime_broker_duplicates_total',
  /** Digests of the event stream (the replay stream) by outcome: written, write_failed, read, invalid. */
  StreamDigests: 'realtime_stream_digests_total',
  BrokerConnected: 'realtime_broker_connected',
  /** 1 for the node (`host:port` of RABBITMQ_URL) a connection uses, 0 for the others; label `connection`. */
  BrokerNode: 'realtime_broker_node',
  PublishRequests: 'realtime_publish_requests_total',
  /** `control_command` frames by command and outcome. */
  ControlCommands: 'realtime_control_commands_total',
  /** History kept for resume: bytes held (frames plus per-event overhead), the budget, events dropped by reason. */
  HistoryBytes: 'realtime_history_bytes',
  HistoryMaxBytes: 'realtime_history_max_bytes',
  HistoryEvents: 'realtime_history_events',
  HistoryEvictions: 'realtime_history_evictions_total',
  /** Sockets whose `connection` frame waits for the instance to finish replaying the stream. */
  ConnectionsWaiting: 'websocket_connections_waiting',
  /** Kept for today's dashboards: a gauge of open connections by endpoint kind, `status="active"`. */
  LegacyConnections: 'ansflow_websocket_connections_total',
} as const;

/** WORKERS > 1 only: series of the primary process, appended to the workers' aggregated `/metrics`. */
export const ClusterMetricName = {
  /** Workers running. */
  Workers: 'realtime_workers',
  /** Workers replaced after they died. */
  WorkerRestarts: 'realtime_worker_restarts_total',
} as const;

export const ENDPOINT_KINDS = ['monitor', 'execution', 'pipeline', 'project', 'system'] as const;
export type EndpointKind = (typeof ENDPOINT_KINDS)[number];
