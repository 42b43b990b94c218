/**
 * The publisher process of the benchmark (forked by `run.ts`): publishes `log_entry` events to the topic
 * exchange with publisher confirms, as Django would, either at a fixed rate (open loop) or as fast as the
 * slowest subscriber keeps up (closed loop: event k of a channel is published only once every subscriber of
 * that channel has received event k - window, as reported by the client workers).
 *
 * Every event carries `seq` (1, 2, ... per channel and run: ordering and loss checks) and `sent_at_ns`
 * (epoch ns taken just before the publish: latency), plus the header `x-published-at-ms` the service's own
 * latency metric reads.
 */
import amqp from 'amqplib';
import type { PublisherCommand, PublisherReply, PublishResult } from './lib/ipc';
import { monoNs, nowMs } from './lib/stats';

let conn: amqp.ChannelModel | undefined;
let ch: amqp.ConfirmChannel | undefined;
let exchange = '';
let progress: Record<string, number> = {};
let wakeUp: (() => void) | undefined;

function send(reply: PublisherReply): void {
  process.send?.(reply);
}

interface Run {
  published: Record<string, number>;
  total: number;
  nacked: number;
  confirms: Promise<void>[];
  /** Why the run cannot be trusted (the channel closed under it, confirms never came). */
  error?: string;
}

function newRun(channels: string[]): Run {
  return { published: Object.fromEntries(channels.map((c) => [c, 0])), total: 0, nacked: 0, confirms: [] };
}

/** Publishes the next event of `channel`; the confirm is collected in `run.confirms`. */
function publishNext(run: Run, channel: string): boolean {
  if (!ch) throw new Error('publisher not open');
  const seq = ++run.published[channel];
  run.total++;
  const sentMs = nowMs();
  const body = JSON.stringify({
    type: 'log_entry',
    execution_id: Number(channel.split('.')[1] ?? 0),
    seq,
    sent_at_ns: Number(monoNs()), // compared with the clients' monoNs(): the same clock in every process
    level: 'info',
    message: `bench line ${seq} of ${channel}`,
    step_name: 'bench',
    source: 'step_output',
  });
  const channelRef = ch;
  let flushed = true;
  run.confirms.push(
    new Promise<void>((resolve) => {
      try {
        flushed = channelRef.publish(
          exchange,
          channel,
          Buffer.from(body),
          {
            contentType: 'application/json',
            headers: { 'x-published-at-ms': Math.floor(sentMs) },
            timestamp: Math.floor(sentMs / 1000),
          },
          (err) => {
            if (err) run.nacked++;
            resolve();
          },
        );
      } catch (err) {
        // The channel closed under us (e.g. RabbitMQ restarted): this run's figures mean nothing.
        run.error ??= err instanceof Error ? err.message : String(err);
        run.nacked++;
        resolve();
      }
    }),
  );
  return flushed;
}

const CONFIRM_TIMEOUT_MS = 30_000;

async function finish(run: Run, t0: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([
    Promise.all(run.confirms),
    new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        run.error ??= `no publisher confirms within ${CONFIRM_TIMEOUT_MS} ms`;
        resolve();
      }, CONFIRM_TIMEOUT_MS);
    }),
  ]);
  clearTimeout(timer);
  const elapsedMs = nowMs() - t0;
  const reply: PublishResult = {
    ev: 'published',
    published: run.published,
    total: run.total,
    nacked: run.nacked,
    elapsedMs,
    rate: (run.total * 1000) / elapsedMs,
    error: run.error,
  };
  send(reply);
}

/** Waits for the socket to drain when amqplib says its buffer is full (publish returned false). */
function drained(): Promise<void> {
  return new Promise((resolve) => {
    const c = ch;
    if (!c) return resolve();
    // Whichever comes first removes the other listener: prefilling waits here thousands of times.
    const done = (): void => {
      c.off('drain', done);
      c.off('close', done);
      resolve();
    };
    c.once('drain', done);
    c.once('close', done);
  });
}

async function openLoop(cmd: Extract<PublisherCommand, { cmd: 'open-loop' }>): Promise<void> {
  await ensureChannel();
  exchange = cmd.exchange;
  const run = newRun(cmd.channels);
  const t0 = nowMs();
  const count = Math.round((cmd.ratePerSec * cmd.durationMs) / 1000);
  let k = 0;
  while (k < count) {
    const due = Math.min(count, Math.floor(((nowMs() - t0) * cmd.ratePerSec) / 1000) + 1);
    let flushed = true;
    for (; k < due; k++) flushed = publishNext(run, cmd.channels[k % cmd.channels.length]) && flushed;
    if (!flushed) await drained();
    // Sleep until the next event is due (timers fire with ~1 ms granularity, so events stay on schedule).
    const next = t0 + (k * 1000) / cmd.ratePerSec;
    await new Promise((r) => setTimeout(r, Math.max(0, next - nowMs())));
  }
  await finish(run, t0);
}

