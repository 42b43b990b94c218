import type { EndpointKind } from '../metrics/metric-names';

/** One published event, serialized once; every subscriber gets the same bytes. */
export interface HubEvent {
  readonly channel: string;
  /** Where the event sits in the global order (stream offset with a broker; a process counter without). */
  readonly position: number;
  /** The frame as sent: the publisher's object plus `channel`, `position` and, when absent, `timestamp`. */
  readonly frame: Buffer;
  /** When the publisher says it published the event (epoch ms); used for the latency metric. */
  readonly publishedAtMs: number | undefined;
  /** When this instance received it (epoch ms); bounds history by age. */
  readonly receivedAtMs: number;
}

/**
 * What the hub asks of a received JSON object before it needs the object itself (the broker consumer learns it while
 * checking the JSON, see messaging/json-scan.ts). Members named twice: the last one counts, as in JSON.parse.
 */
export interface ObjectFacts {
  /** The value of `type` when it is a string, else undefined. */
  type: string | undefined;
  channel: boolean;
  position: boolean;
  /** `timestamp`: absent, a string, or another value. */
  timestamp: 'string' | 'other' | undefined;
  data: boolean;
}

/** What the hub needs of a socket. The hub knows no framework and no WebSocket library. */
export interface Subscriber {
  readonly kind: EndpointKind;
  /** The client accepts `batch` frames (several events coalesced in one frame). */
  readonly batch: boolean;
  /**
   * Write one prepared frame holding `events` events. Returns false when the frame was not written (socket gone,
   * or the subscriber was closed for being too slow); the hub counts that as a drop.
   */
  write(frame: Buffer, events: number): boolean;
}

/** Valid channel names; ids are positive integers (Django primary keys). */
export const CHANNEL_PATTERN = /^(?:(?:execution|pipeline|project|user)\.[1-9]\d{0,18}|monitor|system)$/;

export function isChannel(name: string): boolean {
  return CHANNEL_PATTERN.test(name);
}
