import { isoTime } from '../common/iso-time';
import { Slab } from '../common/slab';
import { ENDPOINT_KINDS, type EndpointKind } from '../metrics/metric-names';
import { ChannelHistory, type HistoryOptions } from './channel-history';
import { ExecutionSnapshots } from './execution-snapshots';
import { IdWindow } from './id-window';
import { KnownEventType } from './frame-types';
import type { HubEvent, ObjectFacts, Subscriber } from './hub-event';

/** What the hub reports; implemented by the metrics service, a no-op in unit tests. */
export interface HubStats {
  delivered(kind: EndpointKind, frames: number, events: number, bytes: number): void;
  observeLatency(kind: EndpointKind, seconds: number): void;
  droppedEvents(kind: EndpointKind, reason: string, count: number): void;
  duplicate(): void;
}

export interface HubOptions {
  history: HistoryOptions;
  /** How many message ids to remember for de-duplication. */
  dedupWindow: number;
  /** Coalescing window for `batch` subscribers (ms); 0 flushes on the next turn of the event loop. */
  batchWindowMs: number;
  batchMaxEvents: number;
  /** Positions come from the broker's stream (set by the consumer) instead of this process's counter. */
  externalPositions: boolean;
}

export interface PublishMeta {
  /** Idempotency key: an event with an id seen before is dropped. */
  messageId?: string;
  /** The event's position (the stream offset); assigned by the hub when absent (no broker). */
  position?: number;
  /** When the publisher says it published the event (epoch ms), for the latency metric: only for live events. */
  publishedAtMs?: number;
  /**
   * When the publisher says it published the event, for the frame's `timestamp` when the body has none (also for
   * replayed events, which must keep the time they happened, not get the time of the replay). Default:
   * `publishedAtMs`, else now.
   */
  createdAtMs?: number;
  /**
   * The body's JSON text as received (the broker message), when `body` was parsed from it: the frame is then these
   * bytes with `channel` and `position` (and `timestamp` when absent) appended, instead of serializing `body` again.
   * The replay of a restart spends most of its time on that serialization.
   */
  raw?: Buffer;
}

interface Channel {
  /** Subscribers that get one frame per event. */
  readonly single: Set<Subscriber>;
  /** Subscribers that get `batch` frames; they share one frame per channel and flush. */
  readonly batched: Set<Subscriber>;
  pending: HubEvent[];
}

export interface SubscribeResult {
  /** Only when `since` was given: whether every missed event could be replayed. */
  recovered?: boolean;
  missed: number;
}

const NO_STATS: HubStats = { delivered: () => undefined, observeLatency: () => undefined, droppedEvents: () => undefined, duplicate: () => undefined };
const BATCH_HEAD = Buffer.from('{"type":"batch","events":[');
const COMMA = Buffer.from(',');
const BATCH_TAIL = Buffer.from(']}');

/**
 * Channels and their subscribers. `publish` serializes an event once and writes the same bytes to every
 * subscriber of its channel; it also keeps the bounded history (resume) and the execution snapshots. The hub
 * knows nothing of NestJS, WebSocket libraries or the broker.
 */
export class Hub {
  readonly history: ChannelHistory;
  readonly snapshots = new ExecutionSnapshots();
  private readonly channels = new Map<string, Channel>();
  /** The last DEDUP_WINDOW message ids. */
  private readonly seenIds: IdWindow;
  private readonly dirty = new Set<Channel>();
  private flushTimer: NodeJS.Timeout | undefined;
  /** Without a broker, positions start from the clock so a restarted process never reuses an old position. */
  private nextPosition = Date.now() * 1000;
  private lastEventAtMs: number | undefined;
  private published = 0;
  private readonly positionWaiters = new Set<{ position: number; done: () => void }>();
  private readonly okTally = zeroTally();
  private readonly failedTally = zeroTally();

  constructor(
    private readonly options: HubOptions,
    private readonly stats: HubStats = NO_STATS,
  ) {
    this.history = new ChannelHistory(options.history, options.externalPositions ? undefined : this.nextPosition - 1);
    this.seenIds = new IdWindow(options.dedupWindow);
  }

  /** The broker consumer learnt where it starts reading: every event after `startFloor` will pass through here. */
  useExternalPositions(startFloor: number): void {
    this.history.setStartFloor(startFloor);
  }

