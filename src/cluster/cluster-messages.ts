import cluster from 'node:cluster';
import { AggregatorRegistry } from 'prom-client';

/** The IPC messages between a worker and the primary (WORKERS > 1); prom-client's own use other types. */
export const METRICS_REQUEST = 'ansflow:metrics-request';
export const METRICS_REPLY = 'ansflow:metrics-reply';

export interface MetricsRequest {
  type: typeof METRICS_REQUEST;
  id: number;
}

export interface MetricsReply {
  type: typeof METRICS_REPLY;
  id: number;
  body?: string;
  error?: string;
}

export function isMetricsRequest(m: unknown): m is MetricsRequest {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === METRICS_REQUEST && typeof (m as { id?: unknown }).id === 'number';
}

function isMetricsReply(m: unknown): m is MetricsReply {
  return typeof m === 'object' && m !== null && (m as { type?: unknown }).type === METRICS_REPLY && typeof (m as { id?: unknown }).id === 'number';
}

/**
 * This process's place in the cluster of `WORKERS` (the resolved count): undefined when it runs alone. A worker of
 * another process manager's cluster (pm2's cluster mode) with WORKERS=1 counts as alone: no primary of ours answers.
 */
export function currentWorker(workers: number): { id: number; pid: number } | undefined {
  return workers > 1 && cluster.isWorker && cluster.worker !== undefined ? { id: cluster.worker.id, pid: process.pid } : undefined;
}

/** Longer than prom-client's own 5 s deadline for the workers' answers, so its error is the one reported. */
const REPLY_TIMEOUT_MS = 6000;
let nextId = 0;
let joined = false;
const pending = new Map<number, (reply: MetricsReply) => void>();

/**
 * In a worker, at start: answer the primary's requests for this worker's metrics (prom-client's AggregatorRegistry
 * does that once constructed) and take its replies. Every worker must, since a scrape asks all of them.
 */
export function joinClusterMetrics(): void {
  if (joined) return;
  joined = true;
  new AggregatorRegistry();
  process.on('message', (m: unknown) => {
    if (isMetricsReply(m)) pending.get(m.id)?.(m);
  });
}

/**
 * In a worker: the metrics of every worker, aggregated by the primary. A scrape reaches whichever worker the
 * primary hands the connection to, so a per-worker answer would make every counter jump between scrapes.
 */
export function clusterMetrics(): Promise<string> {
  const id = nextId++;
  return new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => {
      pending.delete(id);
      reject(new Error('the primary did not answer with the workers’ metrics in time'));
    }, REPLY_TIMEOUT_MS);
    pending.set(id, (reply) => {
      clearTimeout(timer);
      pending.delete(id);
      if (reply.body !== undefined) resolve(reply.body);
      else reject(new Error(reply.error ?? 'no metrics'));
    });
    const request: MetricsRequest = { type: METRICS_REQUEST, id };
    process.send?.(request);
  });
}
