import { spawn } from 'node:child_process';
import { get } from 'node:http';
import { join } from 'node:path';
import type { ConfirmChannel } from 'amqplib';
import type { Context, Figures } from '../lib/context';
import type { HubKind } from '../lib/hubs';
import { cpuSeconds, freePort, rssKb, sleep } from '../lib/proc';

/** What the bench uses of the service's own stream reader (dist/messaging/*.js, built by `npm run build`). */
interface StreamReaderModule {
  StreamConnection: {
    open(
      address: { host: string; port: number; user: string; password: string; vhost: string; tls: boolean },
      opts: { heartbeatSeconds: number; timeoutMs: number; name: string },
    ): Promise<{
      subscribe(
        stream: string,
        offset: { type: 'first' },
        credit: number,
        onChunk: (c: { buf: Buffer; records: Array<[number, number] | undefined> }) => void,
      ): Promise<void>;
      close(): void;
    }>;
  };
}
interface Amqp10Module {
  decodeRecord(buf: Buffer, start: number, end: number): { body: Buffer } | undefined;
}

const BODY = Buffer.from(JSON.stringify({ type: 'log_entry', execution_id: 1, level: 'info', message: 'x'.repeat(200), step_name: 'build' }));

/**
 * Start-up (issue 11): with 100,000, 500,000 and 1,000,000 events in the replay window, the time from process start
 * to `/health/ready`, the replay rate, the RSS once ready, and in the same run the bare read rate of the stream
 * (the service's own stream-protocol reader decoding every record and parsing its JSON, nothing else) and how many
 * records the broker put in each chunk. Service only: the baseline hub has no history to rebuild.
 *
 * The stream is filled in one of two ways (`--startup-fill`), each into its own stream that grows between sizes:
 * - `batched`: one publisher, confirms awaited every 10,000 messages. RabbitMQ writes ~19 records per chunk: the
 *   broker's best case, not what a deployment holds.
 * - `publishers`: 8 publishers, each waiting for its confirm before its next message, as Django's workers publish
 *   (integrations/django). The broker writes a chunk per few records, and reading a stream costs the broker about the
 *   same per chunk whatever it holds, so this is the replay rate a deployed instance sees.
 */
export async function startup(ctx: Context, kind: HubKind): Promise<Figures> {
  if (kind !== 'service') return { skipped: 'the baseline hub replays nothing' };
  const { opts } = ctx;
  const sizes = opts.quick ? [20_000] : opts.startupSizes;
  const f: Figures = { event_bytes: BODY.length };
  const conn = await ctx.broker.connection();
  for (const fill of opts.startupFills) {
    const exchange = ctx.newExchange(kind);
    const stream = `${exchange}.stream`;
    const ch = await conn.createConfirmChannel();
    try {
      await ch.assertExchange(exchange, 'topic', { durable: true });
      // The service's own arguments (defaults of STREAM_MAX_AGE and STREAM_MAX_BYTES), so its declaration agrees.
      await ch.assertQueue(stream, { durable: true, arguments: { 'x-queue-type': 'stream', 'x-max-age': '24h', 'x-max-length-bytes': 2_000_000_000 } });
      await ch.bindQueue(stream, exchange, '#');
      // Figures of the publishers' fill carry a `p_` prefix on their size: `ready_s_p_100000`.
      const key = (name: string, n: number): string => `${name}_${fill === 'publishers' ? 'p_' : ''}${n}`;
      let filled = 0;
      for (const n of sizes) {
        const t0 = Date.now();
        const before = filled;
        filled = fill === 'batched' ? await fillBatched(ch, exchange, filled, n) : await fillLikeDjango(ch, exchange, filled, n);
        f[key('fill_rate', n)] = Math.round((filled - before) / ((Date.now() - t0) / 1000));
        const bare = await bareRead(ctx.hubOptions.repoRoot, opts.rabbitUrl, stream, n);
        f[key('bare_read_per_s', n)] = bare.perSecond;
        f[key('records_per_chunk', n)] = bare.recordsPerChunk;
        // The event stream alone (digests off), as before digests existed.
        const alone = await startOnce(ctx, exchange, n, { STREAM_DIGEST_EVENTS: '0' });
        for (const [name, v] of Object.entries(alone)) f[key(name, n)] = v;
        // Digests on: this start reads what digests there are and writes the rest; it stops with SIGTERM, as a deploy
        // stops an instance. The restart after it is what a deployed instance sees.
        const first = await startOnce(ctx, exchange, n, {});
        f[key('first_ready_s', n)] = first.ready_s;
        if (first.digest_warning !== undefined) f[key('first_digest_warning', n)] = first.digest_warning;
        const restart = await startOnce(ctx, exchange, n, {});
        for (const [name, v] of Object.entries(restart)) f[key(`digest_${name}`, n)] = v;
      }
    } finally {
      await ch.close().catch(() => undefined);
    }
  }
  return f;
}