  get latestPosition(): number {
    return this.history.latestPosition;
  }

  /**
   * A stream offset that carries no event for clients (a sync marker, an invalid message): positions still move
   * past it, so every instance that read it reports the same latest position and a resume from it is complete.
   */
  skipPosition(position: number): void {
    this.history.advanceTo(position);
    if (this.positionWaiters.size > 0) for (const w of this.positionWaiters) if (position >= w.position) w.done();
  }

  /**
   * Resolves once an event at or after `position` has passed through the hub, or after `timeoutMs`. A client
   * resuming here may come from an instance a little ahead on the stream: answered at once, its position would look
   * newer than anything this instance knows and the recovery would be refused although the events are on their way.
   * An instance that has read nothing yet (-1: no event in the replayed window) does not wait: it cannot tell.
   */
  waitForPosition(position: number, timeoutMs: number): Promise<void> {
    const latest = this.history.latestPosition;
    if (latest >= position || latest < 0) return Promise.resolve();
    return new Promise((resolve) => {
      const waiter = {
        position,
        done: (): void => {
          clearTimeout(timer);
          this.positionWaiters.delete(waiter);
          resolve();
        },
      };
      const timer = setTimeout(waiter.done, timeoutMs).unref();
      this.positionWaiters.add(waiter);
    });
  }

  get channelCount(): number {
    return this.channels.size;
  }

  get publishedCount(): number {
    return this.published;
  }

  get lastEventAt(): number | undefined {
    return this.lastEventAtMs;
  }

  /**
   * Publish one event to `channel`. `body` is the publisher's object (with a string `type`); it is relayed
   * unchanged but for `channel`, `position`, a `timestamp` when it has none, and `data` on notifications.
   * Returns the event, or undefined when it was a duplicate.
   */
  publish(channel: string, body: Record<string, unknown>, meta: PublishMeta = {}): HubEvent | undefined {
    if (meta.messageId !== undefined && !this.seenIds.add(meta.messageId)) {
      this.stats.duplicate();
      return undefined;
    }
    const now = Date.now();
    const position = meta.position ?? this.nextPosition++;
    const atMs = meta.createdAtMs ?? meta.publishedAtMs ?? now;
    const spliced = meta.raw !== undefined ? spliceFrame(meta.raw, body, channel, position, atMs) : undefined;
    if (spliced !== undefined) return this.accept(channel, position, spliced, body, meta.publishedAtMs, now, frames.lastStore, frames.lastOffset);
    return this.accept(channel, position, buildFrame(body, channel, position, atMs), body, meta.publishedAtMs, now);
  }

  /**
   * `publish` for a broker message's JSON object, checked but not parsed (`raw`, and what the hub asks of it in
   * `facts`): the same frame, history, snapshot and de-duplication as `publish(channel, JSON.parse(raw), { raw, … })`.
   * The object is parsed only when an execution snapshot uses the event or the frame cannot be spliced from `raw`.
   */
  publishReceived(channel: string, raw: Buffer, facts: ObjectFacts, meta: Omit<PublishMeta, 'raw'> = {}): HubEvent | undefined {
    if (meta.messageId !== undefined && !this.seenIds.add(meta.messageId)) {
      this.stats.duplicate();
      return undefined;
    }
    const now = Date.now();
    const position = meta.position ?? this.nextPosition++;
    const atMs = meta.createdAtMs ?? meta.publishedAtMs ?? now;
    let body = this.snapshots.uses(channel, facts.type) ? parseObject(raw) : undefined;
    const spliced = spliceable(facts.type, facts.channel, facts.position, facts.timestamp, facts.data) ? spliceBytes(raw, channel, position, atMs, facts.timestamp === undefined) : undefined;
    if (spliced !== undefined) return this.accept(channel, position, spliced, body, meta.publishedAtMs, now, frames.lastStore, frames.lastOffset);
    body ??= parseObject(raw);
    return this.accept(channel, position, buildFrame(body, channel, position, atMs), body, meta.publishedAtMs, now);
  }

