import type { HubEvent } from './hub-event';

export interface HistoryOptions {
  /** Events kept per channel (0 disables history). */
  size: number;
  /** Events older than this are dropped (ms). */
  ttlMs: number;
  /** Channels with history kept; the least recently written is dropped beyond it. */
  maxChannels: number;
}

interface ChannelLog {
  events: HubEvent[];
  /** Every event of this channel with a position above `floor` is in `events`. */
  floor: number;
}

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
  }

  /** The position this instance knows everything after (set when the broker consumer learns where it starts). */
  setStartFloor(floor: number): void {
    this.startFloor = floor;
    if (floor > this.lastPosition) this.lastPosition = floor;
  }

  get latestPosition(): number {
    return this.lastPosition;
  }

  append(event: HubEvent): void {
    if (event.position > this.lastPosition) this.lastPosition = event.position;
    if (this.options.size === 0) return;
    let log = this.logs.get(event.channel);
    if (log === undefined) {
      log = { events: [], floor: Math.max(this.startFloor, this.droppedFloor) };
      if (this.logs.size >= this.options.maxChannels) this.dropOldestChannel();
    } else {
      this.logs.delete(event.channel); // re-insert: Map order is the LRU order
    }
    this.logs.set(event.channel, log);
    log.events.push(event);
    if (log.events.length > this.options.size) {
      const removed = log.events.splice(0, log.events.length - this.options.size);
      log.floor = removed[removed.length - 1].position;
    }
    this.expire(log, event.receivedAtMs);
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
    if (n > 0) {
      log.floor = log.events[n - 1].position;
      log.events.splice(0, n);
    }
  }

  private dropOldestChannel(): void {
    const oldest = this.logs.entries().next();
    if (oldest.done === true) return;
    const [channel, log] = oldest.value;
    this.logs.delete(channel);
    const last = log.events.length > 0 ? log.events[log.events.length - 1].position : log.floor;
    if (last > this.droppedFloor) this.droppedFloor = last;
  }
}
