import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import type { ChannelModel } from 'amqplib';
import { freePort, sleep } from './proc';
import { accessToken } from './token';

export type HubKind = 'service' | 'baseline';

export interface HubOptions {
  exchange: string;
  rabbitUrl: string;
  secret: string;
  apiKey: string;
  repoRoot: string;
  logDir: string;
  /** Extra environment for the service (`--service-env K=V`). */
  extraEnv: Record<string, string>;
  /** Extra environment for the baseline hub (`--baseline-env K=V`). */
  baselineEnv: Record<string, string>;
  /** Node flags for the service process (`--service-node-args`). */
  nodeArgs: string[];
  /** Preload `probe.js` (event-loop delay and GC pauses, read with `probeMark` / `probeRead`). */
  probe?: boolean;
}

/** What `probe.js` reports from inside a hub process (see bench/probe.ts). */
export interface ProbeReport {
  seq: number;
  wall_ms: number;
  loop_delay_ms: { count: number; p50: number; p90: number; p99: number; p999: number; max: number; mean: number };
  gc: { count: number; total_ms: number; share: number; p50_ms: number; p99_ms: number; max_ms: number; by_kind: Record<string, { count: number; ms: number }> };
  event_loop_utilization: number;
  memory: Record<string, number>;
}

/** A running hub process (the service or the baseline) on 127.0.0.1:port. */
export class Hub {
  /** Every hub started and not yet exited, so an interrupted run can still kill them. */
  private static readonly running = new Set<Hub>();
  exitCode: number | string | null = null;

  private probeSeq = 0;

  private constructor(
    readonly kind: HubKind,
    readonly port: number,
    private readonly proc: ChildProcess,
    private readonly probeFile: string | undefined,
  ) {
    Hub.running.add(this);
    proc.on('exit', (code, signal) => {
      this.exitCode = code ?? signal;
      Hub.running.delete(this);
    });
  }

  static killAll(): void {
    for (const h of Hub.running) h.proc.kill('SIGKILL');
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  get alive(): boolean {
    return this.exitCode === null;
  }

  static async start(kind: HubKind, opts: HubOptions, tag: string): Promise<Hub> {
    const port = await freePort();
    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      NODE_ENV: 'production',
      // As the image and `npm start` run the service (Dockerfile); both hubs get it.
      MALLOC_MMAP_THRESHOLD_: '131072',
      PORT: String(port),
      RABBITMQ_URL: opts.rabbitUrl,
      RABBITMQ_EXCHANGE: opts.exchange,
      DJANGO_SECRET_KEY: opts.secret,
      PUBLISH_API_KEY: opts.apiKey,
      LOG_LEVEL: 'warn',
      WS_MAX_CONNECTIONS: '25000',
      WS_MAX_CONNECTIONS_PER_IP: '100000',
      WS_MAX_CONNECTIONS_PER_USER: '100000',
      ...(kind === 'service' ? opts.extraEnv : opts.baselineEnv),
    };
    const script = kind === 'service' ? join(opts.repoRoot, 'dist', 'main.js') : join(__dirname, '..', 'baseline-hub.js');
    mkdirSync(opts.logDir, { recursive: true });
    const log = createWriteStream(join(opts.logDir, `${tag}-${kind}-${port}.log`));
    const probeFile = opts.probe ? join(opts.logDir, `${tag}-${kind}-${port}.probe.json`) : undefined;
    if (probeFile !== undefined) {
      rmSync(probeFile, { force: true });
      env.BENCH_PROBE_FILE = probeFile;
    }
    const preload = probeFile === undefined ? [] : ['--require', join(__dirname, '..', 'probe.js')];
    const proc = spawn(process.execPath, [...(kind === 'service' ? opts.nodeArgs : []), ...preload, script], {
      cwd: opts.repoRoot,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    proc.stdout?.pipe(log);
    proc.stderr?.pipe(log);
    const hub = new Hub(kind, port, proc, probeFile);
    // Generous: with WORKERS > 1 every worker boots Nest at once and joins the port only once caught up with the
    // stream, which takes more than 30 s on a loaded 2-core machine.
    await hub.waitHealthy(120_000);
    return hub;
  }

  private async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (!this.alive) throw new Error(`${this.kind} exited during start-up (${this.exitCode})`);
      const status = await new Promise<number>((resolve) => {
        get({ host: '127.0.0.1', port: this.port, path: '/health', timeout: 1000 }, (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        }).on('error', () => resolve(0));
      });
      if (status === 200) return;
      await sleep(100);
    }
    throw new Error(`${this.kind} not healthy on port ${this.port} after ${timeoutMs} ms`);
  }