  /**
   * Keep and fan out a published event; `body` (when parsed) updates the execution snapshots. `store` and `offset`:
   * where the frame lies, when the caller knows (a frame cut from `frames`).
   */
  private accept(
    channel: string,
    position: number,
    frame: Buffer,
    body: Record<string, unknown> | undefined,
    publishedAtMs: number | undefined,
    now: number,
    store?: ArrayBufferLike,
    offset?: number,
  ): HubEvent {
    const event: HubEvent = { channel, position, frame, publishedAtMs, receivedAtMs: now };
    this.published++;
    this.lastEventAtMs = now;
    this.history.append(event, store, offset);
    if (body !== undefined) this.snapshots.apply(channel, body);
    if (this.positionWaiters.size > 0) for (const w of this.positionWaiters) if (position >= w.position) w.done();
    const ch = this.channels.get(channel);
    if (ch !== undefined) this.fanOut(ch, event);
    return event;
  }

  /**
   * Add `sub` to `channels`. With `since`, first write every event after that position (in order) and report
   * whether the recovery is complete; all of it happens before any live event can reach `sub`.
   */
  subscribe(sub: Subscriber, channels: readonly string[], since?: number, beforeReplay?: (recovered: boolean, missed: number) => void): SubscribeResult {
    const result: SubscribeResult = { missed: 0 };
    for (const name of channels) {
      const ch = this.channel(name);
      // A batched subscriber joining mid-window must not receive events from before it joined in the next flush.
      if (sub.batch && ch.pending.length > 0) this.flushChannel(ch);
    }
    if (since !== undefined) {
      const recovery = this.history.since(channels, since);
      result.recovered = recovery.complete;
      beforeReplay?.(recovery.complete, recovery.complete ? recovery.events.length : 0);
      if (recovery.complete) {
        for (const e of recovery.events) sub.write(e.frame, 1);
        result.missed = recovery.events.length;
      }
    }
    for (const name of channels) {
      const ch = this.channel(name);
      (sub.batch ? ch.batched : ch.single).add(sub);
    }
    return result;
  }

  unsubscribe(sub: Subscriber, channels: Iterable<string>): void {
    for (const name of channels) {
      const ch = this.channels.get(name);
      if (ch === undefined) continue;
      ch.single.delete(sub);
      ch.batched.delete(sub);
      if (ch.single.size === 0 && ch.batched.size === 0 && ch.pending.length === 0) this.channels.delete(name);
    }
  }

  /** Flush pending batches now (shutdown). */
  flush(): void {
    if (this.flushTimer !== undefined) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const ch of this.dirty) this.flushChannel(ch);
    this.dirty.clear();
  }

  private channel(name: string): Channel {
    let ch = this.channels.get(name);
    if (ch === undefined) {
      ch = { single: new Set(), batched: new Set(), pending: [] };
      this.channels.set(name, ch);
    }
    return ch;
  }

  private fanOut(ch: Channel, event: HubEvent): void {
    if (ch.single.size > 0) this.writeAll(ch.single, event.frame, 1, event.publishedAtMs);
    if (ch.batched.size > 0) {
      ch.pending.push(event);
      if (ch.pending.length >= this.options.batchMaxEvents) this.flushChannel(ch);
      else {
        this.dirty.add(ch);
        this.flushTimer ??= setTimeout(() => this.flush(), this.options.batchWindowMs);
      }
    }
  }

  private flushChannel(ch: Channel): void {
    const events = ch.pending;
    if (events.length === 0) return;
    ch.pending = [];
    this.dirty.delete(ch);
    let frame: Buffer;
    if (events.length === 1) frame = events[0].frame;
    else {
      const parts: Buffer[] = [BATCH_HEAD];
      events.forEach((e, i) => {
        if (i > 0) parts.push(COMMA);
        parts.push(e.frame);
      });
      parts.push(BATCH_TAIL);
      frame = Buffer.concat(parts);
    }
    this.writeAll(ch.batched, frame, events.length, events[0].publishedAtMs);
  }

  /**
   * The hot loop: one prepared frame to every subscriber. Counters are tallied per endpoint kind in two reused
   * records (no allocation per fan-out) and reported once per kind afterwards.
   */
  private writeAll(subs: Set<Subscriber>, frame: Buffer, events: number, publishedAtMs: number | undefined): void {
    const ok = this.okTally;
    const failed = this.failedTally;
    for (const sub of subs) {
      if (sub.write(frame, events)) ok[sub.kind]++;
      else failed[sub.kind]++;
    }
    const seconds = publishedAtMs === undefined ? undefined : Math.max(0, Date.now() - publishedAtMs) / 1000;
    for (const kind of ENDPOINT_KINDS) {
      const n = ok[kind];
      if (n > 0) {
        this.stats.delivered(kind, n, n * events, n * frame.length);
        if (seconds !== undefined) this.stats.observeLatency(kind, seconds);
        ok[kind] = 0;
      }
      if (failed[kind] > 0) {
        this.stats.droppedEvents(kind, 'socket_not_writable', failed[kind] * events);
        failed[kind] = 0;
      }
    }
  }
}

