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

/**
 * One channel's kept events, oldest first from `head`: parallel arrays rather than objects. A frame is kept as the
 * memory it lies in (the slab's ArrayBuffer, shared by many frames), its offset and its length, not as a Buffer
 * object of its own (~97 B each, and one more object per event for the collector to trace): a kept event costs its
 * bytes and five array slots. A Buffer is made again when a resume needs the frame. Entries before `head` are
 * dropped and are cut off once they are half the arrays.
 */
interface ChannelLog {
  stores: ArrayBufferLike[];
  offsets: number[];
  lengths: number[];
  positions: number[];
  receivedAtMs: number[];
  head: number;
  /** Every event of this channel with a position above `floor` is kept. */
  floor: number;
  /** Set when the whole log was dropped (least recently written channel). */
  dropped: boolean;
  /** Neighbours in the least-recently-written order (a list: moving a log to its end is two pointer updates). */
  older: ChannelLog | undefined;
  newer: ChannelLog | undefined;
  readonly channel: string;
}

/**
 * What one kept event costs beyond its frame's bytes: its slots in the log's five arrays and in the byte budget's
 * age order (8 B each on 64-bit), the arrays' growth slack and the slab bytes lost to alignment and to slab ends.
 * It makes the byte budget track the process's memory, not only the payloads.
 */
export const EVENT_OVERHEAD_BYTES = 96;

/** An event found for a resume. */
export interface KeptEvent {
  position: number;
  frame: Buffer;
}

export interface Recovery {
  /** True when every event after `since` on the asked channels is returned; false when some are gone. */
  complete: boolean;
  events: KeptEvent[];
}

/**
 * Bounded per-channel history with positions, for resume. A recovery is complete only when the history can prove
 * it holds every event after the client's position: each channel keeps a `floor` below which events may have
 * been dropped (by count, by age, by the byte budget, or because this instance started reading later). Never a
 * partial recovery presented as complete.
 */
export class ChannelHistory {
  private readonly logs = new Map<string, ChannelLog>();
  /** The least and the most recently written logs. */
  private oldestLog: ChannelLog | undefined;
  private newestLog: ChannelLog | undefined;
  /** Positions at or below this may be unknown to this instance (it started reading the stream after them). */
  private startFloor: number;
  /** The highest position of a channel log dropped whole (LRU); those channels' events below it are unknown. */
  private droppedFloor = -1;
  private lastPosition = -1;
  /**
   * Every kept event in append (= position) order, as its log and position, for the byte budget: oldest first,
   * across channels. Entries of events already dropped otherwise stay until they reach the head or a compaction.
   */
  private orderLogs: ChannelLog[] = [];
  private orderPositions: number[] = [];
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

  /**
   * Keep `event` (its channel, position, frame and arrival time; the object itself is not retained). `store` and
   * `offset`: the memory the frame lies in and its offset there, when the caller knows them (reading them off the
   * Buffer was ~5 % of a replay's CPU).
   */
  append(event: HubEvent, store: ArrayBufferLike = event.frame.buffer, offset: number = event.frame.byteOffset): void {
    const { channel, position } = event;
    if (position > this.lastPosition) this.lastPosition = position;
    if (this.options.size === 0) return;
    let log = this.logs.get(channel);
    if (log === undefined) {
      if (this.logs.size >= this.options.maxChannels) this.dropOldestChannel();
      const floor = Math.max(this.startFloor, this.droppedFloor);
      log = { stores: [], offsets: [], lengths: [], positions: [], receivedAtMs: [], head: 0, floor, dropped: false, older: undefined, newer: undefined, channel };
      this.logs.set(channel, log);
      this.linkNewest(log);
    } else if (log !== this.newestLog) {
      this.unlink(log);
      this.linkNewest(log);
    }
    const frame = event.frame;
    log.stores.push(store);
    log.offsets.push(offset);
    log.lengths.push(frame.length);
    log.positions.push(position);
    log.receivedAtMs.push(event.receivedAtMs);
    this.heldBytes += frame.length + EVENT_OVERHEAD_BYTES;
    this.heldEvents++;
    if (this.maxBytes > 0) {
      this.orderLogs.push(log);
      this.orderPositions.push(position);
    }
    const kept = log.positions.length - log.head;
    if (kept > this.options.size) this.removeHead(log, kept - this.options.size, 'count');
    this.expire(log, event.receivedAtMs);
    if (this.maxBytes > 0) this.enforceBudget();
  }