  /**
   * End-to-end readiness: a socket on a probe channel must receive an event published to the exchange (the
   * hub's queue is bound and consuming), not merely a `/health` 200.
   */
  async probe(conn: ChannelModel, exchange: string, secret: string, timeoutMs = 20_000): Promise<void> {
    // Publishing to an exchange that does not exist yet closes the AMQP channel: wait until the hub has
    // declared it (checking on throwaway channels), rather than declaring it ourselves with maybe other arguments.
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const probeCh = await conn.createChannel();
      probeCh.on('error', () => undefined);
      try {
        await probeCh.checkExchange(exchange);
        await probeCh.close();
        break;
      } catch {
        if (Date.now() > deadline) throw new Error(`${this.kind} never declared exchange ${exchange}`);
        await sleep(100);
      }
    }
    const ch = await conn.createChannel();
    const id = 999_000 + (this.port % 1000);
    const ws = new WebSocket(`ws://127.0.0.1:${this.port}/ws/execution/${id}?token=${accessToken(secret, 1)}`);
    try {
      const got = new Promise<void>((resolve, reject) => {
        ws.on('message', (data: Buffer) => {
          if (data.toString().includes('"probe":true')) resolve();
        });
        ws.on('close', (code) => reject(new Error(`${this.kind} closed the probe socket (${code})`)));
        ws.on('error', reject);
      });
      await new Promise<void>((resolve, reject) => {
        ws.once('open', () => resolve());
        ws.once('error', reject);
      });
      let done = false;
      void got.then(() => (done = true)).catch(() => undefined);
      while (!done) {
        if (Date.now() > deadline) throw new Error(`${this.kind}: no probe event within ${timeoutMs} ms`);
        ch.publish(exchange, `execution.${id}`, Buffer.from('{"type":"log_entry","probe":true}'));
        await Promise.race([got, sleep(250)]);
      }
    } finally {
      ws.terminate();
      await ch.close();
    }
  }

  /** Starts a new probe interval (what the probe saw so far is discarded). */
  async probeMark(): Promise<void> {
    await this.probeRead();
  }

  /** The probe's figures since the previous mark (SIGUSR2 makes the probe write them and start over). */
  async probeRead(timeoutMs = 10_000): Promise<ProbeReport> {
    const file = this.probeFile;
    if (file === undefined) throw new Error(`${this.kind} was started without the probe`);
    const seq = ++this.probeSeq;
    this.proc.kill('SIGUSR2');
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (existsSync(file)) {
        const report = JSON.parse(readFileSync(file, 'utf8')) as ProbeReport;
        if (report.seq === seq) return report;
      }
      await sleep(20);
    }
    throw new Error(`${this.kind}: no probe report within ${timeoutMs} ms`);
  }

  /** GET /health as JSON (the service reports its history there). */
  async health(): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      get({ host: '127.0.0.1', port: this.port, path: '/health', timeout: 5000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          try {
            resolve(JSON.parse(body) as Record<string, unknown>);
          } catch (err) {
            reject(err instanceof Error ? err : new Error(String(err)));
          }
        });
      }).on('error', reject);
    });
  }

  /** SIGTERM, then SIGKILL if it has not exited within 5 s. */
  async stop(): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise<void>((resolve) => this.proc.once('exit', () => resolve()));
    this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** The bytes the service's history holds, as its `/health` reports them (undefined when it does not). */
export function historyBytes(health: Record<string, unknown>): number | undefined {
  const history = (health.history ?? (health.websocket as Record<string, unknown> | undefined)?.history) as Record<string, unknown> | undefined;
  const bytes = history?.bytes;
  return typeof bytes === 'number' ? bytes : undefined;
}
