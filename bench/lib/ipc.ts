/**
 * Messages between the orchestrator (`run.ts`) and its child processes (client workers, publisher). Child
 * processes are `child_process.fork`ed so the load runs on other event loops than the one measuring it.
 */

/** One socket a client worker opens: `url` is complete (host, path, query) but without the token. */
export interface SocketSpec {
  url: string;
  /** The channel (routing key) this socket reads events of, e.g. `execution.17`. */
  channel: string;
  userId: number;
}

/** Delivery accounting of one channel, summed over a worker's sockets on that channel. */
export interface ChannelTally {
  sockets: number;
  /** Events received (counting every copy). */
  received: number;
  /** Events received whose `seq` this socket had already received. */
  duplicates: number;
  /** Events received with a `seq` lower than the highest one the socket had seen (and not a duplicate). */
  reordered: number;
  /** Sum over sockets of (events published on the channel) minus (distinct events received). */
  missing: number;
  /** Frames received carrying events (a batch frame counts once). */
  frames: number;
}

export type WorkerCommand =
  | { cmd: 'connect'; sockets: SocketSpec[]; ratePerSec: number; secret: string; retries: number }
  | { cmd: 'reset'; recordLatency: boolean }
  | { cmd: 'track'; everyMs: number }
  | { cmd: 'untrack' }
  | { cmd: 'collect'; published: Record<string, number> }
  | { cmd: 'closeAll' }
  | {
      cmd: 'churn';
      sockets: SocketSpec[];
      ratePerSec: number;
      holdMs: number;
      durationMs: number;
      secret: string;
    }
  | { cmd: 'exit' };

export interface ConnectResult {
  ev: 'connected';
  /** From the first open to the last socket settled (connected or failed). */
  seconds: number;
  opened: number;
  failed: number;
  /** ms from `new WebSocket()` to the `connection` frame, one per socket that got it. */
  connectMs: number[];
  /** ms from the socket's `open` event (upgrade done) to the `connection` frame. */
  openToFrameMs: number[];
  errors: Record<string, number>;
}

export interface CollectResult {
  ev: 'collected';
  /** Publish-to-receive latencies in ms (only while `recordLatency` was on). */
  latencyMs: number[];
  /** Publication time of each latency sample (CLOCK_MONOTONIC ms), same order. */
  sentMs: number[];
  channels: Record<string, ChannelTally>;
  /** Events received, per server port (for the multi-instance run). */
  receivedByPort: Record<string, number>;
  /** Sockets closed by the server or failed since the last reset, by close code / error. */
  unexpected: Record<string, number>;
}

export interface ChurnResult {
  ev: 'churned';
  attempted: number;
  completed: number;
  errors: Record<string, number>;
  connectMs: number[];
}

export type WorkerReply =
  { ev: 'ready' } | ConnectResult | { ev: 'reset' } | { ev: 'progress'; min: Record<string, number> } | CollectResult | { ev: 'closed' } | ChurnResult;

export type PublisherCommand =
  | { cmd: 'open'; url: string }
  | {
      cmd: 'open-loop';
      exchange: string;
      channels: string[];
      ratePerSec: number;
      durationMs: number;
    }
  | { cmd: 'closed-loop'; exchange: string; channels: string[]; window: number; durationMs: number }
  | { cmd: 'progress'; min: Record<string, number> }
  | { cmd: 'prefill'; exchange: string; channels: number; events: number }
  | { cmd: 'close' };

export interface PublishResult {
  ev: 'published';
  /** Events published (and confirmed) per channel; each channel's `seq` runs 1..n. */
  published: Record<string, number>;
  total: number;
  nacked: number;
  elapsedMs: number;
  /** Achieved rate (events/s) over elapsedMs. */
  rate: number;
  /** Set when the run could not be completed. */
  error?: string;
}

/** History published before a hub starts: `events` over `channels` channels, as fast as confirms allow. */
export interface PrefillResult {
  ev: 'prefilled';
  events: number;
  /** Bytes of the message bodies published. */
  bytes: number;
  elapsedMs: number;
  nacked: number;
  error?: string;
}

export type PublisherReply = { ev: 'ready' } | { ev: 'opened' } | PublishResult | PrefillResult | { ev: 'closed' };
