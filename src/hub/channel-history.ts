import type { HubEvent } from './hub-event';

export interface HistoryOptions {
  /** Events kept per channel (0 disables history). */
  size: number;
  /** Events older than this are dropped (ms). */
  ttlMs: number;
  /** Channels with history kept; the least recently written is dropped beyond it. */
  maxChannels: number;
  /** Bytes the history may hold (0: no byte bound); beyond it the oldest events of all channels go first. */
  maxBytes?: number;
}

/** Why events left the history (the label of the evictions metric). */
export type EvictionReason = 'count' | 'age' | 'channels' | 'bytes';

interface ChannelLog {
  events: HubEvent[];
  /** Every event of this channel with a position above `floor` is in `events`. */
  floor: number;
  /** Set when the whole log was dropped (least recently written channel). */
  dropped: boolean;
}

/**
 * What one kept event costs beyond its frame's bytes: the HubEvent object, the Buffer object and its slots in the
 * channel's array and the age queue (V8 on 64-bit, rounded up). It makes the byte budget track the heap, not only
 * the payloads: with 300-byte frames it is about a third of the total.
 */
export const EVENT_OVERHEAD_BYTES = 160;

export interface Recovery {
  /** True when every event after `since` on the asked channels is returned; false when some are gone. */
  complete: boolean;
  events: HubEvent[];
}

/**
 * Bounded per-channel history with positions, for resume. A recovery is complete only when the history can prove
 * it holds every event after the client's position: each channel keeps a `floor` below which events may have
 * been dropped (by count, by age, or because this instance started reading later). Never a partial recovery
 * presented as complete.
 */
export class ChannelHistory {
  private readonly logs = new Map<string, ChannelLog>();
  /** Positions at or below this may be unknown to this instance (it started reading the stream after them). */
  private startFloor: number;
  /** The highest position of a channel log dropped whole (LRU); those channels' events below it are unknown. */
  private droppedFloor = -1;
  private lastPosition = -1;
  /** Every kept event in append (= position) order with its log, for the byte budget: oldest first, across channels.
   * Entries of events already dropped otherwise stay until they reach the head or a compaction. */
  private order: Array<{ event: HubEvent; log: ChannelLog }> = [];
  private orderHead = 0;
  private heldBytes = 0;
  private heldEvents = 0;
  private readonly maxBytes: number;
  /** Events dropped, by reason, since start. */
  readonly evicted: Record<EvictionReason, number> = { count: 0, age: 0, channels: 0, bytes: 0 };

  /**
   * @param startFloor the position this instance knows every later event of; `undefined` when it does not know yet
   * (broker mode before the first stream message): then no recovery is complete.
   */
  constructor(
    private readonly options: HistoryOptions,
    startFloor: number | undefined,
  ) {
    this.startFloor = startFloor ?? Number.MAX_SAFE_INTEGER;
    this.lastPosition = startFloor ?? -1;
    this.maxBytes = options.maxBytes ?? 0;
  }

  /** Bytes held (frames plus the per-event overhead) and events held. */
  get bytes(): number {
    return this.heldBytes;
  }

  get size(): number {
    return this.heldEvents;
  }

  /** The position this instance knows everything after (set when the broker consumer learns where it starts). */
  setStartFloor(floor: number): void {
    this.startFloor = floor;
    if (floor > this.lastPosition) this.lastPosition = floor;
  }

  /** Nothing happened on any channel up to `position` that is not already here. */
  advanceTo(position: number): void {
    if (position > this.lastPosition) this.lastPosition = position;
  }

  get latestPosition(): number {
    return this.lastPosition;
  }

  append(event: HubEvent): void {
    if (event.position > this.lastPosition) this.lastPosition = event.position;
    if (this.options.size === 0) return;
    let log = this.logs.get(event.channel);
    if (log === undefined) {
      log = { events: [], floor: Math.max(this.startFloor, this.droppedFloor), dropped: false };
      if (this.logs.size >= this.options.maxChannels) this.dropOldestChannel();
    } else {
      this.logs.delete(event.channel); // re-insert: Map order is the LRU order
    }
    this.logs.set(event.channel, log);
    log.events.push(event);
    this.heldBytes += cost(event);
    this.heldEvents++;
    if (this.maxBytes > 0) this.order.push({ event, log });
    if (log.events.length > this.options.size) this.removeHead(log, log.events.length - this.options.size, 'count');
    this.expire(log, event.receivedAtMs);
    if (this.maxBytes > 0) this.enforceBudget();
  }

  /** Drop the oldest events across all channels until the held bytes fit the budget; floors move with them. */
  private enforceBudget(): void {
    while (this.heldBytes > this.maxBytes && this.orderHead < this.order.length) {
      const { event, log } = this.order[this.orderHead++];
      // Still held: it is its log's first event (logs drop from their head only).
      if (!log.dropped && log.events.length > 0 && log.events[0] === event) this.removeHead(log, 1, 'bytes');
    }
    const stale = this.orderHead;
    const queued = this.order.length - stale;
    if (stale > 4096 && stale * 2 > this.order.length) {
      this.order = this.order.slice(stale);
      this.orderHead = 0;
    } else if (queued > 2 * this.heldEvents + 4096) {
      // Entries of events dropped by count or age pile up behind live ones: keep only the held events.
      this.order = this.order.slice(stale).filter(({ event, log }) => !log.dropped && log.events.length > 0 && event.position >= log.events[0].position);
      this.orderHead = 0;
    }
  }

  private removeHead(log: ChannelLog, n: number, reason: EvictionReason): void {
    const removed = log.events.splice(0, n);
    for (const e of removed) this.heldBytes -= cost(e);
    this.heldEvents -= removed.length;
    this.evicted[reason] += removed.length;
    log.floor = removed[removed.length - 1].position;
  }

  /** Events after `since` on `channels`, merged in position order. */
  since(channels: Iterable<string>, since: number, nowMs = Date.now()): Recovery {
    if (since > this.lastPosition) return { complete: since === this.lastPosition, events: [] };
    const events: HubEvent[] = [];
    let complete = true;
    for (const channel of channels) {
      const log = this.logs.get(channel);
      if (log === undefined) {
        if (since < Math.max(this.startFloor, this.droppedFloor)) complete = false;
        continue;
      }
      this.expire(log, nowMs);
      if (since < log.floor) complete = false;
      for (let i = log.events.length - 1; i >= 0 && log.events[i].position > since; i--) events.push(log.events[i]);
    }
    events.sort((a, b) => a.position - b.position);
    return { complete, events };
  }

  private expire(log: ChannelLog, nowMs: number): void {
    const cutoff = nowMs - this.options.ttlMs;
    let n = 0;
    while (n < log.events.length && log.events[n].receivedAtMs < cutoff) n++;
    if (n > 0) this.removeHead(log, n, 'age');
  }

  private dropOldestChannel(): void {
    const oldest = this.logs.entries().next();
    if (oldest.done === true) return;
    const [channel, log] = oldest.value;
    this.logs.delete(channel);
    log.dropped = true;
    for (const e of log.events) this.heldBytes -= cost(e);
    this.heldEvents -= log.events.length;
    this.evicted.channels += log.events.length;
    const last = log.events.length > 0 ? log.events[log.events.length - 1].position : log.floor;
    if (last > this.droppedFloor) this.droppedFloor = last;
  }
}

function cost(e: HubEvent): number {
  return e.frame.length + EVENT_OVERHEAD_BYTES;
}