async function closedLoop(cmd: Extract<PublisherCommand, { cmd: 'closed-loop' }>): Promise<void> {
  await ensureChannel();
  exchange = cmd.exchange;
  const run = newRun(cmd.channels);
  progress = Object.fromEntries(cmd.channels.map((c) => [c, 0]));
  const t0 = nowMs();
  while (nowMs() - t0 < cmd.durationMs) {
    let sent = 0;
    let flushed = true;
    for (const c of cmd.channels) {
      while (run.published[c] < progress[c] + cmd.window) {
        flushed = publishNext(run, c) && flushed;
        sent++;
      }
    }
    if (!flushed) await drained();
    // Nothing allowed: wait for the next progress report (or a short timeout, so the deadline is kept).
    if (sent === 0) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 50);
        wakeUp = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    } else {
      await new Promise((r) => setImmediate(r));
    }
  }
  await finish(run, t0);
}

/** Unconfirmed publications allowed in flight while prefilling (enough to keep the broker busy). */
const PREFILL_WINDOW = 5000;

/**
 * The history of a deployed instance, published before the hub starts: `events` `log_entry` events round-robin
 * over `execution.1..channels`, with publisher confirms, as fast as the broker confirms them. They carry no `seq`
 * and no `sent_at_ns`, so a client that ever received one would not count it as a measured event.
 */
async function prefill(cmd: Extract<PublisherCommand, { cmd: 'prefill' }>): Promise<void> {
  await ensureChannel();
  const confirm = ch;
  if (!confirm) throw new Error('publisher not open');
  await confirm.assertExchange(cmd.exchange, 'topic', { durable: true });
  const t0 = nowMs();
  let bytes = 0;
  let nacked = 0;
  let inFlight = 0;
  let error: string | undefined;
  let wake: (() => void) | undefined;
  const settled = (err: unknown): void => {
    if (err) nacked++;
    inFlight--;
    wake?.();
  };
  for (let k = 0; k < cmd.events; k++) {
    while (inFlight >= PREFILL_WINDOW && error === undefined) await new Promise<void>((r) => (wake = r));
    const id = (k % cmd.channels) + 1;
    const body = Buffer.from(
      JSON.stringify({
        type: 'log_entry',
        execution_id: id,
        level: 'info',
        message: `history line ${Math.floor(k / cmd.channels) + 1} of execution ${id}: compiling module ${k % 97} of the build`,
        step_name: 'build',
        source: 'step_output',
      }),
    );
    bytes += body.length;
    inFlight++;
    try {
      const sentMs = nowMs();
      const flushed = confirm.publish(cmd.exchange, `execution.${id}`, body, { contentType: 'application/json', headers: { 'x-published-at-ms': Math.floor(sentMs) } }, settled);
      if (!flushed) await drained();
    } catch (err) {
      error = err instanceof Error ? err.message : String(err);
      break;
    }
  }
  const deadline = Date.now() + CONFIRM_TIMEOUT_MS;
  while (inFlight > 0 && error === undefined && Date.now() < deadline) await new Promise<void>((r) => setTimeout(r, 20));
  if (inFlight > 0) error ??= `no publisher confirms within ${CONFIRM_TIMEOUT_MS} ms`;
  send({ ev: 'prefilled', events: cmd.events, bytes, elapsedMs: nowMs() - t0, nacked, error });
}

let brokerUrl = '';

/** (Re)connects when there is no open channel: RabbitMQ may have been restarted since the last run. */
async function ensureChannel(): Promise<void> {
  if (ch) return;
  const c = await amqp.connect(brokerUrl, { noDelay: true });
  c.on('error', () => undefined);
  const confirm = await c.createConfirmChannel();
  confirm.on('error', () => undefined);
  const forget = (): void => {
    if (ch === confirm) ch = undefined;
  };
  c.on('close', forget);
  confirm.on('close', forget);
  conn = c;
  ch = confirm;
}

async function open(url: string): Promise<void> {
  brokerUrl = url;
  await ensureChannel();
  send({ ev: 'opened' });
}

/** A run that could not go on (e.g. the broker went away) still answers, so the orchestrator does not wait. */
function failed(err: unknown): void {
  const reply: PublishResult = {
    ev: 'published',
    published: {},
    total: 0,
    nacked: 0,
    elapsedMs: 0,
    rate: 0,
    error: err instanceof Error ? err.message : String(err),
  };
  send(reply);
}

process.on('message', (msg: PublisherCommand) => {
  switch (msg.cmd) {
    case 'open':
      void open(msg.url);
      break;
    case 'open-loop':
      openLoop(msg).catch(failed);
      break;
    case 'closed-loop':
      closedLoop(msg).catch(failed);
      break;
    case 'prefill':
      prefill(msg).catch((err: unknown) =>
        send({ ev: 'prefilled', events: 0, bytes: 0, elapsedMs: 0, nacked: 0, error: err instanceof Error ? err.message : String(err) }),
      );
      break;
    case 'progress':
      // Already the minimum over every worker's sockets (the orchestrator combines the reports).
      Object.assign(progress, msg.min);
      wakeUp?.();
      break;
    case 'close':
      void (conn ? conn.close() : Promise.resolve()).finally(() => {
        send({ ev: 'closed' });
        process.exit(0);
      });
  }
});
process.on('disconnect', () => process.exit(0));
send({ ev: 'ready' });
