/**
 * Helpers for end-to-end tests against the real RabbitMQ: a publisher connection, the dead-letter queue, broker
 * outages (serialised with the other engineers' tests through a lock), scratch exchanges and their cleanup, and the
 * service as a child process built from the current sources into a private directory.
 */
import amqp, { type ConfirmChannel, type ChannelModel, type GetMessage, type Options } from 'amqplib';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { brokerNames } from '../../src/messaging/message-policy';
import { TEST_SECRET } from './tokens';

export const RABBITMQ_URL = process.env.TEST_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
/** The lock every test that stops the shared broker takes, so two outages never overlap. */
export const BROKER_LOCK = '/tmp/broker-restart.lock';
const REPO = path.resolve(__dirname, '..', '..');

/** A scratch exchange name, so runs never read each other's events (the service derives its queues from it). */
export function uniqueExchange(label: string): string {
  return `test.${label}.${randomBytes(4).toString('hex')}`;
}

/** What the service declares for an exchange. */
export function brokerObjects(exchange: string): { stream: string; replay: string; validate: string; dlx: string; dlq: string } {
  return brokerNames(exchange);
}

export interface Publisher {
  conn: ChannelModel;
  ch: ConfirmChannel;
  /** Publish and wait for the broker's confirm. A body object is JSON-encoded; a Buffer/string goes as is. */
  publish(exchange: string, routingKey: string, body: unknown, options?: Options.Publish): Promise<void>;
  close(): Promise<void>;
}

export async function connectPublisher(url = RABBITMQ_URL): Promise<Publisher> {
  // Without TCP_NODELAY, Nagle's algorithm delays small messages by tens of milliseconds.
  const conn = await amqp.connect(url, { noDelay: true });
  conn.on('error', () => undefined); // a broker restart closes it; callers reconnect
  const ch = await conn.createConfirmChannel();
  ch.on('error', () => undefined);
  return {
    conn,
    ch,
    publish: async (exchange, routingKey, body, options = {}) => {
      const content = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      const at = Date.now();
      await new Promise<void>((resolve, reject) => {
        ch.publish(
          exchange,
          routingKey,
          content,
          {
            persistent: true,
            contentType: 'application/json',
            timestamp: Math.floor(at / 1000),
            ...options,
            headers: { 'x-published-at-ms': at, ...options.headers },
          },
          (err) => (err === null || err === undefined ? resolve() : reject(err instanceof Error ? err : new Error(String(err)))),
        );
      });
    },
    close: async () => {
      await conn.close().catch(() => undefined);
    },
  };
}

/** Take every message of the dead-letter queue (acknowledging them: the queue is the test's own). */
export async function drainQueue(ch: ConfirmChannel, queue: string): Promise<GetMessage[]> {
  const out: GetMessage[] = [];
  for (;;) {
    const m = await ch.get(queue, { noAck: false });
    if (m === false) return out;
    ch.ack(m);
    out.push(m);
  }
}

/** Delete the exchange and everything the service declared for it. Safe to call when some of it does not exist. */
export async function deleteBrokerObjects(exchange: string, url = RABBITMQ_URL): Promise<void> {
  const { stream, replay, validate, dlx, dlq } = brokerObjects(exchange);
  const conn = await amqp.connect(url, { noDelay: true });
  conn.on('error', () => undefined);
  try {
    // One channel per operation: a failed delete closes its channel.
    for (const q of [stream, replay, validate, dlq]) {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await ch.deleteQueue(q).catch(() => undefined);
      await ch.close().catch(() => undefined);
    }
    for (const x of [exchange, dlx]) {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      await ch.deleteExchange(x).catch(() => undefined);
      await ch.close().catch(() => undefined);
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
}

export function run(cmd: string, args: string[], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, stdout, stderr });
    });
  });
}

export async function rabbitmqctl(...args: string[]): Promise<string> {
  const r = await run('rabbitmqctl', args);
  if (r.code !== 0) throw new Error(`rabbitmqctl ${args.join(' ')} failed (${r.code}): ${r.stderr || r.stdout}`);
  return r.stdout;
}