/** Publish up to `n` messages in all, confirms awaited every 10,000. Returns the count now in the stream. */
async function fillBatched(ch: ConfirmChannel, exchange: string, filled: number, n: number): Promise<number> {
  while (filled < n) {
    const end = Math.min(n, filled + 10_000);
    for (; filled < end; filled++) publishOne(ch, exchange, filled).catch(() => undefined); // waitForConfirms reports a nack
    await ch.waitForConfirms();
  }
  return filled;
}

/** Publish up to `n` messages in all from 8 concurrent publishers, each awaiting its confirm (Django's way). */
async function fillLikeDjango(ch: ConfirmChannel, exchange: string, filled: number, n: number): Promise<number> {
  let next = filled;
  const publisher = async (): Promise<void> => {
    while (next < n) await publishOne(ch, exchange, next++);
  };
  await Promise.all(Array.from({ length: 8 }, publisher));
  return n;
}

function publishOne(ch: ConfirmChannel, exchange: string, i: number): Promise<void> {
  const at = Date.now();
  return new Promise((resolve, reject) => {
    ch.publish(
      exchange,
      `execution.${1 + (i % 1000)}`,
      BODY,
      { messageId: `s${i}`, timestamp: Math.floor(at / 1000), headers: { 'x-published-at-ms': at } },
      (err: unknown) => (err === null || err === undefined ? resolve() : reject(err instanceof Error ? err : new Error('publish not confirmed'))),
    );
  });
}

