import { AmqpConnection } from '@golevelup/nestjs-rabbitmq';
import { Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import type { ConfirmChannel, ConsumeMessage } from 'amqplib';
import type { ChannelWrapper } from 'amqp-connection-manager';
import type { Logger } from 'pino';
import { LOGGER } from '../common/logger';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { ServiceState } from '../health/service-state';
import { Hub } from '../hub/hub';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import { brokerNodeOf } from './broker-node';
import { declareDeadLetterPath, declareStream } from './broker-topology';
import { brokerNames, classify, DEAD_LETTER_REASON_HEADER, publishedAtMs } from './message-policy';

/** How long the stream may stay quiet after (re)subscribing before the replay counts as caught up. */
const CATCH_UP_IDLE_MS = 300;

/**
 * Reads every event from the RabbitMQ stream bound to the exchange (every instance reads all of it, nobody
 * competes) and publishes it into the hub with its stream offset as position. The stream is what makes positions
 * the same on every instance and lets an instance catch up after a restart or a broker outage: on reconnect it
 * resumes from the offset after the last one it processed, so nothing published meanwhile is lost (within the
 * stream's retention). On start it replays HISTORY_TTL_SECONDS of the stream to rebuild history and snapshots.
 *
 * Dead-lettering is done once, not once per instance: a quorum queue with single-active-consumer receives the
 * same messages, and whichever instance the broker makes active validates them and dead-letters the poison ones
 * with their reason. Stream readers skip poison messages silently.
 */
@Injectable()
export class BrokerConsumer implements OnApplicationBootstrap {
  private readonly names: { stream: string; validate: string; dlx: string; dlq: string };
  private channel: ChannelWrapper | undefined;
  /** The amqplib channel of the current connection (replaced on every reconnect). */
  private current: ConfirmChannel | undefined;
  /** The validator has its own channel: the stream's acknowledgements are batched with `multiple`, which must not
   * cover a validator delivery whose dead letter is not confirmed yet. */
  private validatorChannel: ChannelWrapper | undefined;
  private validatorCurrent: ConfirmChannel | undefined;
  /** The last stream delivery not yet acknowledged, and how many are pending: acks go once per event-loop turn. */
  private ackPending: { ch: ConfirmChannel; msg: ConsumeMessage } | undefined;
  private unacked = 0;
  private ackScheduled = false;
  /** The next stream offset to process; undefined until the first message (then resume from here). */
  private nextOffset: number | undefined;
  private subscribedAtMs = 0;
  private lastMessageAtMs = 0;
  private caughtUpTimer: NodeJS.Timeout | undefined;
  private streamTag: string | undefined;
  private validateTag: string | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private stopping = false;
  /** The stream's last offset when this instance first subscribed (undefined: empty stream, or not probed yet). */
  private tail: number | undefined;
  private probed = false;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly amqp: AmqpConnection,
    private readonly hub: Hub,
    private readonly metrics: RealtimeMetrics,
    private readonly state: ServiceState,
  ) {
    this.names = brokerNames(config.RABBITMQ_EXCHANGE);
    state.brokerConfigured = true;
  }

  onApplicationBootstrap(): void {
    const manager = this.amqp.managedConnection;
    const nodes = this.config.brokerUrls.map(brokerNodeOf);
    this.metrics.useBrokerNode('amqp', nodes, undefined);
    // The connection manager tries the addresses of RABBITMQ_URL in turn: say which node this connection reached.
    manager.on('connect', ({ url }: { url: unknown }) => {
      const node = typeof url === 'string' ? brokerNodeOf(url) : 'unknown';
      this.state.brokerConnected = true;
      this.state.brokerNode = node;
      this.metrics.brokerConnected.set(1);
      this.metrics.useBrokerNode('amqp', nodes, node);
      this.logger.info({ node }, 'broker connected');
    });
    manager.on('disconnect', ({ err }: { err?: Error }) => {
      const node = this.state.brokerNode;
      this.state.brokerConnected = false;
      this.state.brokerCaughtUp = false;
      this.state.brokerNode = undefined;
      this.metrics.brokerConnected.set(0);
      this.metrics.useBrokerNode('amqp', nodes, undefined);
      this.logger.warn({ node, err: err?.message }, 'broker disconnected; reconnecting to the next node of RABBITMQ_URL');
    });
    // Not awaited: the HTTP port and the sockets must not wait for the broker.
    this.channel = manager.createChannel({ confirm: true, setup: (ch: ConfirmChannel) => this.setup(ch) });
    this.channel.on('error', (err: Error) => this.logger.error({ err: err.message }, 'broker channel error'));
    this.validatorChannel = manager.createChannel({ confirm: true, setup: (ch: ConfirmChannel) => this.setupValidator(ch) });
    this.validatorChannel.on('error', (err: Error) => this.logger.error({ err: err.message }, 'broker validator channel error'));
  }

  /** Stop consuming and wait for in-flight dead-letter publications (shutdown). */
  async stop(): Promise<void> {
    this.stopping = true;
    try {
      if (this.current !== undefined && this.streamTag !== undefined) await this.current.cancel(this.streamTag);
      if (this.validatorCurrent !== undefined && this.validateTag !== undefined) await this.validatorCurrent.cancel(this.validateTag);
    } catch {
      // The channel is already gone (broker down): nothing more will be delivered.
    }
    this.flushAcks();
    await Promise.allSettled([...this.inflight]);
    await this.channel?.close().catch(() => undefined);
    await this.validatorChannel?.close().catch(() => undefined);
  }

  private async setup(ch: ConfirmChannel): Promise<void> {
    if (this.stopping) return;
    this.current = ch;
    this.ackPending = undefined;
    this.unacked = 0;
    const { stream } = this.names;
    await declareStream(ch, this.config);
    // Stream consumers need a prefetch (it is their credit) and acknowledgements.
    await ch.prefetch(this.config.RABBITMQ_PREFETCH);
    const offset =
      this.nextOffset !== undefined ? this.nextOffset : { '!': 'timestamp', value: Math.floor((Date.now() - this.config.HISTORY_TTL_SECONDS * 1000) / 1000) };
    if (this.nextOffset === undefined && !this.probed) {
      this.tail = await this.probeTail(ch, stream);
      this.probed = true;
    }
    this.subscribedAtMs = Date.now();
    this.lastMessageAtMs = this.subscribedAtMs;
    this.state.brokerCaughtUp = false;
    this.watchCatchUp();
    const s = await ch.consume(stream, (msg) => this.onStreamMessage(ch, msg), { noAck: false, arguments: { 'x-stream-offset': offset } });
    this.streamTag = s.consumerTag;
    this.logger.info({ stream, from: this.nextOffset ?? `${this.config.HISTORY_TTL_SECONDS}s ago` }, 'consuming the event stream');
  }

  /** The dead-lettering validator: a quorum queue with single-active-consumer, on its own channel. */
  private async setupValidator(ch: ConfirmChannel): Promise<void> {
    if (this.stopping) return;
    this.validatorCurrent = ch;
    const { validate } = this.names;
    const connection = this.amqp.managedConnection.connection;
    if (connection === undefined) throw new Error('no broker connection');
    await declareDeadLetterPath(ch, connection, this.config.RABBITMQ_EXCHANGE, this.logger);
    await ch.prefetch(200);
    const v = await ch.consume(validate, (msg) => this.onValidateMessage(ch, msg), { noAck: false });
    this.validateTag = v.consumerTag;
  }

  /** Acknowledge stream deliveries once per event-loop turn (or every quarter of the prefetch), with `multiple`. */
  private ackLater(ch: ConfirmChannel, msg: ConsumeMessage): void {
    this.ackPending = { ch, msg };
    if (++this.unacked >= Math.max(1, this.config.RABBITMQ_PREFETCH >> 2)) {
      this.flushAcks();
      return;
    }
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      setImmediate(() => {
        this.ackScheduled = false;
        this.flushAcks();
      });
    }
  }

  private flushAcks(): void {
    const pending = this.ackPending;
    this.ackPending = undefined;
    this.unacked = 0;
    // A delivery of a channel that has since been replaced needs no ack: the broker forgot it with the channel.
    if (pending === undefined || pending.ch !== this.current) return;
    try {
      pending.ch.ack(pending.msg, true);
    } catch (err) {
      this.logger.debug({ err: err instanceof Error ? err.message : String(err) }, 'stream ack failed (channel closing)');
    }
  }

  private onStreamMessage(ch: ConfirmChannel, msg: ConsumeMessage | null): void {
    if (msg === null) return; // consumer cancelled by the broker (stream deleted): setup runs again on reconnect
    try {
      const offset = Number(msg.properties.headers?.['x-stream-offset']);
      if (!Number.isSafeInteger(offset)) {
        this.logger.error('stream message without x-stream-offset');
        return;
      }
      // A stream consumer may get the rest of a chunk before the offset it asked for: skip what was processed.
      if (this.nextOffset !== undefined && offset < this.nextOffset) return;
      if (this.nextOffset === undefined) this.hub.useExternalPositions(offset - 1);
      this.nextOffset = offset + 1;
      this.lastMessageAtMs = Date.now();
      this.metrics.consumed.inc();
      const c = classify(msg.fields.routingKey, msg.content, this.config.BROKER_MAX_MESSAGE_BYTES);
      if (!c.ok) {
        this.logger.debug({ reason: c.reason, offset }, 'skipping an invalid stream message (dead-lettered by the validator)');
        return;
      }
      const at = publishedAtMs(msg.properties.headers, msg.properties.timestamp);
      if (!this.state.brokerCaughtUp && at !== undefined && at >= this.subscribedAtMs - 1000) this.caughtUp();
      const event = this.hub.publish(c.channel, c.body, {
        messageId: typeof msg.properties.messageId === 'string' ? msg.properties.messageId : undefined,
        position: offset,
        // Replayed history is not live: it would swamp the latency histogram with its age.
        publishedAtMs: this.state.brokerCaughtUp ? at : undefined,
      });
      if (event !== undefined) this.metrics.published.inc({ source: 'broker' });
    } catch (err) {
      this.logger.error({ err }, 'stream message handling failed');
    } finally {
      this.ackLater(ch, msg);
    }
  }

  private onValidateMessage(ch: ConfirmChannel, msg: ConsumeMessage | null): void {
    if (msg === null) return;
    const c = classify(msg.fields.routingKey, msg.content, this.config.BROKER_MAX_MESSAGE_BYTES);
    if (c.ok) {
      ch.ack(msg);
      return;
    }
    this.metrics.deadLettered.inc({ reason: c.reason });
    this.logger.warn(
      { reason: c.reason, detail: c.detail, routingKey: msg.fields.routingKey.slice(0, 100), messageId: msg.properties.messageId },
      'dead-lettering a broker message',
    );
    const headers = {
      ...msg.properties.headers,
      [DEAD_LETTER_REASON_HEADER]: c.reason,
      'x-ansflow-dead-letter-detail': c.detail.slice(0, 200),
      'x-original-routing-key': msg.fields.routingKey,
      'x-original-exchange': msg.fields.exchange,
    };
    const done = new Promise<void>((resolve) => {
      ch.publish(this.names.dlx, msg.fields.routingKey || 'none', msg.content, { ...msg.properties, headers, persistent: true }, (err) => {
        // Acknowledge only once the dead letter is safe; otherwise let it come back (it is not lost).
        if (err === null || err === undefined) ch.ack(msg);
        else ch.nack(msg, false, true);
        resolve();
      });
    });
    this.inflight.add(done);
    void done.finally(() => this.inflight.delete(done));
  }

  /** Replay is over once a live message arrives or the stream stays quiet for a moment. */
  private watchCatchUp(): void {
    if (this.caughtUpTimer !== undefined) clearInterval(this.caughtUpTimer);
    this.caughtUpTimer = setInterval(() => {
      if (this.state.brokerCaughtUp) {
        clearInterval(this.caughtUpTimer);
        this.caughtUpTimer = undefined;
      } else if (Date.now() - this.lastMessageAtMs >= CATCH_UP_IDLE_MS) this.caughtUp();
    }, 100);
    this.caughtUpTimer.unref();
  }

  /**
   * The offset of the newest event in the stream, read with a short-lived consumer at offset `last` (it gets the
   * last chunk). It tells a freshly started instance where the stream stands when its replay window holds no event:
   * without it, every resume would be answered `recovered:false` until the next event, although nothing was missed.
   */
  private async probeTail(ch: ConfirmChannel, stream: string): Promise<number | undefined> {
    let tail: number | undefined;
    let settle: NodeJS.Timeout | undefined;
    const done = new Promise<void>((resolve) => {
      const timeout = setTimeout(resolve, 500);
      settle = timeout;
      void ch
        .consume(
          stream,
          (msg) => {
            if (msg === null) return;
            const offset = Number(msg.properties.headers?.['x-stream-offset']);
            if (Number.isSafeInteger(offset) && (tail === undefined || offset > tail)) tail = offset;
            ch.ack(msg);
            // The last chunk arrives in one go: settle shortly after its first message.
            clearTimeout(settle);
            settle = setTimeout(resolve, 30);
          },
          { noAck: false, arguments: { 'x-stream-offset': 'last' } },
        )
        .then(({ consumerTag }) => done.finally(() => ch.cancel(consumerTag).catch(() => undefined)));
    });
    await done;
    clearTimeout(settle);
    return tail;
  }

  private caughtUp(): void {
    if (this.state.brokerCaughtUp) return;
    if (this.nextOffset === undefined && this.tail !== undefined) {
      // The replay window was quiet: every event up to the tail is older than the window, and every later one
      // reaches this instance from now on.
      this.hub.useExternalPositions(this.tail);
    }
    this.state.brokerCaughtUp = true;
    this.logger.info({ position: this.hub.latestPosition, replayMs: Date.now() - this.subscribedAtMs }, 'event stream caught up');
  }
}