/** Messages ready and unacknowledged in a queue (rabbitmqctl: amqplib's checkQueue counts only ready ones). */
export async function queueDepth(queue: string): Promise<{ ready: number; unacked: number } | undefined> {
  const out = await rabbitmqctl('list_queues', '-q', '--no-table-headers', 'name', 'messages_ready', 'messages_unacknowledged');
  for (const line of out.split('\n')) {
    const [name, ready, unacked] = line.trim().split(/\s+/);
    if (name === queue) return { ready: Number(ready), unacked: Number(unacked) };
  }
  return undefined;
}

/** Holds BROKER_LOCK through a `flock` child until `release()`: the whole outage happens under the lock. */
async function acquireBrokerLock(): Promise<{ release: () => Promise<void> }> {
  const holder = spawn('flock', [BROKER_LOCK, 'sh', '-c', 'echo locked; cat >/dev/null'], { stdio: ['pipe', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`could not take ${BROKER_LOCK} within 120 s`)), 120_000);
    holder.stdout.on('data', (b: Buffer) => {
      if (b.toString().includes('locked')) {
        clearTimeout(t);
        resolve();
      }
    });
    holder.once('exit', (code) => reject(new Error(`flock exited ${String(code)}`)));
  });
  return {
    release: async () => {
      if (holder.exitCode !== null) return;
      const gone = new Promise((resolve) => holder.once('exit', resolve));
      holder.stdin.end();
      await gone;
    },
  };
}

/** Start the broker's application if it is stopped and wait until it accepts connections. Idempotent. */
export async function ensureBrokerRunning(): Promise<void> {
  await rabbitmqctl('start_app');
  await rabbitmqctl('await_startup');
}

/**
 * Stop the broker's application (`rabbitmqctl stop_app`), run `whileDown`, then start it again: always, even
 * when `whileDown` throws. The whole outage holds BROKER_LOCK; keep `whileDown` short (others share the broker).
 * Returns how long the broker was down (from the end of stop_app to the end of start_app).
 */
