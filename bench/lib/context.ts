import type { Broker } from './broker';
import { Child } from './children';
import { Hub, type HubKind, type HubOptions } from './hubs';
import type {
  ChannelTally,
  PrefillResult,
  CollectResult,
  ConnectResult,
  PublisherCommand,
  PublisherReply,
  PublishResult,
  SocketSpec,
  WorkerCommand,
  WorkerReply,
} from './ipc';
import type { Options } from './options';
import { addCounts, distribution, type Distribution } from './stats';
import { sleep } from './proc';

export type Worker = Child<WorkerCommand, WorkerReply>;
export type Publisher = Child<PublisherCommand, PublisherReply>;

/** A figure of a scenario run against one hub (number, or a string for a reason / an error). */
export type Figures = Record<string, number | string | boolean>;

/** `fresh`: every hub starts on an empty exchange; `history`: on one pre-filled with a deployed instance's history. */
export type Mode = 'fresh' | 'history';

/** What every scenario gets: the load processes, the options and the means to start hubs. */
export class Context {
  /** Set by the runner before each scenario run. */
  mode: Mode = 'fresh';
  /** Figures of the last `startHubs` (pre-fill, time to ready), merged into the scenario's figures by the runner. */
  startFigures: Figures = {};
  private exchangeCount = 0;
  readonly exchanges: string[] = [];
  /** Latest per-channel minimum reported by each worker (closed-loop publishing). */
  private progressByWorker = new Map<number, Record<string, number>>();

  constructor(
    readonly opts: Options,
    readonly workers: Worker[],
    readonly publisher: Publisher,
    readonly broker: Broker,
    readonly hubOptions: Omit<HubOptions, 'exchange'>,
    readonly runId: string,
  ) {
    workers.forEach(
      (w, i) =>
        (w.onUnsolicited = (r) => {
          if (r.ev !== 'progress') return;
          this.progressByWorker.set(i, r.min);
          this.forwardProgress();
        }),
    );
  }

  /** A fresh exchange per hub start, so that no scenario sees another's events or history. */
  newExchange(kind: HubKind): string {
    const name = `bench.${this.runId}.${++this.exchangeCount}.${kind}`;
    this.exchanges.push(name);
    return name;
  }

  /**
   * Starts `count` hubs on a fresh exchange and waits until each delivers a probe event. In `history` mode the
   * exchange first gets `--history-events` events over `--history-channels` channels (the service is started once
   * before, so that its stream exists to hold them): the hubs then start as a deployed instance restarts, with
   * the history to replay. `probe` preloads bench/probe.ts (event-loop delay, GC pauses).
   */
  async startHubs(kind: HubKind, count: number, scenario: string, probe = false): Promise<{ hubs: Hub[]; exchange: string }> {
    const exchange = this.newExchange(kind);
    const hubs: Hub[] = [];
    const f: Figures = (this.startFigures = { mode: this.mode });
    const options = { ...this.hubOptions, exchange, probe };
    let readyTimeoutMs = 20_000;
    if (this.mode === 'history') {
      if (kind === 'service') {
        const topology = await Hub.start(kind, { ...this.hubOptions, exchange }, `${this.runId}-${scenario}-topology`);
        try {
          await topology.probe(await this.broker.connection(), exchange, this.hubOptions.secret);
        } finally {
          await topology.stop();
        }
      }
      const r = await this.prefill(exchange);
      f.history_events = r.events;
      f.history_body_mb = r.bytes / 2 ** 20;
      f.history_publish_s = r.elapsedMs / 1000;
      readyTimeoutMs = 300_000;
    }
    try {
      const t0 = Date.now();
      for (let i = 0; i < count; i++) {
        hubs.push(await Hub.start(kind, options, `${this.runId}-${scenario}-${i}`));
      }
      for (const h of hubs) await h.probe(await this.broker.connection(), exchange, this.hubOptions.secret, readyTimeoutMs);
      f.start_to_ready_s = (Date.now() - t0) / 1000;
    } catch (err) {
      await Promise.all(hubs.map((h) => h.stop()));
      throw err;
    }
    return { hubs, exchange };
  }

  private async prefill(exchange: string): Promise<PrefillResult> {
    const { historyEvents: events, historyChannels: channels } = this.opts;
    const r = await this.publisher.call({ cmd: 'prefill', exchange, channels, events }, 'prefilled', 900_000);
    if (r.error !== undefined) throw new Error(`prefill: ${r.error}`);
    if (r.nacked > 0) throw new Error(`prefill: ${r.nacked} events nacked by the broker`);
    return r;
  }

  /**
   * `count` sockets of endpoint kind execution over `channels` execution channels (ids from 1), on the given
   * ports round-robin, users 1..1000 round-robin.
   */
  specs(count: number, channels: number, ports: number[], batch = false): SocketSpec[] {
    return Array.from({ length: count }, (_, i) => {
      const id = (i % channels) + 1;
      const port = ports[i % ports.length];
      return {
        url: `ws://127.0.0.1:${port}/ws/execution/${id}${batch ? '?batch=1' : ''}`,
        channel: `execution.${id}`,
        userId: (i % 1000) + 1,
      };
    });
  }

  channelNames(channels: number): string[] {
    return Array.from({ length: channels }, (_, i) => `execution.${i + 1}`);
  }

