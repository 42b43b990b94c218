import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync, utimesSync } from 'node:fs';
import { join } from 'node:path';
import amqp, { type ChannelModel, type ConfirmChannel } from 'amqplib';
import { PUBLISH_KEY } from './service';
import { TEST_SECRET } from './tokens';

export const RABBITMQ_URL = process.env.TEST_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';

const ROOT = join(__dirname, '..', '..');
/** Kept per instance so a failing test can show what the process said last. */
const LOG_LINES = 300;

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestMtime(path));
    else if (entry.name.endsWith('.ts') && !entry.name.endsWith('.spec.ts')) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/**
 * The instances run the compiled service (`node <build>/main.js`, as production runs `node dist/main`): a separate
 * process is the only way to SIGKILL one. They run a private build of the working tree, compiled with tsc from
 * tsconfig.build.json when src is newer: rebuilding the shared dist/ (`nest build` deletes it first) would pull it
 * from under other suites and engineers running from it. CLUSTER_DIST=dist runs the shared dist/ as it is.
 */
const PRIVATE_BUILD = join(ROOT, 'node_modules', '.cache', 'ansflow-cluster');

export function ensureBuilt(): string {
  if (process.env.CLUSTER_DIST !== undefined) {
    const main = join(ROOT, process.env.CLUSTER_DIST, 'main.js');
    if (!existsSync(main)) throw new Error(`${main} missing: run npm run build first`);
    return main;
  }
  const main = join(PRIVATE_BUILD, 'dist', 'main.js');
  const stale = (): boolean => !existsSync(main) || statSync(main).mtimeMs < newestMtime(join(ROOT, 'src'));
  if (!stale()) return main;
  mkdirSync(PRIVATE_BUILD, { recursive: true });
  const tsc = join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  try {
    // The lock keeps two suites starting at once from compiling into the same directory together.
    execFileSync('flock', [`${PRIVATE_BUILD}.lock`, process.execPath, tsc, '-p', 'tsconfig.build.json', '--outDir', join(PRIVATE_BUILD, 'dist')], {
      cwd: ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
  } catch (err) {
    const out = (err as { stdout?: Buffer }).stdout?.toString() ?? '';
    throw new Error(`compiling src failed:\n${out.slice(0, 4000)}`);
  }
  // bootstrap reads the version from ../package.json next to its build directory.
  copyFileSync(join(ROOT, 'package.json'), join(PRIVATE_BUILD, 'package.json'));
  // tsc leaves main.js untouched when its output did not change: mark the build as fresh.
  utimesSync(main, new Date(), new Date());
  return main;
}

export interface StartOptions {
  /** Extra environment for this instance (e.g. HISTORY_SIZE). */
  env?: Record<string, string>;
  /** Wait for `/health/ready` (default true). */
  ready?: boolean;
  /** A fixed port instead of one from the kernel (instances on different HOSTs may share one). */
  port?: number;
}

/** One `node dist/main` child process; keeps its port across restarts so clients can come back to it. */
export class Instance {
  port = 0;
  proc: ChildProcess | undefined;
  readonly logs: string[] = [];
  private exited: Promise<number | null> = Promise.resolve(null);

  constructor(
    readonly name: string,
    private readonly main: string,
    private readonly env: Record<string, string>,
  ) {}

  /** The address it listens on: HOST of its environment (a proxy test puts instances on 127.0.0.2, .3, ...). */
  get host(): string {
    return this.env.HOST ?? '127.0.0.1';
  }

  get url(): string {
    return `http://${this.host}:${this.port}`;
  }

  ws(path: string): string {
    return `ws://${this.host}:${this.port}${path}`;
  }

  get running(): boolean {
    return this.proc !== undefined && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  /** Spawn the process; the first start takes a free port from the kernel (PORT=0) and reads it from the log. */
  async start(ms = 30_000): Promise<void> {
    if (this.running) throw new Error(`${this.name} is already running`);
    const proc = spawn(process.execPath, [this.main], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', ...this.env, PORT: String(this.port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.proc = proc;
    this.exited = new Promise((resolve) => proc.once('exit', (code) => resolve(code)));
    const listening = new Promise<number>((resolve, reject) => {
      let buffered = '';
      const onData = (chunk: Buffer): void => {
        buffered += chunk.toString('utf8');
        let nl: number;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          this.remember(line);
          const port = listeningPort(line);
          if (port !== undefined) resolve(port);
        }
      };
      proc.stdout?.on('data', onData);
      proc.stderr?.on('data', onData);
      proc.once('exit', (code, signal) => reject(new Error(`${this.name} exited (${code ?? signal}) before listening:\n${this.tail()}`)));
    });
    this.port = await withDeadline(listening, ms, () => `${this.name} did not listen within ${ms} ms:\n${this.tail()}`);
  }

  /** Poll `/health/ready` until 200 (the instance is connected to the broker and caught up with the stream). */
  async waitReady(ms = 30_000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      if (!this.running) throw new Error(`${this.name} is not running:\n${this.tail()}`);
      try {
        const res = await fetch(`${this.url}/health/ready`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) return;
      } catch {
        // Not listening yet or busy replaying: ask again.
      }
      if (Date.now() > deadline) throw new Error(`${this.name} not ready within ${ms} ms:\n${this.tail()}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  /** Send `signal` and wait for the exit; returns the exit code (null when killed by the signal). */
  async kill(signal: NodeJS.Signals = 'SIGKILL', ms = 15_000): Promise<number | null> {
    if (!this.running) return this.proc?.exitCode ?? null;
    this.proc?.kill(signal);
    return withDeadline(this.exited, ms, () => `${this.name} did not exit within ${ms} ms of ${signal}`);
  }

  async restart(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await this.kill(signal);
    await this.start();
    await this.waitReady();
  }

  /**
   * Have the broker close this instance's AMQP connection(s), as a broker restart or a network cut would; the
   * instance reconnects by itself. Finds them by the local ports of the process's sockets to 5672.
   */
  dropBrokerConnection(): number {
    const pid = this.proc?.pid;
    if (pid === undefined || !this.running) throw new Error(`${this.name} is not running`);
    const sockets = execFileSync('ss', ['-tnpH', 'state', 'established', '( dport = :5672 )'], { encoding: 'utf8' });
    const ports = new Set(
      sockets
        .split('\n')
        .filter((l) => l.includes(`pid=${pid},`))
        .map((l) => /:(\d+)\s+\S+:5672\b/.exec(l)?.[1])
        .filter((p): p is string => p !== undefined),
    );
    const listed = execFileSync('rabbitmqctl', ['list_connections', 'pid', 'peer_port', '--quiet', '--no-table-headers'], { encoding: 'utf8' });
    let closed = 0;
    for (const line of listed.split('\n')) {
      const [connPid, peerPort] = line.trim().split(/\s+/);
      if (connPid === undefined || peerPort === undefined || !ports.has(peerPort)) continue;
      execFileSync('rabbitmqctl', ['close_connection', connPid, 'test: broker connection dropped'], { stdio: 'ignore' });
      closed++;
    }
    return closed;
  }

  /** Poll `/health/ready` until it answers `status` (e.g. 503 while the broker connection is down). */
  async waitReadiness(status: number, ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    for (;;) {
      const res = await fetch(`${this.url}/health/ready`, { signal: AbortSignal.timeout(1000) }).catch(() => undefined);
      await res?.arrayBuffer();
      if (res?.status === status) return;
      if (Date.now() > deadline) throw new Error(`${this.name}: /health/ready did not answer ${status} within ${ms} ms:\n${this.tail()}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  }

  /** The JSON log lines of this instance that contain `msg` (parsed). */
  logged(msg: string): Record<string, unknown>[] {
    return this.logs
      .filter((l) => l.includes(msg))
      .flatMap((l): Record<string, unknown>[] => {
        const v = parseJson(l);
        return v === undefined ? [] : [v];
      });
  }

  tail(n = 40): string {
    return this.logs.slice(-n).join('\n');
  }

  private remember(line: string): void {
    this.logs.push(line);
    if (this.logs.length > LOG_LINES) this.logs.splice(0, this.logs.length - LOG_LINES);
  }
}

/** The environment of an instance reading `exchange` on the test broker (test keys), plus `env`. */
export function instanceEnv(exchange: string, env: Record<string, string> = {}): Record<string, string> {
  return {
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'info',
    DJANGO_SECRET_KEY: TEST_SECRET,
    PUBLISH_API_KEY: PUBLISH_KEY,
    RABBITMQ_URL,
    RABBITMQ_EXCHANGE: exchange,
    ...env,
  };
}

/**
 * N instances of the service on one RabbitMQ exchange of their own (`test.<random>`), as a deployment runs them
 * behind a load balancer. `cleanup()` kills them and deletes what the service declared on the broker.
 */
export class Cluster {
  readonly instances: Instance[] = [];
  private readonly publishers: Publisher[] = [];

  private constructor(
    readonly exchange: string,
    private readonly main: string,
    private readonly env: Record<string, string>,
  ) {}

  static async start(n: number, env: Record<string, string> = {}): Promise<Cluster> {
    const main = ensureBuilt();
    const exchange = `test.${randomBytes(6).toString('hex')}`;
    const cluster = new Cluster(exchange, main, instanceEnv(exchange, env));
    await Promise.all(Array.from({ length: n }, () => cluster.add()));
    return cluster;
  }

  /** Start one more instance on the same exchange (with extra environment), ready unless told otherwise. */
  async add(opts: StartOptions = {}): Promise<Instance> {
    const instance = new Instance(String.fromCharCode(65 + this.instances.length), this.main, { ...this.env, ...opts.env });
    this.instances.push(instance);
    if (opts.port !== undefined) instance.port = opts.port;
    await instance.start();
    if (opts.ready !== false) await instance.waitReady();
    return instance;
  }

  async publisher(): Promise<Publisher> {
    const p = await Publisher.connect(this.exchange);
    this.publishers.push(p);
    return p;
  }

  async cleanup(): Promise<void> {
    await Promise.allSettled(this.instances.map((i) => i.kill('SIGKILL')));
    await Promise.allSettled(this.publishers.map((p) => p.close()));
    // Other suites stop and start the shared broker (test/support/broker.ts): try again for a while rather than
    // leave a stream on its disk.
    for (let attempt = 1; ; attempt++) {
      try {
        await deleteBrokerObjects(this.exchange);
        return;
      } catch (err) {
        if (attempt >= 10) throw err;
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  }
}

/** Delete the exchange and everything the service derives from its name (see brokerNames in message-policy). */
export async function deleteBrokerObjects(exchange: string): Promise<void> {
  const conn = await amqp.connect(RABBITMQ_URL, { noDelay: true });
  try {
    const ch = await conn.createChannel();
    for (const q of [`${exchange}.stream`, `${exchange}.replay`, `${exchange}.validate`, `${exchange}.dead-letter`]) await ch.deleteQueue(q);
    for (const x of [exchange, `${exchange}.dlx`]) await ch.deleteExchange(x);
    await ch.close();
  } finally {
    await conn.close();
  }
}

/** Publishes straight to the exchange as the Django side does (routing key = channel), with publisher confirms. */
export class Publisher {
  private constructor(
    private readonly conn: ChannelModel,
    private readonly ch: ConfirmChannel,
    readonly exchange: string,
  ) {}

  static async connect(exchange: string): Promise<Publisher> {
    // Without TCP_NODELAY, Nagle's algorithm adds ~20 ms to small messages.
    const conn = await amqp.connect(RABBITMQ_URL, { noDelay: true });
    const ch = await conn.createConfirmChannel();
    // The service declares the exchange when it connects; declaring it here too lets a publisher start first.
    await ch.assertExchange(exchange, 'topic', { durable: true });
    return new Publisher(conn, ch, exchange);
  }

  /** Resolves once the broker confirmed the message (it is in the stream). */
  publish(channel: string, event: Record<string, unknown>): Promise<void> {
    return new Promise((resolve, reject) => {
      this.send(channel, event, (err) => (err === null || err === undefined ? resolve() : reject(nacked(err))));
    });
  }

  /**
   * Publish `n` events as fast as the broker confirms them, respecting the socket's back-pressure, to `channel` (or
   * `channel(i)`); `onConfirmed(k)` is called with the number of events confirmed so far.
   */
  async burst(
    channel: string | ((i: number) => string),
    n: number,
    make: (i: number) => Record<string, unknown>,
    onConfirmed?: (confirmed: number) => void,
  ): Promise<void> {
    let confirmed = 0;
    const all: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      let writable = true;
      all.push(
        new Promise<void>((resolve, reject) => {
          writable = this.send(typeof channel === 'string' ? channel : channel(i), make(i), (err) => {
            if (err !== null && err !== undefined) return reject(nacked(err));
            onConfirmed?.(++confirmed);
            resolve();
          });
        }),
      );
      if (!writable) await new Promise((resolve) => this.ch.once('drain', resolve));
    }
    await Promise.all(all);
  }

  async close(): Promise<void> {
    await this.ch.close().catch(() => undefined);
    await this.conn.close().catch(() => undefined);
  }

  private send(channel: string, event: Record<string, unknown>, done: (err: unknown) => void): boolean {
    const now = Date.now();
    return this.ch.publish(
      this.exchange,
      channel,
      Buffer.from(JSON.stringify(event)),
      {
        messageId: randomUUID().replace(/-/g, ''),
        contentType: 'application/json',
        timestamp: Math.floor(now / 1000),
        headers: { 'x-published-at-ms': now },
        persistent: true,
      },
      done,
    );
  }
}

function listeningPort(line: string): number | undefined {
  if (!line.includes('ansflow-realtime listening')) return undefined;
  const port = parseJson(line)?.port;
  return typeof port === 'number' ? port : undefined;
}

function parseJson(line: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function withDeadline<T>(p: Promise<T>, ms: number, message: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(message())), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function nacked(err: unknown): Error {
  return new Error(`the broker refused the message: ${err instanceof Error ? err.message : JSON.stringify(err)}`);
}