/** Start the service on the filled stream; time to ready, replay rate (from its log), RSS and CPU once ready. */
async function startOnce(ctx: Context, exchange: string, n: number, env: Record<string, string>): Promise<Figures> {
  const port = await freePort();
  const t0 = Date.now();
  const proc = spawn(process.execPath, [join(ctx.hubOptions.repoRoot, 'dist', 'main.js')], {
    cwd: ctx.hubOptions.repoRoot,
    env: {
      PATH: process.env.PATH,
      NODE_ENV: 'production',
      PORT: String(port),
      RABBITMQ_URL: ctx.opts.rabbitUrl,
      RABBITMQ_EXCHANGE: exchange,
      DJANGO_SECRET_KEY: ctx.opts.secret,
      LOG_LEVEL: 'info',
      HISTORY_TTL_SECONDS: '86400',
      ...env,
      ...ctx.opts.serviceEnv,
    },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  let replayMs: number | undefined;
  let fromDigests: number | undefined;
  let digestWarning: string | undefined;
  let out = '';
  proc.stdout?.on('data', (b: Buffer) => {
    out += b.toString('utf8');
    const m = /"replayMs":(\d+)/.exec(out);
    if (m !== null) replayMs = Number(m[1]);
    const d = /"fromDigests":(\d+)/.exec(out);
    if (d !== null) fromDigests = Number(d[1]);
    // Why a digest read ended early (a gap, a stall, a failure), for whoever reads the figures.
    const w =
      /"msg":"(gap in the digests[^"]*|a digest beyond[^"]*|digests still not confirmed[^"]*|no digest chunk[^"]*|replay stream reader[^"]*|not a digest[^"]*|digest not written[^"]*|digest dropped[^"]*)"/.exec(
        out,
      );
    if (w !== null) digestWarning ??= w[1];
    if (out.length > 1_000_000) out = out.slice(-10_000);
  });
  try {
    const deadline = t0 + 600_000;
    while ((await status(port, '/health/ready')) !== 200) {
      if (Date.now() > deadline || proc.exitCode !== null) throw new Error(`service not ready with ${n} events (exit ${String(proc.exitCode)})`);
      await sleep(50);
    }
    const readyMs = Date.now() - t0;
    await sleep(2000); // let the collector run once the replay is over: RSS settles
    const pid = proc.pid ?? -1;
    const health = await getJson(port, '/health');
    const history = (health?.history ?? {}) as { bytes?: number };
    return {
      history_mb: typeof history.bytes === 'number' ? Math.round(history.bytes / 1e5) / 10 : 'no history in /health',
      ready_s: readyMs / 1000,
      replay_s: (replayMs ?? NaN) / 1000,
      replay_per_s: replayMs === undefined ? 'no replayMs in the log' : Math.round(n / (replayMs / 1000)),
      from_digests: fromDigests ?? 0,
      ...(digestWarning === undefined ? {} : { digest_warning: digestWarning }),
      rss_mb: Math.round(rssKb(pid) / 1024),
      cpu_s: cpuSeconds(pid),
    };
  } finally {
    // SIGTERM: the service writes the digest it was gathering before it exits.
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    proc.kill('SIGTERM');
    await Promise.race([exited, sleep(15_000)]);
    proc.kill('SIGKILL');
  }
}

/**
 * The service's reader alone: decode every record, parse its JSON; events/s from subscribe to the n-th record, and
 * the records per chunk the broker delivered.
 */
async function bareRead(repoRoot: string, rabbitUrl: string, stream: string, n: number): Promise<{ perSecond: number; recordsPerChunk: number }> {
  /* eslint-disable @typescript-eslint/no-require-imports */
  const { StreamConnection } = require(join(repoRoot, 'dist', 'messaging', 'stream-connection.js')) as StreamReaderModule;
  const amqp10 = require(join(repoRoot, 'dist', 'messaging', 'amqp10.js')) as Amqp10Module;
  /* eslint-enable @typescript-eslint/no-require-imports */
  const u = new URL(rabbitUrl);
  const c = await StreamConnection.open(
    {
      host: u.hostname,
      port: 5552,
      user: decodeURIComponent(u.username || 'guest'),
      password: decodeURIComponent(u.password || 'guest'),
      vhost: '/',
      tls: false,
    },
    { heartbeatSeconds: 0, timeoutMs: 10_000, name: 'bench bare read' },
  );
  try {
    const t0 = Date.now();
    let seen = 0;
    let chunks = 0;
    await new Promise<void>((resolve, reject) => {
      c.subscribe(stream, { type: 'first' }, 500, (chunk) => {
        // 500: the service's credit (STREAM_CREDIT)
        chunks++;
        for (const r of chunk.records) {
          if (seen >= n) break;
          seen++;
          const rec = r === undefined ? undefined : amqp10.decodeRecord(chunk.buf, r[0], r[1]);
          if (rec !== undefined) JSON.parse(rec.body.toString('utf8'));
        }
        if (seen >= n) resolve();
      }).catch(reject);
    });
    return { perSecond: Math.round(n / ((Date.now() - t0) / 1000)), recordsPerChunk: Math.round((n / chunks) * 10) / 10 };
  } finally {
    c.close();
  }
}

function getJson(port: number, path: string): Promise<Record<string, unknown> | undefined> {
  return new Promise((resolve) => {
    get({ host: '127.0.0.1', port, path, timeout: 2000 }, (res) => {
      let body = '';
      res.on('data', (b: Buffer) => (body += b.toString('utf8')));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body) as Record<string, unknown>);
        } catch {
          resolve(undefined);
        }
      });
    }).on('error', () => resolve(undefined));
  });
}

function status(port: number, path: string): Promise<number> {
  return new Promise((resolve) => {
    get({ host: '127.0.0.1', port, path, timeout: 1000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    }).on('error', () => resolve(0));
  });
}