  /** Drop the oldest events across all channels until the held bytes fit the budget; floors move with them. */
  private enforceBudget(): void {
    while (this.heldBytes > this.maxBytes && this.orderHead < this.orderLogs.length) {
      const log = this.orderLogs[this.orderHead];
      const position = this.orderPositions[this.orderHead++];
      // Still held: it is its log's first event (logs drop from their head only).
      if (!log.dropped && log.head < log.positions.length && log.positions[log.head] === position) this.removeHead(log, 1, 'bytes');
    }
    const stale = this.orderHead;
    const queued = this.orderLogs.length - stale;
    if (stale > 4096 && stale * 2 > this.orderLogs.length) {
      this.orderLogs = this.orderLogs.slice(stale);
      this.orderPositions = this.orderPositions.slice(stale);
      this.orderHead = 0;
    } else if (queued > 2 * this.heldEvents + 4096) {
      // Entries of events dropped by count or age pile up behind live ones: keep only the held events.
      const logs: ChannelLog[] = [];
      const positions: number[] = [];
      for (let i = stale; i < this.orderLogs.length; i++) {
        const log = this.orderLogs[i];
        const position = this.orderPositions[i];
        if (!log.dropped && log.head < log.positions.length && position >= log.positions[log.head]) {
          logs.push(log);
          positions.push(position);
        }
      }
      this.orderLogs = logs;
      this.orderPositions = positions;
      this.orderHead = 0;
    }
  }

  private removeHead(log: ChannelLog, n: number, reason: EvictionReason): void {
    const end = log.head + n;
    for (let i = log.head; i < end; i++) this.heldBytes -= log.lengths[i] + EVENT_OVERHEAD_BYTES;
    this.heldEvents -= n;
    this.evicted[reason] += n;
    log.floor = log.positions[end - 1];
    if (end === log.positions.length) clear(log);
    else if (end > 64 && end * 2 > log.positions.length) {
      log.stores = log.stores.slice(end);
      log.offsets = log.offsets.slice(end);
      log.lengths = log.lengths.slice(end);
      log.positions = log.positions.slice(end);
      log.receivedAtMs = log.receivedAtMs.slice(end);
      log.head = 0;
    } else {
      // Let go of the slabs now (a slab is freed once no kept frame lies in it); the slots are cut off later.
      for (let i = log.head; i < end; i++) log.stores[i] = EMPTY;
      log.head = end;
    }
  }

  /** Events after `since` on `channels`, merged in position order. */
  since(channels: Iterable<string>, since: number, nowMs = Date.now()): Recovery {
    if (since > this.lastPosition) return { complete: since === this.lastPosition, events: [] };
    const events: KeptEvent[] = [];
    let complete = true;
    for (const channel of channels) {
      const log = this.logs.get(channel);
      if (log === undefined) {
        if (since < Math.max(this.startFloor, this.droppedFloor)) complete = false;
        continue;
      }
      this.expire(log, nowMs);
      if (since < log.floor) complete = false;
      for (let i = log.positions.length - 1; i >= log.head && log.positions[i] > since; i--) {
        events.push({ position: log.positions[i], frame: Buffer.from(log.stores[i], log.offsets[i], log.lengths[i]) });
      }
    }
    events.sort((a, b) => a.position - b.position);
    return { complete, events };
  }

  private expire(log: ChannelLog, nowMs: number): void {
    const cutoff = nowMs - this.options.ttlMs;
    let n = 0;
    const times = log.receivedAtMs;
    while (log.head + n < times.length && times[log.head + n] < cutoff) n++;
    if (n > 0) this.removeHead(log, n, 'age');
  }

  private linkNewest(log: ChannelLog): void {
    log.older = this.newestLog;
    log.newer = undefined;
    if (this.newestLog !== undefined) this.newestLog.newer = log;
    else this.oldestLog = log;
    this.newestLog = log;
  }

  private unlink(log: ChannelLog): void {
    if (log.older !== undefined) log.older.newer = log.newer;
    else this.oldestLog = log.newer;
    if (log.newer !== undefined) log.newer.older = log.older;
    else this.newestLog = log.older;
    log.older = undefined;
    log.newer = undefined;
  }

  private dropOldestChannel(): void {
    const log = this.oldestLog;
    if (log === undefined) return;
    this.unlink(log);
    this.logs.delete(log.channel);
    log.dropped = true;
    const kept = log.positions.length - log.head;
    for (let i = log.head; i < log.positions.length; i++) this.heldBytes -= log.lengths[i] + EVENT_OVERHEAD_BYTES;
    this.heldEvents -= kept;
    this.evicted.channels += kept;
    const last = kept > 0 ? log.positions[log.positions.length - 1] : log.floor;
    if (last > this.droppedFloor) this.droppedFloor = last;
    clear(log);
  }
}

const EMPTY = new ArrayBuffer(0);

function clear(log: ChannelLog): void {
  log.stores = [];
  log.offsets = [];
  log.lengths = [];
  log.positions = [];
  log.receivedAtMs = [];
  log.head = 0;
}
