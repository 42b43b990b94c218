import { Injectable } from '@nestjs/common';
import { Counter, Gauge, Histogram, register } from 'prom-client';
import { CloseCode } from '../common/close-codes';
import type { HubStats } from '../hub/hub';
import { ENDPOINT_KINDS, MetricName, type EndpointKind } from './metric-names';

const AUTH_REASONS = ['token_required', 'token_invalid', 'token_expired', 'token_user_mismatch'] as const;
export const DROP_REASONS = ['socket_not_writable', 'send_buffer_full', 'duplicate'] as const;
export const DEAD_LETTER_REASONS = ['invalid_json', 'not_an_object', 'missing_type', 'unknown_channel', 'too_large'] as const;
const EVICTION_REASONS = ['count', 'age', 'channels', 'bytes'] as const;
export const LIMIT_NAMES = [
  'connections',
  'connections_per_user',
  'connections_per_ip',
  'frames_per_second',
  'frame_size',
  'monitor_subscriptions',
  'auth_deadline',
  'publish_body_size',
] as const;
/** `command` label of control commands: what was asked (anything else is `invalid`). */
export const CONTROL_COMMANDS = ['stop', 'restart', 'invalid'] as const;
/** `outcome` label: Django's answer by class, or why the command never reached Django. */
export const CONTROL_OUTCOMES = [
  'ok',
  'django_refused',
  'django_error',
  'invalid_frame',
  'authentication_required',
  'rate_limited',
  'not_configured',
  'django_unavailable',
] as const;
export type ControlOutcome = (typeof CONTROL_OUTCOMES)[number];
export type LimitName = (typeof LIMIT_NAMES)[number];
/**
 * The `code` label values of closed connections: the codes this service sends, 1005 (a client's close frame without
 * a status) and 1006 (the connection dropped without a close frame). A client may close with any code from 1000 to
 * 4999: those are counted as `other`, or each client could add series of its choosing.
 */
export const CLOSE_CODE_LABELS = [...Object.values(CloseCode).map(String), '1005', '1006', 'other'] as const;
const KNOWN_CLOSE_CODES = new Set<string>(CLOSE_CODE_LABELS);

/**
 * Every metric of the service. Labels are bounded: endpoint kinds, close codes, fixed reason lists; never ids.
 * Each series is created at start-up with value 0 so dashboards and alerts see it before the first event.
 */