export async function withBrokerStopped<T>(whileDown: () => Promise<T>): Promise<{ result: T; downMs: number }> {
  const lock = await acquireBrokerLock();
  let downAt = 0;
  let upAt = 0;
  let result: T;
  try {
    await rabbitmqctl('stop_app');
    downAt = Date.now();
    result = await whileDown();
  } finally {
    try {
      await rabbitmqctl('start_app');
      upAt = Date.now();
      await rabbitmqctl('await_startup');
    } finally {
      await lock.release();
    }
  }
  return { result, downMs: upAt - downAt };
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Poll `url` until it answers `status`, within `ms`. Returns the last body. */
export async function waitForStatus(url: string, status: number, ms = 30_000): Promise<string> {
  const deadline = Date.now() + ms;
  let last = 'no answer';
  for (;;) {
    try {
      const res = await fetch(url);
      const body = await res.text();
      if (res.status === status) return body;
      last = `${res.status} ${body.slice(0, 300)}`;
    } catch (err) {
      last = String(err);
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer ${status} within ${ms} ms (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Poll `check` until it returns a value other than undefined, within `ms`. */
export async function eventually<T>(what: string, check: () => Promise<T | undefined> | T | undefined, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out waiting for ${what}${lastErr === undefined ? '' : `: ${lastErr instanceof Error ? lastErr.message : JSON.stringify(lastErr)}`}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** One sample of a Prometheus text exposition, e.g. `metric(text, 'x_total', { reason: 'y' })`; undefined if absent. */
export function metric(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const s of samples(text)) {
    if (s.name !== name) continue;
    const keys = Object.keys(labels);
    if (keys.length !== Object.keys(s.labels).length) continue;
    if (keys.every((k) => s.labels[k] === labels[k])) return s.value;
  }
  return undefined;
}

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export function samples(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// The service as a child process

/**
 * Compiles src/ into a private directory keyed by the sources' content, so the child processes run the current
 * code and a concurrent `npm run build` (which empties dist/) cannot pull files from under them.
 */
export async function buildServiceOnce(): Promise<string> {
  const hash = createHash('sha256');
  const walk = (dir: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.ts') && !e.name.endsWith('.spec.ts')) hash.update(p).update(fs.readFileSync(p));
    }
  };
  walk(path.join(REPO, 'src'));
  for (const f of ['package.json', 'tsconfig.json', 'tsconfig.build.json']) hash.update(fs.readFileSync(path.join(REPO, f)));
  const dir = path.join(os.tmpdir(), 'ansflow-e2e-build', hash.digest('hex').slice(0, 16));
  const main = path.join(dir, 'dist', 'main.js');
  if (fs.existsSync(main)) return dir;
  fs.mkdirSync(dir, { recursive: true });
  // Two test files may want the same build at once: one compiles, the other waits on the lock.
  const r = await run(
    'flock',
    [
      path.join(dir, '.lock'),
      'sh',
      '-c',
      `test -f "${main}" || "${path.join(REPO, 'node_modules/.bin/tsc')}" -p "${path.join(REPO, 'tsconfig.build.json')}" --outDir "${path.join(dir, 'dist.tmp')}" && { test -f "${main}" || mv "${path.join(dir, 'dist.tmp')}" "${path.join(dir, 'dist')}"; }`,
    ],
    240_000,
  );
  if (r.code !== 0 || !fs.existsSync(main)) throw new Error(`building the service failed:\n${r.stdout}\n${r.stderr}`);
  fs.copyFileSync(path.join(REPO, 'package.json'), path.join(dir, 'package.json'));
  if (!fs.existsSync(path.join(dir, 'node_modules'))) fs.symlinkSync(path.join(REPO, 'node_modules'), path.join(dir, 'node_modules'));
  return dir;
}

export const CHILD_PUBLISH_KEY = 'child-publish-key-0123';

export interface ChildService {
  proc: ChildProcess;
  port: number;
  url: string;
  ws: (p: string) => string;
  /** Every line the process wrote to stdout and stderr so far. */
  output: string[];
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** SIGKILL if still running (cleanup). */
  kill(): Promise<void>;
}

/** `node dist/main` with `env` (plus test defaults) on a free port; resolves once /health/live answers. */
export async function spawnService(buildDir: string, env: Record<string, string>, ready: 'live' | 'ready' = 'live'): Promise<ChildService> {
  const port = await freePort();
  const output: string[] = [];
  const proc = spawn(process.execPath, ['dist/main'], {
    cwd: buildDir,
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      NODE_ENV: 'test',
      HOST: '127.0.0.1',
      PORT: String(port),
      LOG_LEVEL: 'info',
      DJANGO_SECRET_KEY: TEST_SECRET,
      PUBLISH_API_KEY: CHILD_PUBLISH_KEY,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const collect = (stream: NodeJS.ReadableStream): void => {
    let partial = '';
    stream.on('data', (b: Buffer) => {
      const parts = (partial + b.toString('utf8')).split('\n');
      partial = parts.pop() ?? '';
      output.push(...parts);
    });
    stream.on('end', () => {
      if (partial !== '') output.push(partial);
    });
  };
  if (proc.stdout) collect(proc.stdout);
  if (proc.stderr) collect(proc.stderr);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${port}`;
  const child: ChildService = {
    proc,
    port,
    url,
    ws: (p) => `ws://127.0.0.1:${port}${p}`,
    output,
    exit,
    kill: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exit;
      }
    },
  };
  try {
    const early = exit.then((e) => {
      throw new Error(`service exited early: ${JSON.stringify(e)}`);
    });
    early.catch(() => undefined); // it rejects at every exit, also the expected one at the end of the test
    await Promise.race([waitForStatus(`${url}/health/${ready}`, 200, 30_000), early]);
  } catch (err) {
    await child.kill();
    throw new Error(`${String(err)}\n--- service output ---\n${output.join('\n')}`);
  }
  return child;
}

/** Publish through a service's HTTP API. */
export function publishVia(url: string, body: unknown, key = CHILD_PUBLISH_KEY): Promise<Response> {
  return fetch(`${url}/api/v1/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
    body: JSON.stringify(body),
  });
}

/** `p`, or a rejection naming `what` after `ms`; the timer is cleared either way (no open handle left to Jest). */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
