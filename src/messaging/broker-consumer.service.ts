import { AmqpConnection } from '@golevelup/nestjs-rabbitmq';
import { Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import type { Channel, ConfirmChannel, ConsumeMessage } from 'amqplib';
import { randomUUID } from 'node:crypto';
import type { ChannelWrapper } from 'amqp-connection-manager';
import type { Logger } from 'pino';
import { LOGGER } from '../common/logger';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { ServiceState } from '../health/service-state';
import { Hub } from '../hub/hub';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import { brokerNodeOf } from './broker-node';
import { declareDeadLetterPath, declareStream } from './broker-topology';
import { brokerNames, classify, classifyReceived, DEAD_LETTER_REASON_HEADER, publishedAtMs } from './message-policy';

import { decodeRecord, encodeRecord, type StreamRecord } from './amqp10';
import { StreamConnection, type Chunk, type OffsetSpec, type StreamAddress } from './stream-connection';
import { decodeDigest, DigestBuilder, digestRange, MAX_DIGEST_BYTES } from './stream-digest';

/** The header of a sync marker: a message this service writes into the stream to learn where the stream ends. */
export const SYNC_MARKER_HEADER = 'x-ansflow-sync';
/** Chunks the broker may send ahead of the one being handled (the stream protocol's credit). */
const STREAM_CREDIT = 500;
const RECONNECT_DELAY_MS = 1000;
/** Chunks of the replay stream in flight: each holds a digest of up to ~1 MB. */
const DIGEST_CREDIT = 8;
/** A digest is written at most this long after its first record (plus up to a second of jitter). */
const DIGEST_MAX_DELAY_MS = 5000;
/** Reading the digests at start gives up (the event stream is read instead) after this long without a chunk. */
const DIGEST_STALL_MS = 10_000;
/** Digests waiting for the one before them to be confirmed, at most (~1 MiB each). */
const MAX_QUEUED_DIGESTS = 16;
/**
 * Queued digests at which the stream reader stops granting credit until one is left. A reader of a stream written in
 * big chunks outran the broker's confirms of its ~1 MiB digests (a first start on 1,000,000 batched events filled
 * the queue after ~50,000 events and dropped digests; each drop is a gap every later restart stops at). What the
 * broker may still send on its credit (500 chunks) gathers into a few more: the queue stays under its bound.
 */
const DIGEST_QUEUE_PAUSE = 4;
const DIGEST_PAUSE_MS = 5000;
/** Offsets without a record that a digest bridges with empty entries (see gatherRecord). */
const MAX_SKIPPED_OFFSETS = 64;
/** Unacknowledged deliveries of the live tail over AMQP 0-9-1 (a stream consumer needs a prefetch: its credit). */
const TAIL_PREFETCH = 1000;
/** Unacknowledged messages the validator may hold. */
const VALIDATOR_PREFETCH = 200;
/** How long a delivery's ack may wait for later ones to go out with it (BatchedAcks). */
const ACK_DELAY_MS = 25;

/**
 * Reads every event from the RabbitMQ stream bound to the exchange (every instance reads all of it, nobody
 * competes) and publishes it into the hub with its stream offset as position. The stream is what makes positions
 * the same on every instance and lets an instance catch up after a restart or a broker outage: on reconnect it
 * resumes from the offset after the last one it processed, so nothing published meanwhile is lost (within the
 * stream's retention). On start it replays HISTORY_TTL_SECONDS of the stream to rebuild history and snapshots.
 *
 * The history is replayed over RabbitMQ's stream protocol (port RABBITMQ_STREAM_PORT), a chunk at a time, from one
 * of the cluster's nodes (ADR 0003). Once caught up, the live tail is read over AMQP 0-9-1 instead (a consumer of the
 * stream queue from the next offset, STREAM_TAIL_READER=amqp): RabbitMQ delivers a new message that way about a
 * millisecond sooner (ADR 0003, decision 6). The topology (exchange, stream, binding), the sync markers and the
 * validator use the AMQP connection.
 *
 * Caught up is decided by offsets, never by clocks: after subscribing, the reader writes a sync marker (a message
 * with a unique id, sent to the stream directly through the default exchange, so no other queue sees it) and is
 * caught up when it reads that marker back: it has then processed everything that was in the stream when it
 * subscribed. Works the same on an empty stream, a quiet one, and after a reconnect.
 *
 * Dead-lettering is done once, not once per instance: a quorum queue with single-active-consumer receives the
 * same messages, and whichever instance the broker makes active validates them and dead-letters the poison ones
 * with their reason. Stream readers skip poison messages silently.
 */
@Injectable()
export class BrokerConsumer implements OnApplicationBootstrap {
  private readonly names: { stream: string; replay: string; validate: string; dlx: string; dlq: string };
  private readonly addresses: StreamAddress[];
  private channel: ChannelWrapper | undefined;
  private validatorChannel: ChannelWrapper | undefined;
  private validatorCurrent: ConfirmChannel | undefined;
  private validateTag: string | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  private stopping = false;
  /** The topology has been declared once (the stream exists): the stream reader may start. */
  private topologyReady = false;
  private readerStarted = false;
  private amqpConnected = false;
  /** The validator queue is declared, bound and consumed on the current connection. */
  private validatorReady = false;
  private stream: StreamConnection | undefined;
  /** Index into `addresses` of the node to try next. */
  private nodeIndex = 0;
  /** The next stream offset to process; undefined until the first record (then resume from here). */
  private nextOffset: number | undefined;
  private subscribedAtMs = 0;
  /** The sync marker whose return means "caught up" for the current subscription. */
  private catchUpMarker: string | undefined;
  /** Pending `sync()` calls: each resolves when the marker published for it is read back. */
  private readonly markers = new Map<string, () => void>();
  private syncWaiters: Array<() => void> = [];
  private syncInFlight = false;
  /** Valid messages the validator has not yet acknowledged (acknowledged together, see ackValid). */
  private readonly validAcks = new BatchedAcks(VALIDATOR_PREFETCH / 4);
  /** Records consumed and events published while handling the current chunk (metrics, added once per chunk). */
  private consumedInChunk = 0;
  /** The first chunk of the current subscription has been logged. */
  private startLogged = false;
  /** The epoch of the last chunk with a record processed. */
  private lastEpoch: number | undefined;
  private publishedInChunk = 0;
  /** Digests (src/messaging/stream-digest.ts): on when STREAM_DIGEST_EVENTS > 0. */
  private readonly digestEvents: number;
  private readonly digest = new DigestBuilder();
  private digestTimer: NodeJS.Timeout | undefined;
  private digestTimerFull = false;
  /** Digests taken and not yet confirmed, oldest first (see pumpDigests). */
  private readonly digestQueue: Buffer[] = [];
  private digestWriting = false;
  /** Set while the stream reader withholds its credit because digests queue up (DIGEST_QUEUE_PAUSE): its time limit. */
  private readerPauseTimer: NodeJS.Timeout | undefined;
  /** Cleared when a pause timed out, until the queue is written: the reading goes on meanwhile. */
  private readerMayPause = true;
  /** The next offset at the last gap in the digests logged (one line per gap, not per skipped digest). */
  private gapLoggedAt: number | undefined;
  /** The highest offset some digest in the replay stream covers (ours included, once written). */
  private covered = -1;
  private digestConn: StreamConnection | undefined;
  /** Reading the digests at start; `endDigestReplay` ends it (marker read, gap, failure or stall). */
  private digestReplaying = false;
  private endDigestReplay: (() => void) | undefined;
  private lastDigestChunkMs = 0;
  /** The event stream's last offset when the digests began to be read (see lastOffsetOf). */
  private streamTail: number | undefined;
  /** Records processed at start from digests and from the event stream, for the "caught up" line. */
  private replayedFromDigests = 0;
  /** When the first replay began (digests included); the first "caught up" reports the time since. */
  private readingSinceMs: number | undefined;
  /** Set at the first catch-up when STREAM_TAIL_READER=amqp: from then on the stream is read over AMQP 0-9-1. */
  private tailOverAmqp = false;
  private tailChannel: ChannelWrapper | undefined;
  /** The channel the tail consumer runs on (deliveries of an earlier one are ignored). */
  private tailCurrent: Channel | undefined;
  private tailConsuming = false;
  private tailSetups = 0;
  private tailStartLogged = false;
  /** The tail's deliveries not yet acknowledged (acknowledged together: the consumer's credit). */
  private readonly tailAcks = new BatchedAcks(TAIL_PREFETCH / 4);

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly amqp: AmqpConnection,
    private readonly hub: Hub,
    private readonly metrics: RealtimeMetrics,
    private readonly state: ServiceState,
  ) {
    this.names = brokerNames(config.RABBITMQ_EXCHANGE);
    this.addresses = config.brokerUrls.map((u) => streamAddress(u, config.RABBITMQ_STREAM_PORT));
    this.digestEvents = config.STREAM_DIGEST_EVENTS;
    state.brokerConfigured = true;
    state.sync = () => this.sync();
    state.brokerNode = () => this.readerNode;
    metrics.useBrokerNode('stream', this.streamNodes, undefined);
  }

  /** `host:port` of every node's stream listener: the bounded `node` label of realtime_broker_node. */
  private get streamNodes(): string[] {
    return this.addresses.map((a) => `${a.host}:${a.port}`);
  }

  /**
   * The node the event stream is read from (`host:port`), for /health: the stream reader's while replaying, the AMQP
   * connection's once the tail is read over it; undefined when not reading.
   */
  get readerNode(): string | undefined {
    if (this.tailOverAmqp) return this.tailConsuming ? this.state.amqpNode : undefined;
    const s = this.stream;
    return s !== undefined && s.isOpen ? `${s.address.host}:${s.address.port}` : undefined;
  }

  onApplicationBootstrap(): void {
    const manager = this.amqp.managedConnection;
    const nodes = this.config.brokerUrls.map(brokerNodeOf);
    this.metrics.useBrokerNode('amqp', nodes, undefined);
    // The connection manager tries the addresses of RABBITMQ_URL in turn: say which node this connection reached.
    manager.on('connect', ({ url }: { url: unknown }) => {
      const node = typeof url === 'string' ? brokerNodeOf(url) : 'unknown';
      this.amqpConnected = true;
      this.state.amqpNode = node;
      this.metrics.useBrokerNode('amqp', nodes, node);
      this.updateConnected();
      this.logger.info({ node }, 'broker connected (AMQP)');
    });
    manager.on('disconnect', ({ err }: { err?: Error }) => {
      const node = this.state.amqpNode;
      this.amqpConnected = false;
      this.validatorReady = false;
      if (this.tailOverAmqp) {
        // The tail consumer is gone with its connection; it consumes again from the next offset once reconnected.
        this.tailConsuming = false;
        this.state.brokerCaughtUp = false;
      }
      this.state.amqpNode = undefined;
      this.metrics.useBrokerNode('amqp', nodes, undefined);
      this.updateConnected();
      this.logger.warn({ node, err: err?.message }, 'broker disconnected (AMQP); reconnecting to the next node of RABBITMQ_URL');
    });
    // Not awaited: the HTTP port and the sockets must not wait for the broker.
    this.channel = manager.createChannel({ confirm: true, setup: (ch: ConfirmChannel) => this.setup(ch) });
    this.channel.on('error', (err: Error) => this.logger.error({ err: err.message }, 'broker channel error'));
    this.validatorChannel = manager.createChannel({ confirm: true, setup: (ch: ConfirmChannel) => this.setupValidator(ch) });
    this.validatorChannel.on('error', (err: Error) => this.logger.error({ err: err.message }, 'broker validator channel error'));
  }

  /** Stop consuming and wait for in-flight dead-letter publications (shutdown). */
  async stop(): Promise<void> {
    // What this instance gathered goes out before it stops: its replacement then reads it as a digest.
    this.writeDigest();
    this.stopping = true;
    this.stream?.close();
    this.digestConn?.close();
    this.tailAcks.flush();
    const tailClosed = this.tailChannel?.close().catch(() => undefined);
    try {
      if (this.validatorCurrent !== undefined && this.validateTag !== undefined) await this.validatorCurrent.cancel(this.validateTag);
    } catch {
      // The channel is already gone (broker down): nothing more will be delivered.
    }
    this.validAcks.flush();
    // Dead letters, and the digests, which follow one another (each confirmed write starts the next).
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    await this.channel?.close().catch(() => undefined);
    await this.validatorChannel?.close().catch(() => undefined);
    await tailClosed;
  }

  /**
   * Resolves once this instance has read a marker written to the stream after the call: every event published
   * before the call has then passed through the hub. Calls made while a marker is on its way share the next one.
   */
  sync(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.syncWaiters.push(resolve);
      this.flushSync();
    });
  }

  private flushSync(): void {
    if (this.syncInFlight || this.syncWaiters.length === 0 || this.stopping) return;
    const waiters = this.syncWaiters;
    this.syncWaiters = [];
    this.syncInFlight = true;
    this.publishMarker(() => {
      this.syncInFlight = false;
      for (const w of waiters) w();
      this.flushSync();
    });
  }

  /** Write a sync marker into the stream; `onRead` runs when the reader reads it back. */
  private publishMarker(onRead: () => void, queue = this.names.stream): string {
    const id = randomUUID();
    this.markers.set(id, onRead);
    this.sendMarker(id, queue);
    return id;
  }

  /** A sync marker read back from either stream: run what waited for it, if it is one of ours. */
  private markerRead(id: string): void {
    const done = this.markers.get(id);
    if (done === undefined) return;
    this.markers.delete(id);
    done();
  }

  private sendMarker(id: string, queue: string): void {
    const channel = this.channel;
    if (channel === undefined || this.stopping) return;
    // Straight to the stream through the default exchange: neither the validator nor any other queue sees it.
    // Queued by the channel while the broker is unreachable, so it is written once the connection is back.
    channel.publish('', queue, Buffer.from('{}'), { persistent: true, headers: { [SYNC_MARKER_HEADER]: id } }).catch((err: unknown) => {
      this.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'sync marker not confirmed; sending it again');
      setTimeout(() => {
        if (this.markers.has(id)) this.sendMarker(id, queue);
      }, RECONNECT_DELAY_MS).unref();
    });
  }

  private updateConnected(): void {
    // The validator's queue must be bound too: a message published before it exists reaches the stream only, and a
    // poison one would then be skipped without ever being dead-lettered.
    const reading = this.tailOverAmqp ? this.tailConsuming : this.stream !== undefined && this.stream.isOpen;
    const up = this.amqpConnected && this.validatorReady && reading;
    this.state.brokerConnected = up;
    this.metrics.brokerConnected.set(up ? 1 : 0);
  }

  private async setup(ch: ConfirmChannel): Promise<void> {
    if (this.stopping) return;
    await declareStream(ch, this.config);
    this.topologyReady = true;
    if (!this.readerStarted) {
      this.readerStarted = true;
      void this.start();
    }
  }

  /** Read the digests first (when on), then the event stream from the offset after the last digested record. */
  private async start(): Promise<void> {
    this.readingSinceMs = Date.now();
    if (this.digestEvents > 0) {
      const t0 = Date.now();
      await new Promise<void>((resolve) => {
        this.endDigestReplay = resolve;
        this.digestReplaying = true;
        void this.digestLoop();
      });
      this.logger.info({ events: this.replayedFromDigests, ms: Date.now() - t0, nextOffset: this.nextOffset }, 'digests read; reading the event stream');
    }
    await this.readLoop();
  }

  /**
   * The replay stream's reader. At start it subscribes from HISTORY_TTL_SECONDS ago and processes the digests in
   * offset order, until it reads back a marker written after subscribing (it has then read every digest there
   * was), a digest that leaves a gap after what it processed, a failure, or DIGEST_STALL_MS without a chunk: the
   * event stream is then read from the next offset. Afterwards it stays subscribed and only notes how far the
   * digests written by any instance reach (`covered`), so each range is written about once.
   */
  private async digestLoop(): Promise<void> {
    let attempt = 0;
    // The stall is counted from now: finding the event stream's tail may take its 2 s on an empty stream.
    this.lastDigestChunkMs = Date.now();
    const stall = setInterval(() => {
      if (this.digestReplaying && Date.now() - this.lastDigestChunkMs > DIGEST_STALL_MS) {
        this.logger.warn({ stallMs: DIGEST_STALL_MS }, 'no digest chunk for a while; reading the event stream instead');
        this.finishDigestReplay();
      }
    }, 1000);
    stall.unref();
    while (!this.stopping) {
      const address = this.addresses[(this.nodeIndex + attempt++) % this.addresses.length];
      try {
        if (this.digestReplaying) {
          this.streamTail = await this.lastOffsetOf(address);
          if (this.streamTail === undefined) {
            this.logger.warn({ stream: this.names.stream }, 'the event stream has no chunk yet; not reading digests');
            this.finishDigestReplay();
          }
        }
        const conn = await StreamConnection.open(address, { heartbeatSeconds: 5, timeoutMs: 5000, name: `${this.config.SERVICE_NAME} digests` });
        this.digestConn = conn;
        const closed = new Promise<Error | undefined>((resolve) => conn.onClose(resolve));
        const offset: OffsetSpec = this.digestReplaying ? { type: 'timestamp', ms: Date.now() - this.config.HISTORY_TTL_SECONDS * 1000 } : { type: 'last' };
        this.lastDigestChunkMs = Date.now();
        await conn.subscribe(this.names.replay, offset, DIGEST_CREDIT, (chunk) => this.onDigestChunk(conn, chunk));
        if (this.digestReplaying) this.publishMarker(() => this.finishDigestReplay(), this.names.replay);
        const err = await closed;
        if (this.stopping) break;
        this.logger.warn({ err: err?.message }, 'replay stream reader disconnected; reconnecting');
      } catch (err) {
        this.digestConn?.close();
        if (this.stopping) break;
        this.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'replay stream reader could not connect');
      }
      // A failure while reading the digests at start: the event stream has them all, read it instead.
      this.finishDigestReplay();
      await sleep(RECONNECT_DELAY_MS);
    }
    clearInterval(stall);
    this.finishDigestReplay();
  }

  /**
   * The offset of the last record of the event stream's last chunk, or undefined when none arrives within 2 s (an
   * empty stream). A digest that starts after it cannot be of this stream (say, one left from a stream deleted and
   * declared again): reading digests stops there.
   */
  private async lastOffsetOf(address: StreamAddress): Promise<number | undefined> {
    const conn = await StreamConnection.open(address, { heartbeatSeconds: 0, timeoutMs: 5000, name: `${this.config.SERVICE_NAME} tail` });
    try {
      return await new Promise<number | undefined>((resolve, reject) => {
        const timer = setTimeout(() => resolve(undefined), 2000);
        conn.onClose((err) => reject(err ?? new Error('connection closed')));
        conn
          .subscribe(this.names.stream, { type: 'last' }, 1, (chunk) => {
            clearTimeout(timer);
            resolve(chunk.firstOffset + chunk.records.length - 1);
          })
          .catch(reject);
      });
    } finally {
      conn.close();
    }
  }

  private finishDigestReplay(): void {
    if (!this.digestReplaying) return;
    this.digestReplaying = false;
    this.endDigestReplay?.();
    this.endDigestReplay = undefined;
  }

  private onDigestChunk(conn: StreamConnection, chunk: Chunk): void {
    if (conn !== this.digestConn) return;
    this.lastDigestChunkMs = Date.now();
    const { buf, records } = chunk;
    for (const r of records) {
      const rec = r === undefined ? undefined : decodeRecord(buf, r[0], r[1]);
      if (rec === undefined) continue;
      if (rec.syncId !== undefined) {
        this.markerRead(rec.syncId);
        continue;
      }
      const range = digestRange(rec.body);
      if (range === undefined) {
        this.invalidDigest(rec.body);
        continue;
      }
      if (!this.digestReplaying) {
        // Someone's digest: it counts as coverage only where it joins what this instance has read or seen covered, so
        // a digest far ahead (a mistake, or a forgery) cannot stop this instance from writing what comes before it.
        if (range.first <= Math.max(this.covered, (this.nextOffset ?? 0) - 1) + 1) this.covered = Math.max(this.covered, range.last);
        continue;
      }
      if (range.first > (this.nextOffset ?? (this.streamTail ?? -1) + 1)) {
        if (this.nextOffset === undefined || this.streamTail === undefined || range.first > this.streamTail + 1) {
          // Not of this stream (one deleted and declared again leaves such digests behind): the event stream has it all.
          this.logger.info({ nextOffset: this.nextOffset, digestFrom: range.first, streamTail: this.streamTail }, 'a digest beyond the event stream; reading the event stream from here');
          this.finishDigestReplay();
          continue;
        }
        // A gap: nobody digested what comes next yet (a digest dropped, an instance killed before it wrote). The
        // instance that read those events from the event stream wrote them later, so the digest that fills the gap
        // may come further on: skip the ones after it until then (their header only), up to the marker at the end.
        this.metrics.digests.inc({ outcome: 'skipped' });
        if (this.gapLoggedAt !== this.nextOffset) {
          this.gapLoggedAt = this.nextOffset;
          this.logger.info({ nextOffset: this.nextOffset, digestFrom: range.first }, 'gap in the digests; looking further for the digest that fills it');
        }
        continue;
      }
      const digest = decodeDigest(rec.body);
      if (digest === undefined) {
        this.invalidDigest(rec.body);
        continue;
      }
      this.metrics.digests.inc({ outcome: 'read' });
      this.covered = Math.max(this.covered, range.last);
      const before = this.nextOffset ?? digest.firstOffset;
      this.processRecords(digest.buf, digest.firstOffset, digest.records, false, true);
      this.replayedFromDigests += Math.max(0, (this.nextOffset ?? before) - before);
    }
  }

  private invalidDigest(body: Buffer): void {
    this.metrics.digests.inc({ outcome: 'invalid' });
    this.logger.warn({ bytes: body.length }, 'not a digest in the replay stream; skipped');
  }

  /** Connect to a node, subscribe, read until the connection dies; then the next node, from the next offset. */
  private async readLoop(): Promise<void> {
    let failures = 0;
    while (!this.stopping && !this.tailOverAmqp) {
      const address = this.addresses[this.nodeIndex % this.addresses.length];
      this.nodeIndex++;
      const node = `${address.host}:${address.port}`;
      try {
        const conn = await StreamConnection.open(address, { heartbeatSeconds: 5, timeoutMs: 5000, name: `${this.config.SERVICE_NAME} reader` });
        this.stream = conn;
        this.resumeReader(); // a pause was the previous connection's
        const closed = new Promise<Error | undefined>((resolve) => conn.onClose(resolve));
        await this.subscribe(conn);
        failures = 0;
        this.updateConnected();
        this.metrics.useBrokerNode('stream', this.streamNodes, node);
        this.logger.info({ node }, 'stream reader connected');
        const err = await closed;
        this.metrics.useBrokerNode('stream', this.streamNodes, undefined);
        if (this.tailOverAmqp) return; // closed by the hand-over: the AMQP consumer reads on
        this.state.brokerCaughtUp = false;
        this.updateConnected();
        if (this.stopping) return;
        this.logger.warn({ node, err: err?.message }, 'stream reader disconnected; reconnecting');
      } catch (err) {
        this.stream?.close();
        this.state.brokerCaughtUp = false;
        this.updateConnected();
        if (this.stopping) return;
        failures++;
        this.logger.warn({ node, err: err instanceof Error ? err.message : String(err) }, 'stream reader could not connect');
      }
      // Every node tried once in a row without success: wait before the next round.
      await sleep(failures > 0 && failures % this.addresses.length === 0 ? RECONNECT_DELAY_MS : 100);
    }
  }

  private async subscribe(conn: StreamConnection): Promise<void> {
    const offset: OffsetSpec =
      this.nextOffset !== undefined
        ? { type: 'offset', offset: this.nextOffset }
        : { type: 'timestamp', ms: Date.now() - this.config.HISTORY_TTL_SECONDS * 1000 };
    this.state.brokerCaughtUp = false;
    this.subscribedAtMs = Date.now();
    // A marker of an earlier subscription no longer tells where this one's tail is.
    if (this.catchUpMarker !== undefined) this.markers.delete(this.catchUpMarker);
    this.startLogged = false;
    await conn.subscribe(this.names.stream, offset, STREAM_CREDIT, (chunk) => this.onChunk(conn, chunk));
    // Everything in the stream now comes before this marker: reading it back means caught up.
    this.catchUpMarker = this.publishMarker(() => this.caughtUp());
    this.logger.info({ stream: this.names.stream, from: this.nextOffset ?? `${this.config.HISTORY_TTL_SECONDS}s ago` }, 'consuming the event stream');
  }

  /** The dead-lettering validator: a quorum queue with single-active-consumer, on its own channel. */
  private async setupValidator(ch: ConfirmChannel): Promise<void> {
    if (this.stopping) return;
    this.validatorCurrent = ch;
    const { validate } = this.names;
    const connection = this.amqp.managedConnection.connection;
    if (connection === undefined) throw new Error('no broker connection');
    await declareDeadLetterPath(ch, connection, this.config.RABBITMQ_EXCHANGE, this.logger);
    await ch.prefetch(VALIDATOR_PREFETCH);
    const v = await ch.consume(validate, (msg) => this.onValidateMessage(ch, msg), { noAck: false });
    this.validateTag = v.consumerTag;
    this.validatorReady = true;
    this.updateConnected();
  }

  /** One chunk: every record in offset order, synchronously (the connection then credits it back). */
  private onChunk(conn: StreamConnection, chunk: Chunk): void {
    if (conn !== this.stream) return;
    const { buf, records } = chunk;
    const fresh = this.nextOffset === undefined || chunk.firstOffset + records.length > this.nextOffset;
    if (!this.startLogged || (fresh && this.unexpected(chunk))) this.logChunk(conn, chunk);
    if (fresh) this.lastEpoch = chunk.epoch;
    this.processRecords(buf, chunk.firstOffset, records, this.digestEvents > 0);
  }

  /**
   * The records of a chunk of the event stream, or of a digest: each in offset order, what was processed skipped.
   * With `gather`, records not yet covered by a digest are gathered into the next one. `fromDigest`: an empty entry of
   * a digest is an offset without an event (see gatherRecord), skipped without a word.
   */
  private processRecords(buf: Buffer, firstOffset: number, records: Array<[number, number] | undefined>, gather: boolean, fromDigest = false): void {
    this.consumedInChunk = 0;
    this.publishedInChunk = 0;
    for (let i = 0; i < records.length; i++) {
      const offset = firstOffset + i;
      // A subscription at an offset starts with the whole chunk holding it: skip what was processed.
      if (this.nextOffset !== undefined && offset < this.nextOffset) continue;
      if (this.nextOffset === undefined) this.hub.useExternalPositions(offset - 1);
      this.nextOffset = offset + 1;
      const r = records[i];
      if (gather && offset > this.covered) this.gatherRecord(offset, buf, r);
      if (fromDigest && r === undefined) {
        this.hub.skipPosition(offset);
        continue;
      }
      try {
        this.onRecord(offset, r === undefined ? undefined : decodeRecord(buf, r[0], r[1]));
      } catch (err) {
        this.logger.error({ err, offset }, 'stream message handling failed');
      }
    }
    // Counted once per chunk: a labelled counter's inc per record was 4 % of a replay's CPU.
    if (this.consumedInChunk > 0) this.metrics.consumed.inc(this.consumedInChunk);
    if (this.publishedInChunk > 0) this.metrics.published.inc({ source: 'broker' }, this.publishedInChunk);
    if (gather && this.digest.size > 0) this.scheduleDigest();
  }

  /**
   * Add a record to the next digest, which must stay contiguous. RabbitMQ gives some offsets no record a reader ever
   * receives (a tracking chunk opens each new segment file: every ~500 MB, one offset is skipped): those become
   * empty entries, so the digests have no gap there. A longer jump (retention, a resubscription elsewhere) ends the
   * digest instead.
   */
  private gatherRecord(offset: number, buf: Buffer, r: [number, number] | undefined): void {
    const expected = this.digest.size > 0 ? this.digest.nextOffset : this.covered + 1;
    if (offset !== expected) {
      if ((this.digest.size > 0 || this.covered >= 0) && offset > expected && offset - expected <= MAX_SKIPPED_OFFSETS) {
        for (let o = expected; o < offset; o++) this.digest.add(o, buf, undefined);
      } else if (this.digest.size > 0) this.writeDigest();
    }
    this.digest.add(offset, buf, r);
  }

  /**
   * Write the gathered records once there are STREAM_DIGEST_EVENTS of them (after up to half a second, so that of
   * the instances that gathered the same records one writes and the others see its digest and drop theirs), or
   * DIGEST_MAX_DELAY_MS after the first (plus up to a second).
   */
  private scheduleDigest(): void {
    if (this.digest.bytes >= MAX_DIGEST_BYTES) {
      this.writeDigest(); // a replay gathers fast: keep each digest within a stream frame
      return;
    }
    const full = this.digest.size >= this.digestEvents;
    if (this.digestTimer !== undefined && !full) return;
    if (full && this.digestTimer !== undefined && this.digestTimerFull) return;
    if (this.digestTimer !== undefined) clearTimeout(this.digestTimer);
    this.digestTimerFull = full;
    const delay = full ? Math.random() * 500 : DIGEST_MAX_DELAY_MS + Math.random() * 1000;
    this.digestTimer = setTimeout(() => this.writeDigest(), delay);
    this.digestTimer.unref();
  }

  /** Write what is gathered and not covered by someone else's digest meanwhile, as one message of the replay stream. */
  private writeDigest(): void {
    if (this.digestTimer !== undefined) clearTimeout(this.digestTimer);
    this.digestTimer = undefined;
    const body = this.digest.take(this.covered);
    const channel = this.channel;
    if (body === undefined || channel === undefined || this.stopping) return;
    const range = digestRange(body);
    if (range !== undefined) this.covered = Math.max(this.covered, range.last);
    if (this.digestQueue.length >= MAX_QUEUED_DIGESTS) {
      // Writes have been failing for a while: this range will be read from the event stream (slower), not lost.
      this.metrics.digests.inc({ outcome: 'write_failed' });
      this.logger.error({ range, queued: this.digestQueue.length }, 'digest dropped: earlier digests are still not written');
      return;
    }
    this.digestQueue.push(body);
    if (this.digestQueue.length >= DIGEST_QUEUE_PAUSE && this.stream !== undefined && this.readerPauseTimer === undefined && this.readerMayPause) this.pauseReader(this.stream);
    this.pumpDigests();
  }

  /**
   * Stop reading the event stream until the queued digests are written. At most DIGEST_PAUSE_MS at a time: a broker
   * that holds publishers back (a memory alarm) or never confirms must not stop the delivery of what the stream holds.
   */
  private pauseReader(conn: StreamConnection): void {
    conn.pause();
    this.readerPauseTimer = setTimeout(() => {
      this.logger.warn({ queued: this.digestQueue.length, pausedMs: DIGEST_PAUSE_MS }, 'digests still not confirmed; reading the event stream on');
      this.readerMayPause = false;
      this.resumeReader();
    }, DIGEST_PAUSE_MS);
    this.readerPauseTimer.unref();
  }

  private resumeReader(): void {
    if (this.readerPauseTimer === undefined) return;
    clearTimeout(this.readerPauseTimer);
    this.readerPauseTimer = undefined;
    this.stream?.resume();
  }

  /**
   * Digests go out one at a time, in order, each confirmed before the next, and a failed one is written again before
   * any later one: a reader stops at the first gap, so a later digest written past a failed one would be wasted.
   */
  private pumpDigests(): void {
    const body = this.digestQueue[0];
    const channel = this.channel;
    if (this.digestWriting || body === undefined || channel === undefined) return;
    this.digestWriting = true;
    const done = channel.publish('', this.names.replay, body, { persistent: true }).then(
      () => {
        this.digestQueue.shift();
        this.metrics.digests.inc({ outcome: 'written' });
        if (this.digestQueue.length <= 1) {
          this.readerMayPause = true;
          this.resumeReader();
        }
      },
      (err: unknown) => {
        this.metrics.digests.inc({ outcome: 'write_failed' });
        this.logger.warn({ err: err instanceof Error ? err.message : String(err), range: digestRange(body) }, 'digest not written; writing it again');
        this.resumeReader(); // the events come first: past MAX_QUEUED_DIGESTS a digest is dropped, not the reading
        return this.stopping ? undefined : sleep(RECONNECT_DELAY_MS);
      },
    );
    this.inflight.add(done);
    void done.finally(() => {
      this.inflight.delete(done);
      this.digestWriting = false;
      if (!this.stopping || this.digestQueue[0] !== body) this.pumpDigests();
    });
  }

  /**
   * Caught up over the stream protocol: from now on read the tail over AMQP 0-9-1, from the next offset. The stream
   * reader's connection closes; until the consumer's first delivery the events wait in the stream, none is lost.
   */
  private handOver(): void {
    this.tailOverAmqp = true;
    const conn = this.stream;
    this.stream = undefined;
    conn?.close();
    this.tailConsuming = this.amqpConnected; // for the few milliseconds until the consumer is set up
    this.tailChannel = this.amqp.managedConnection.createChannel({ confirm: false, setup: (ch: Channel) => this.setupTail(ch) });
    this.tailChannel.on('error', (err: Error) => this.logger.error({ err: err.message }, 'broker tail channel error'));
  }

  /**
   * Consume the stream queue from the next offset (again after a reconnect: the instance is then caught up once it reads
   * back a marker, as after a reconnect of the stream reader).
   */
  private async setupTail(ch: Channel): Promise<void> {
    if (this.stopping) return;
    this.tailCurrent = ch;
    await ch.prefetch(TAIL_PREFETCH);
    await this.consumeTail(ch);
    if (this.tailSetups++ > 0 || !this.state.brokerCaughtUp) this.resync();
  }

  private async consumeTail(ch: Channel): Promise<void> {
    const from = this.nextOffset ?? 'next';
    await ch.consume(this.names.stream, (msg) => this.onTailMessage(ch, msg), { noAck: false, arguments: { 'x-stream-offset': from } });
    this.tailConsuming = true;
    this.tailStartLogged = false;
    this.updateConnected();
    this.logger.info({ node: this.state.amqpNode, from }, 'reading the event stream tail over AMQP');
  }

  /** Not caught up until a marker written now is read back. */
  private resync(): void {
    this.state.brokerCaughtUp = false;
    this.subscribedAtMs = Date.now();
    if (this.catchUpMarker !== undefined) this.markers.delete(this.catchUpMarker);
    this.catchUpMarker = this.publishMarker(() => this.caughtUp());
  }

  /**
   * One message of the tail. It is encoded as the stream would store it and goes through the same record path as a
   * chunk's record (skip what was processed, gather into digests, publish into the hub).
   */
  private onTailMessage(ch: Channel, msg: ConsumeMessage | null): void {
    if (msg === null) {
      // The broker cancelled the consumer (its stream member went away, or the stream was deleted): consume again.
      if (ch !== this.tailCurrent) return;
      this.tailConsuming = false;
      this.state.brokerCaughtUp = false;
      this.updateConnected();
      this.logger.warn({ node: this.state.amqpNode, nextOffset: this.nextOffset }, 'the broker cancelled the tail consumer; consuming again');
      setTimeout(() => {
        if (ch !== this.tailCurrent || this.stopping) return;
        this.consumeTail(ch).then(
          () => this.resync(),
          (err: unknown) =>
            this.logger.warn({ err: err instanceof Error ? err.message : String(err) }, 'tail consumer not started again; retrying on reconnect'),
        );
      }, RECONNECT_DELAY_MS).unref();
      return;
    }
    if (ch !== this.tailCurrent) return;
    this.tailAcks.add(ch, msg);
    const offset = deliveryOffset(msg);
    if (offset === undefined) {
      this.logger.error({ routingKey: msg.fields.routingKey }, 'stream delivery without an offset skipped');
      return;
    }
    const fresh = this.nextOffset === undefined || offset >= this.nextOffset;
    if (!this.tailStartLogged || (fresh && this.nextOffset !== undefined && offset > this.nextOffset)) {
      const fields = { node: this.state.amqpNode, offset, nextOffset: this.nextOffset };
      if (this.tailStartLogged) this.logger.warn(fields, 'unexpected stream delivery: offsets skipped');
      else this.logger.info(fields, 'first delivery of the tail subscription');
      this.tailStartLogged = true;
    }
    const { headers } = msg.properties;
    const bytes = encodeRecord({
      routingKey: msg.fields.routingKey,
      messageId: headerString(msg.properties.messageId),
      publishedAtHeader: headers?.['x-published-at-ms'],
      timestampSeconds: typeof msg.properties.timestamp === 'number' ? msg.properties.timestamp : undefined,
      syncId: headerString(headers?.[SYNC_MARKER_HEADER]),
      body: msg.content,
    });
    this.processRecords(bytes, offset, [[0, bytes.length]], this.digestEvents > 0);
  }

  /** A chunk that should never come: it starts beyond the next offset (offsets never read), or has an older epoch. */
  private unexpected(chunk: Chunk): boolean {
    return (this.nextOffset !== undefined && chunk.firstOffset > this.nextOffset) || (this.lastEpoch !== undefined && chunk.epoch < this.lastEpoch);
  }

  /**
   * Where each subscription starts (offset, epoch: which leader wrote it), and any unexpected chunk: a few lines per
   * reconnect, the evidence a failover investigation needs (issue 15).
   */
  private logChunk(conn: StreamConnection, chunk: Chunk): void {
    const fields = {
      node: `${conn.address.host}:${conn.address.port}`,
      chunkOffset: chunk.firstOffset,
      records: chunk.records.length,
      epoch: chunk.epoch,
      previousEpoch: this.lastEpoch,
      nextOffset: this.nextOffset,
    };
    if (this.startLogged) this.logger.warn(fields, 'unexpected stream chunk: offsets skipped or an older epoch');
    else this.logger.info(fields, 'first chunk of the subscription');
    this.startLogged = true;
  }

  private onRecord(offset: number, rec: StreamRecord | undefined): void {
    if (rec === undefined) {
      this.consumedInChunk++;
      this.logger.error({ offset }, 'unreadable stream record skipped');
      this.hub.skipPosition(offset);
      return;
    }
    if (rec.syncId !== undefined && (rec.routingKey === '' || rec.routingKey === this.names.stream)) {
      // A sync marker (ours or another instance's, sent through the default exchange): it takes an offset, like any
      // record. The header decides, not the routing key alone: a publisher's message with an empty routing key is
      // no marker, it is counted and dead-lettered like any invalid message.
      this.hub.skipPosition(offset);
      this.markerRead(rec.syncId);
      return;
    }
    // Counted once it is not a marker: markers are this service's bookkeeping, not messages.
    this.consumedInChunk++;
    // Checked, not parsed: the hub parses the body only if it needs the object.
    const c = classifyReceived(rec.routingKey, rec.body, this.config.BROKER_MAX_MESSAGE_BYTES);
    if (!c.ok) {
      this.logger.debug({ reason: c.reason, offset }, 'skipping an invalid stream message (dead-lettered by the validator)');
      this.hub.skipPosition(offset);
      return;
    }
    const at = publishedAtMs(rec.publishedAtHeader, rec.timestampSeconds);
    const event = this.hub.publishReceived(c.channel, rec.body, c.facts, {
      messageId: rec.messageId,
      position: offset,
      createdAtMs: at,
      // Replayed history is not live: it would swamp the latency histogram with its age.
      publishedAtMs: this.state.brokerCaughtUp ? at : undefined,
    });
    if (event !== undefined) this.publishedInChunk++;
    // Rare (a publisher's retry of a message the broker had stored after all): worth a line when a failover is examined.
    else this.logger.info({ offset, messageId: rec.messageId }, 'duplicate message id dropped');
  }

  private onValidateMessage(ch: ConfirmChannel, msg: ConsumeMessage | null): void {
    if (msg === null) return;
    const c = classify(msg.fields.routingKey, msg.content, this.config.BROKER_MAX_MESSAGE_BYTES);
    if (c.ok) {
      this.ackValid(ch, msg);
      return;
    }
    this.validAcks.flush(); // the valid ones before it are settled before this one is held back
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

  /**
   * Valid messages are acknowledged together (BatchedAcks), with one `multiple` ack: an ack frame per event was a
   * socket write per event on the live path. Not while a dead letter waits for its confirm: a
   * `multiple` ack would settle that message too before its dead letter is safe, so while one is out, valid messages are acked one by one.
   */
  private ackValid(ch: ConfirmChannel, msg: ConsumeMessage): void {
    if (this.inflight.size > 0) {
      this.validAcks.flush();
      ch.ack(msg);
      return;
    }
    this.validAcks.add(ch, msg);
  }

  private caughtUp(): void {
    if (this.state.brokerCaughtUp) return;
    if (!this.tailOverAmqp && this.config.STREAM_TAIL_READER === 'amqp') {
      this.handOver();
      // The AMQP connection is down at this moment: caught up once the tail consumer reads back a marker.
      if (!this.amqpConnected) return;
    }
    this.state.brokerCaughtUp = true;
    const replayMs = Date.now() - (this.readingSinceMs ?? this.subscribedAtMs);
    this.readingSinceMs = undefined;
    this.logger.info({ position: this.hub.latestPosition, replayMs, fromDigests: this.replayedFromDigests }, 'event stream caught up');
    this.state.notifyCaughtUp();
  }
}