@Injectable()
export class RealtimeMetrics implements HubStats {
  readonly connections = new Gauge({ name: MetricName.Connections, help: 'Open WebSocket connections by endpoint kind', labelNames: ['endpoint'] });
  readonly opened = new Counter({ name: MetricName.ConnectionsOpened, help: 'WebSocket connections accepted (after the upgrade)', labelNames: ['endpoint'] });
  readonly closed = new Counter({ name: MetricName.ConnectionsClosed, help: 'WebSocket connections closed, by close code', labelNames: ['endpoint', 'code'] });
  readonly authFailures = new Counter({ name: MetricName.AuthFailures, help: 'Refused tokens by reason', labelNames: ['endpoint', 'reason'] });
  readonly framesSent = new Counter({ name: MetricName.FramesSent, help: 'WebSocket frames written', labelNames: ['endpoint'] });
  readonly eventsSent = new Counter({ name: MetricName.EventsSent, help: 'Events written (a batch frame carries several)', labelNames: ['endpoint'] });
  readonly bytesSent = new Counter({ name: MetricName.BytesSent, help: 'Bytes of frame payload written', labelNames: ['endpoint'] });
  readonly framesReceived = new Counter({ name: MetricName.FramesReceived, help: 'Frames received from clients', labelNames: ['endpoint'] });
  readonly dropped = new Counter({ name: MetricName.MessagesDropped, help: 'Events not delivered, by reason', labelNames: ['endpoint', 'reason'] });
  readonly latency = new Histogram({
    name: MetricName.MessageLatency,
    help: 'Seconds from the event publication to its write to the sockets (one observation per event and endpoint kind)',
    labelNames: ['endpoint'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  });
  readonly subscribedChannels = new Gauge({ name: MetricName.SubscribedChannels, help: 'Channels with at least one subscriber on this instance' });
  readonly connectionsLimit = new Gauge({ name: MetricName.ConnectionsLimit, help: 'WS_MAX_CONNECTIONS: the connection limit of this instance' });
  readonly limitHits = new Counter({ name: MetricName.LimitHits, help: 'Requests or frames refused by a limit', labelNames: ['limit'] });
  readonly recoveries = new Counter({ name: MetricName.Recoveries, help: 'Resume attempts (since=) by outcome', labelNames: ['endpoint', 'recovered'] });
  readonly authz = new Counter({ name: MetricName.AuthzDecisions, help: 'Channel authorization decisions', labelNames: ['decision', 'source'] });
  readonly published = new Counter({ name: MetricName.EventsPublished, help: 'Events accepted into the hub, by source', labelNames: ['source'] });
  readonly consumed = new Counter({ name: MetricName.BrokerConsumed, help: 'Messages consumed from the broker' });
  readonly deadLettered = new Counter({ name: MetricName.BrokerDeadLettered, help: 'Broker messages dead-lettered, by reason', labelNames: ['reason'] });
  readonly digests = new Counter({
    name: MetricName.StreamDigests,
    help: 'Digests of the event stream, by outcome (written, write_failed, read, invalid)',
    labelNames: ['outcome'],
  });
  readonly duplicates = new Counter({ name: MetricName.BrokerDuplicates, help: 'Events dropped because their message_id was seen before' });
  // Across workers (WORKERS > 1) the minimum: 1 only when every worker is connected.
  readonly brokerConnected = new Gauge({
    name: MetricName.BrokerConnected,
    help: '1 when the broker connection is up (always 0 without a broker)',
    aggregator: 'min',
  });
  // Across workers the maximum: 1 for every node some worker uses.
  readonly brokerNode = new Gauge({
    name: MetricName.BrokerNode,
    help: 'Which RabbitMQ node (host:port of RABBITMQ_URL) each broker connection uses: 1 for the current one, 0 for the others',
    labelNames: ['node', 'connection'],
    aggregator: 'max',
  });
  readonly heldSockets = new Gauge({ name: MetricName.ConnectionsWaiting, help: 'Sockets waiting for the instance to finish replaying the event stream' });
  private history: { bytes: number; size: number; evicted: Record<string, number> } | undefined;
  readonly historyBytes: Gauge = new Gauge({
    name: MetricName.HistoryBytes,
    help: 'Bytes of resume history held (frames plus per-event overhead)',
    collect: (): void => this.historyBytes.set(this.history?.bytes ?? 0),
  });
  readonly historyMaxBytes = new Gauge({ name: MetricName.HistoryMaxBytes, help: 'HISTORY_MAX_BYTES: the byte budget of the resume history (0: none)' });
  readonly historyEvents: Gauge = new Gauge({
    name: MetricName.HistoryEvents,
    help: 'Events held in the resume history',
    collect: (): void => this.historyEvents.set(this.history?.size ?? 0),
  });
  private readonly evictionsReported: Record<string, number> = { count: 0, age: 0, channels: 0, bytes: 0 };
  readonly historyEvictions: Counter<string> = new Counter({
    name: MetricName.HistoryEvictions,
    help: 'Events dropped from the resume history, by reason (count, age, channels, bytes)',
    labelNames: ['reason'],
    // The history counts; the counter catches up with it at each scrape.
    collect: (): void => {
      for (const reason of EVICTION_REASONS) {
        const total = this.history?.evicted[reason] ?? 0;
        const delta = total - this.evictionsReported[reason];
        if (delta > 0) this.historyEvictions.inc({ reason }, delta);
        this.evictionsReported[reason] = total;
      }
    },
  });
  readonly publishRequests = new Counter({ name: MetricName.PublishRequests, help: 'POST /api/v1/publish requests by HTTP status', labelNames: ['status'] });
  readonly controlCommands = new Counter({
    name: MetricName.ControlCommands,
    help: 'control_command frames by command and outcome',
    labelNames: ['command', 'outcome'],
  });
  readonly legacyConnections = new Gauge({
    name: MetricName.LegacyConnections,
    help: 'Open WebSocket connections by endpoint kind (kept for compatibility with the dashboards of the previous service)',
    labelNames: ['endpoint', 'status'],
  });

  /**
   * The series the hub updates on every fan-out, bound to their label once: `inc({ endpoint })` would hash the
   * label object on each call.
   */
  private readonly perKind = Object.fromEntries(
    ENDPOINT_KINDS.map((endpoint) => [
      endpoint,
      {
        frames: this.framesSent.labels({ endpoint }),
        events: this.eventsSent.labels({ endpoint }),
        bytes: this.bytesSent.labels({ endpoint }),
        latency: this.latency.labels({ endpoint }),
      },
    ]),
  ) as Record<EndpointKind, { frames: Counter.Internal; events: Counter.Internal; bytes: Counter.Internal; latency: Histogram.Internal<'endpoint'> }>;

  constructor() {
    for (const endpoint of ENDPOINT_KINDS) {
      this.connections.set({ endpoint }, 0);
      this.legacyConnections.set({ endpoint, status: 'active' }, 0);
      this.opened.inc({ endpoint }, 0);
      this.framesSent.inc({ endpoint }, 0);
      this.eventsSent.inc({ endpoint }, 0);
      this.bytesSent.inc({ endpoint }, 0);
      this.framesReceived.inc({ endpoint }, 0);
      this.latency.zero({ endpoint });
      for (const code of CLOSE_CODE_LABELS) this.closed.inc({ endpoint, code }, 0);
      for (const reason of AUTH_REASONS) this.authFailures.inc({ endpoint, reason }, 0);
      for (const reason of DROP_REASONS) this.dropped.inc({ endpoint, reason }, 0);
      for (const recovered of ['true', 'false']) this.recoveries.inc({ endpoint, recovered }, 0);
    }
    for (const reason of DEAD_LETTER_REASONS) this.deadLettered.inc({ reason }, 0);
    for (const limit of LIMIT_NAMES) this.limitHits.inc({ limit }, 0);
    for (const decision of ['allow', 'deny']) for (const source of ['token', 'cache', 'django', 'django_unreachable']) this.authz.inc({ decision, source }, 0);
    for (const source of ['broker', 'api']) this.published.inc({ source }, 0);
    for (const status of ['202', '400', '401', '413', '503']) this.publishRequests.inc({ status }, 0);
    for (const command of CONTROL_COMMANDS) for (const outcome of CONTROL_OUTCOMES) this.controlCommands.inc({ command, outcome }, 0);
    this.consumed.inc(0);
    this.duplicates.inc(0);
    for (const outcome of ['written', 'write_failed', 'read', 'invalid']) this.digests.inc({ outcome }, 0);
    this.brokerConnected.set(0);
    this.subscribedChannels.set(0);
    this.heldSockets.set(0);
    for (const reason of EVICTION_REASONS) this.historyEvictions.inc({ reason }, 0);
  }

  /** Read the history's figures at each scrape (no work on the event path). */
  watchHistory(history: { bytes: number; size: number; evicted: Record<string, number> }, maxBytes: number): void {
    this.history = history;
    this.historyMaxBytes.set(maxBytes);
  }

  connectionOpened(endpoint: EndpointKind): void {
    this.opened.inc({ endpoint });
    this.connections.inc({ endpoint });
    this.legacyConnections.inc({ endpoint, status: 'active' });
  }

  connectionClosed(endpoint: EndpointKind, code: number): void {
    this.closed.inc({ endpoint, code: KNOWN_CLOSE_CODES.has(String(code)) ? String(code) : 'other' });
    this.connections.dec({ endpoint });
    this.legacyConnections.dec({ endpoint, status: 'active' });
  }

  delivered(endpoint: EndpointKind, frames: number, events: number, bytes: number): void {
    const m = this.perKind[endpoint];
    m.frames.inc(frames);
    m.events.inc(events);
    m.bytes.inc(bytes);
  }

  observeLatency(endpoint: EndpointKind, seconds: number): void {
    this.perKind[endpoint].latency.observe(seconds);
  }

  droppedEvents(endpoint: EndpointKind, reason: string, count: number): void {
    this.dropped.inc({ endpoint, reason }, count);
  }

  /**
   * Mark `node` as the one `connection` uses (undefined: none, it is down). `nodes` are every configured node, so
   * each series exists from the start and the label set stays bounded by RABBITMQ_URL.
   */
  useBrokerNode(connection: 'amqp' | 'stream', nodes: readonly string[], node: string | undefined): void {
    for (const n of nodes) this.brokerNode.set({ node: n, connection }, n === node ? 1 : 0);
  }

  duplicate(): void {
    this.duplicates.inc();
  }

  /** Removes every metric from the shared registry (tests start several apps in one process). */
  static resetRegistry(): void {
    register.clear();
  }
}