  /**
   * Opens the specs spread over the workers, at `ratePerSec` in total; sockets that fail are retried up to
   * `retries` times (their failures still count in `errors`).
   */
  async connect(specs: SocketSpec[], ratePerSec: number, retries = 3): Promise<ConnectResult> {
    const share = this.workers.map(() => [] as SocketSpec[]);
    specs.forEach((s, i) => share[i % share.length].push(s));
    const replies = await Promise.all(
      this.workers.map((w, i) =>
        w.call({ cmd: 'connect', sockets: share[i], ratePerSec: ratePerSec / this.workers.length, secret: this.opts.secret, retries }, 'connected'),
      ),
    );
    const total: ConnectResult = { ev: 'connected', seconds: 0, opened: 0, failed: 0, connectMs: [], openToFrameMs: [], errors: {} };
    for (const r of replies) {
      total.seconds = Math.max(total.seconds, r.seconds);
      total.opened += r.opened;
      total.failed += r.failed;
      total.connectMs.push(...r.connectMs);
      total.openToFrameMs.push(...r.openToFrameMs);
      addCounts(total.errors, r.errors);
    }
    return total;
  }

  async reset(recordLatency: boolean): Promise<void> {
    this.progressByWorker.clear();
    await Promise.all(this.workers.map((w) => w.call({ cmd: 'reset', recordLatency }, 'reset')));
  }

  async collect(published: Record<string, number>): Promise<Collected> {
    const replies = await Promise.all(this.workers.map((w) => w.call({ cmd: 'collect', published }, 'collected')));
    return Collected.merge(replies);
  }

  /**
   * Waits until every subscriber has every published event (or nothing new arrived for `quietMs`), then
   * returns the merged accounting.
   */
  async drain(published: Record<string, number>, quietMs = 3000): Promise<Collected> {
    let last = await this.collect(published);
    let lastChange = Date.now();
    while (last.missing > 0 && Date.now() - lastChange < quietMs) {
      await sleep(100);
      const now = await this.collect(published);
      if (now.received !== last.received) lastChange = Date.now();
      last = now;
    }
    return last;
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.call({ cmd: 'closeAll' }, 'closed', 60_000)));
  }

  track(everyMs: number): void {
    for (const w of this.workers) w.send({ cmd: 'track', everyMs });
  }

  untrack(): void {
    for (const w of this.workers) w.send({ cmd: 'untrack' });
  }

  private forwardProgress(): void {
    const min: Record<string, number> = {};
    for (const m of this.progressByWorker.values()) {
      for (const [c, n] of Object.entries(m)) if (min[c] === undefined || n < min[c]) min[c] = n;
    }
    this.publisher.send({ cmd: 'progress', min });
  }

  async openLoop(exchange: string, channels: string[], ratePerSec: number, durationMs: number): Promise<PublishResult> {
    return checked(await this.publisher.call({ cmd: 'open-loop', exchange, channels, ratePerSec, durationMs }, 'published', durationMs + 120_000));
  }

  async closedLoop(exchange: string, channels: string[], window: number, durationMs: number): Promise<PublishResult> {
    return checked(await this.publisher.call({ cmd: 'closed-loop', exchange, channels, window, durationMs }, 'published', durationMs + 120_000));
  }
}

/** A publish run that failed or published nothing (the broker went away) must not become figures. */
function checked(r: PublishResult): PublishResult {
  if (r.error !== undefined) throw new Error(`publisher: ${r.error}`);
  if (r.total === 0) throw new Error('publisher: published nothing');
  return r;
}

/** The start of a latency run reported apart: a process that has served nothing yet runs cold code (issue 13). */
const WARM_UP_MS = 2000;

/** The merged delivery accounting of all workers. */
export class Collected {
  latency: Distribution = distribution([]);
  /** The latency of the events published in the first WARM_UP_MS of the run, and of those published after. */
  latencyFirst: Distribution = distribution([]);
  latencyAfter: Distribution = distribution([]);
  /** p99 of the events published in each second of the run, in order (where the tail sits in time). */
  p99BySecond: number[] = [];
  received = 0;
  frames = 0;
  duplicates = 0;
  reordered = 0;
  missing = 0;
  receivedByPort: Record<string, number> = {};
  unexpected: Record<string, number> = {};

  static merge(replies: CollectResult[]): Collected {
    const c = new Collected();
    const latencies: number[] = [];
    const sent: number[] = [];
    for (const r of replies) {
      for (const v of r.latencyMs) latencies.push(v);
      for (const v of r.sentMs) sent.push(v);
      for (const t of Object.values<ChannelTally>(r.channels)) {
        c.received += t.received;
        c.frames += t.frames;
        c.duplicates += t.duplicates;
        c.reordered += t.reordered;
        c.missing += t.missing;
      }
      addCounts(c.receivedByPort, r.receivedByPort);
      addCounts(c.unexpected, r.unexpected);
    }
    c.latency = distribution(latencies);
    let start = Infinity;
    for (const t of sent) if (t < start) start = t;
    const bySecond: number[][] = [];
    const first: number[] = [];
    const after: number[] = [];
    latencies.forEach((v, i) => {
      const at = sent[i] - start;
      (bySecond[Math.floor(at / 1000)] ??= []).push(v);
      (at < WARM_UP_MS ? first : after).push(v);
    });
    c.latencyFirst = distribution(first);
    c.latencyAfter = distribution(after);
    c.p99BySecond = Array.from(bySecond, (s) => distribution(s ?? []).p99);
    return c;
  }
}

export function describeCounts(counts: Record<string, number>): string {
  const parts = Object.entries(counts).map(([k, v]) => `${k}:${v}`);
  return parts.length ? parts.join(' ') : 'none';
}

export function sum(counts: Record<string, number>): number {
  return Object.values(counts).reduce((a, b) => a + b, 0);
}