/**
 * Acknowledges a consumer's deliveries together: one `multiple` ack of the latest, ACK_DELAY_MS after the first
 * unacknowledged one or once `maxPending` are waiting, whichever comes first. An ack per delivery was a socket write
 * per event; once per event-loop turn it still was at a live rate of a few hundred events/s, where each turn holds
 * one event (13.6 % of the live path's CPU in amqplib's writes, issue 13). A delivery on another channel first
 * settles the earlier one's.
 */
export class BatchedAcks {
  private pending: { ch: Channel; msg: ConsumeMessage } | undefined;
  private count = 0;
  private timer: NodeJS.Timeout | undefined;

  /** @param maxPending well below the channel's prefetch, so the broker never waits for an ack to send more */
  constructor(private readonly maxPending: number) {}

  add(ch: Channel, msg: ConsumeMessage): void {
    if (this.pending !== undefined && this.pending.ch !== ch) this.flush();
    this.pending = { ch, msg };
    if (++this.count >= this.maxPending) this.flush();
    else this.timer ??= setTimeout(() => this.flush(), ACK_DELAY_MS);
  }

  flush(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    this.count = 0;
    const pending = this.pending;
    this.pending = undefined;
    if (pending === undefined) return;
    try {
      pending.ch.ack(pending.msg, true);
    } catch {
      // The channel closed meanwhile: its unacknowledged messages come again (the validator's to the next active
      // validator, the tail's from the next offset), nothing is lost.
    }
  }
}

/** The offset RabbitMQ gives a stream message delivered over AMQP 0-9-1, or undefined. */
function deliveryOffset(msg: ConsumeMessage): number | undefined {
  const v: unknown = msg.properties.headers?.['x-stream-offset'];
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined;
}

/** A header that should be a string: amqplib gives a long string as a string, a byte array as a Buffer. */
function headerString(v: unknown): string | undefined {
  return typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * The stream-protocol address of a node, from its AMQP URL: same host, credentials and virtual host; the stream
 * port (RABBITMQ_STREAM_PORT); TLS when the URL is amqps.
 */
export function streamAddress(amqpUrl: string, port: number): StreamAddress {
  const u = new URL(amqpUrl);
  const path = u.pathname.length > 1 ? decodeURIComponent(u.pathname.slice(1)) : '/';
  return {
    host: u.hostname.replace(/^\[|\]$/g, ''),
    port,
    user: u.username === '' ? 'guest' : decodeURIComponent(u.username),
    password: u.password === '' ? 'guest' : decodeURIComponent(u.password),
    vhost: path,
    tls: u.protocol === 'amqps:',
  };
}