/** The frame: the publisher's object plus `channel`, `position`, a `timestamp` when it has none, `data` on notifications. */
function buildFrame(body: Record<string, unknown>, channel: string, position: number, atMs: number): Buffer {
  const out: Record<string, unknown> = { ...body, channel, position };
  if (typeof out.timestamp !== 'string') out.timestamp = isoTime(atMs);
  if (body.type === KnownEventType.SystemNotification && out.data === undefined) {
    // The frontend's notification bell reads `data`; older code reads the flat fields: send both.
    out.data = { level: body.level, title: body.title, message: body.message };
  }
  return Buffer.from(JSON.stringify(out));
}

const CLOSE_BRACE = 0x7d;

/**
 * The same frame as `buildFrame`, from the received JSON text: everything up to its closing brace, then
 * `,"channel":…,"position":…` and `,"timestamp":…` when the body has none, then `}`. Only when that gives the same
 * object: the body has no `channel` or `position` of its own, its `timestamp` is a string or absent, and it is not a
 * notification that needs `data` (those go through `buildFrame`).
 */
function spliceFrame(raw: Buffer, body: Record<string, unknown>, channel: string, position: number, atMs: number): Buffer | undefined {
  const stamp = body.timestamp;
  if (stamp === undefined && 'timestamp' in body) return undefined;
  const timestamp = stamp === undefined ? undefined : typeof stamp === 'string' ? 'string' : 'other';
  if (!spliceable(body.type, 'channel' in body, 'position' in body, timestamp, body.data !== undefined)) return undefined;
  return spliceBytes(raw, channel, position, atMs, stamp === undefined);
}

/** Whether `spliceBytes` makes the frame `buildFrame` would, for a body with these members. */
function spliceable(type: unknown, hasChannel: boolean, hasPosition: boolean, timestamp: ObjectFacts['timestamp'], hasData: boolean): boolean {
  if (timestamp === 'other' || hasChannel || hasPosition) return false;
  return !(type === KnownEventType.SystemNotification && !hasData);
}

/** The received JSON object's bytes up to its closing brace, then `channel`, `position` and, when asked, `timestamp`. */
function spliceBytes(raw: Buffer, channel: string, position: number, atMs: number, withTimestamp: boolean): Buffer | undefined {
  let end = raw.length - 1;
  while (end > 0 && raw[end] !== CLOSE_BRACE) end--;
  if (end <= 1) return undefined;
  // An empty object is not a valid event (no `type`), so there is always a member before the brace. One allocation:
  // the tail is ASCII (a channel name matches CHANNEL_PATTERN), so its length in bytes is its length in characters.
  const tail = withTimestamp
    ? `,"channel":"${channel}","position":${position},"timestamp":"${isoTime(atMs)}"}`
    : `,"channel":"${channel}","position":${position}}`;
  const frame = frames.alloc(end + tail.length);
  raw.copy(frame, 0, 0, end);
  frame.write(tail, end, 'latin1');
  return frame;
}

/** A received body checked to be a JSON object (by the broker consumer), parsed. */
function parseObject(raw: Buffer): Record<string, unknown> {
  return JSON.parse(raw.toString('utf8')) as Record<string, unknown>;
}

/** Frames built from received bytes: kept by the history, so they share slabs with each other only. */
const frames = new Slab();

function zeroTally(): Record<EndpointKind, number> {
  return { monitor: 0, execution: 0, pipeline: 0, project: 0, system: 0 };
}
