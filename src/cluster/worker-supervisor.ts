import cluster, { type Worker } from 'node:cluster';
import type { Logger } from 'pino';
import { AggregatorRegistry, Counter, Gauge, Registry } from 'prom-client';
import { ClusterMetricName } from '../metrics/metric-names';
import { isMetricsRequest, METRICS_REPLY, type MetricsReply } from './cluster-messages';

/** A worker that dies sooner than this after its start counts as a crash loop: its replacement waits. */
const HEALTHY_UPTIME_MS = 10_000;
const FIRST_BACKOFF_MS = 500;
const MAX_BACKOFF_MS = 30_000;
/** Beyond the workers' own bounded shutdown: then the stragglers are killed. */
const STOP_MARGIN_MS = 5_000;

/**
 * How long to wait before replacing a worker of a slot that has died `quickDeaths` times in a row, each within
 * HEALTHY_UPTIME_MS of its start: at once after a worker that ran well, then 0.5 s, 1 s, 2 s ... up to 30 s, so a
 * worker that cannot start (the broker refuses it, a bad deploy) does not make the primary spin.
 */
export function restartDelayMs(quickDeaths: number): number {
  return quickDeaths <= 0 ? 0 : Math.min(MAX_BACKOFF_MS, FIRST_BACKOFF_MS * 2 ** (quickDeaths - 1));
}

interface Slot {
  index: number;
  worker: Worker | undefined;
  startedAtMs: number;
  quickDeaths: number;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The primary process of `WORKERS=N`: forks N workers (each a full instance of the service: its own sockets, its
 * own reader of the RabbitMQ stream, the listening port shared through node:cluster), replaces a worker that dies,
 * stops them all on SIGTERM, and answers the workers' requests for the metrics of all of them (aggregated with
 * prom-client's AggregatorRegistry). It loads neither Nest nor the service.
 */
export class WorkerSupervisor {
  private readonly slots: Slot[];
  private stopping: Promise<number> | undefined;
  private readonly aggregator = new AggregatorRegistry();
  private readonly own = new Registry();
  private readonly restarts = new Counter({ name: ClusterMetricName.WorkerRestarts, help: 'Workers replaced after they died (WORKERS > 1)', registers: [this.own] });
  private readonly alive = new Gauge({ name: ClusterMetricName.Workers, help: 'Worker processes running (WORKERS > 1)', registers: [this.own] });

  constructor(
    readonly count: number,
    private readonly shutdownTimeoutMs: number,
    private readonly logger: Logger,
  ) {
    this.slots = Array.from({ length: count }, (_, index) => ({ index, worker: undefined, startedAtMs: 0, quickDeaths: 0, timer: undefined }));
    this.restarts.inc(0);
  }

  start(): void {
    cluster.on('message', (worker, message: unknown) => {
      if (isMetricsRequest(message)) void this.answerMetrics(worker, message.id);
    });
    for (const slot of this.slots) this.fork(slot);
    this.logger.info({ workers: this.count, pid: process.pid }, 'primary started its workers');
  }

  /**
   * SIGTERM to every worker (each runs the single-process sequence: sockets closed with 1001, consumer stopped,
   * exit 0), then wait for all of them; a worker still there after its own deadline is killed. Resolves with the
   * exit code for the primary: 0 when every worker exited 0.
   */
  stop(): Promise<number> {
    this.stopping ??= this.runStop();
    return this.stopping;
  }

  private async runStop(): Promise<number> {
    const workers = this.slots.flatMap((s) => {
      clearTimeout(s.timer);
      return s.worker === undefined ? [] : [s.worker];
    });
    this.logger.info({ workers: workers.length }, 'stopping workers');
    const codes = await Promise.all(
      workers.map(
        (w) =>
          new Promise<number | null>((resolve) => {
            if (w.isDead()) return resolve(w.process.exitCode);
            const kill = setTimeout(() => w.process.kill('SIGKILL'), this.shutdownTimeoutMs + STOP_MARGIN_MS);
            w.once('exit', (code: number | null, signal: string | null) => {
              clearTimeout(kill);
              // Killed by the SIGTERM itself: the worker was still starting (its handler comes with its port), so it
              // had no socket to close.
              resolve(signal === 'SIGTERM' ? 0 : code);
            });
            w.process.kill('SIGTERM');
          }),
      ),
    );
    const failed = codes.filter((c) => c !== 0).length;
    this.logger.info({ workers: workers.length, failed }, 'workers stopped');
    return failed === 0 ? 0 : 1;
  }

  private fork(slot: Slot): void {
    slot.timer = undefined;
    const worker = cluster.fork();
    slot.worker = worker;
    slot.startedAtMs = Date.now();
    this.alive.inc();
    worker.once('exit', (code: number | null, signal: string | null) => {
      this.alive.dec();
      slot.worker = undefined;
      if (this.stopping !== undefined) return;
      const uptimeMs = Date.now() - slot.startedAtMs;
      slot.quickDeaths = uptimeMs < HEALTHY_UPTIME_MS ? slot.quickDeaths + 1 : 0;
      const delayMs = restartDelayMs(slot.quickDeaths);
      this.restarts.inc();
      this.logger.error({ worker: worker.id, pid: worker.process.pid, code, signal, uptimeMs, restartInMs: delayMs }, 'worker died; replacing it');
      slot.timer = setTimeout(() => this.fork(slot), delayMs);
    });
  }

  /** Every worker's metrics summed (gauges too, unless a metric says otherwise), plus the primary's own. */
  private async answerMetrics(worker: Worker, id: number): Promise<void> {
    let reply: MetricsReply;
    try {
      const all = await this.aggregator.clusterMetrics();
      reply = { type: METRICS_REPLY, id, body: all + (await this.own.metrics()) };
    } catch (err) {
      reply = { type: METRICS_REPLY, id, error: err instanceof Error ? err.message : String(err) };
    }
    if (worker.isConnected()) worker.send(reply);
  }
}
