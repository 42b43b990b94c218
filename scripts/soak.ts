/**
 * Soak: holds thousands of WebSocket connections on the real service with steady events and churn for a stated time,
 * and prints memory, connections and event-loop delay every interval, then a summary. Not part of `npm test`.
 *
 *   npm run soak -- --connections 5000 --minutes 10 --events-per-second 50 --churn 250 --channels 100
 *
 * The service runs in this process (bootstrap(), as main.ts does), so the figures are the service's own heap, RSS
 * and event loop (plus this small driver). Clients live in child processes (test/hardening/conn-worker.js), events go
 * through POST /api/v1/publish. Traffic stays on 127.0.0.0/8.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import jwt from 'jsonwebtoken';
import { bootstrap } from '../src/bootstrap';
import { ConnectionRegistry } from '../src/gateway/connection-registry';

interface Options {
  connections: number;
  minutes: number;
  workers: number;
  eventsPerSecond: number;
  churn: number;
  channels: number;
  intervalSeconds: number;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { connections: 5000, minutes: 10, workers: 4, eventsPerSecond: 50, churn: 250, channels: 100, intervalSeconds: 30 };
  const names: Record<string, keyof Options> = {
    '--connections': 'connections',
    '--minutes': 'minutes',
    '--workers': 'workers',
    '--events-per-second': 'eventsPerSecond',
    '--churn': 'churn',
    '--channels': 'channels',
    '--interval-seconds': 'intervalSeconds',
  };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--help') {
      console.log(`flags: ${Object.keys(names).join(' ')} (defaults ${JSON.stringify(o)}); --churn is connections closed and reopened per interval`);
      process.exit(0);
    }
    const key = names[argv[i]];
    const value = Number(argv[i + 1]);
    if (key === undefined || !Number.isFinite(value) || value < 0) throw new Error(`bad flag ${argv[i]} ${argv[i + 1]} (--help)`);
    o[key] = value;
    i++;
  }
  return o;
}

type Reply = Record<string, unknown> & { cmd: string };

/** One conn-worker.js child: request/reply over IPC. */
class Worker {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<string, (r: Reply) => void>();
  constructor() {
    this.child = fork(join(REPO, 'test', 'hardening', 'conn-worker.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: Reply) => {
      const w = this.waiting.get(m.cmd);
      this.waiting.delete(m.cmd);
      w?.(m);
    });
  }
  request(cmd: string, args: Record<string, unknown> = {}): Promise<Reply> {
    return new Promise((resolve) => {
      this.waiting.set(cmd, resolve);
      this.child.send({ cmd, ...args });
    });
  }
}

/** Compiled to scripts/dist/scripts/soak.js: the repository is three levels up. */
const REPO = join(__dirname, '..', '..', '..');
const SECRET = `soak-${randomBytes(16).toString('hex')}`;
const PUBLISH_KEY = `soak-${randomBytes(8).toString('hex')}`;
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const svc = await bootstrap({
    NODE_ENV: 'development',
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'warn',
    DJANGO_SECRET_KEY: SECRET,
    PUBLISH_API_KEY: PUBLISH_KEY,
    WS_MAX_CONNECTIONS: '19500',
    WS_MAX_CONNECTIONS_PER_IP: '19500',
    WS_MAX_CONNECTIONS_PER_USER: '19500',
  });
  const registry = svc.app.get(ConnectionRegistry);
  const now = Math.floor(Date.now() / 1000);
  const token = (userId: number): string =>
    jwt.sign({ token_type: 'access', exp: now + o.minutes * 60 + 3600, iat: now, jti: randomBytes(16).toString('hex'), user_id: userId }, SECRET, { algorithm: 'HS256' });
  const rss0 = process.memoryUsage();
  console.log(`soak: ${JSON.stringify(o)}; service on ${svc.url}; idle RSS ${mib(rss0.rss)}, heap ${mib(rss0.heapUsed)}`);

  // Open: each worker holds connections/workers sockets spread over its share of the channels.
  const workers = Array.from({ length: o.workers }, () => new Worker());
  const t0 = Date.now();
  const perChannel = Math.max(1, Math.floor(o.connections / o.channels));
  await Promise.all(
    workers.map(async (w, wi) => {
      for (let ch = wi; ch < o.channels; ch += o.workers) {
        await w.request('open', { url: `ws://127.0.0.1:${svc.port}/ws/execution/${ch + 1}?token=${token(ch + 1)}`, n: perChannel, localAddress: `127.0.${50 + wi}.1`, concurrency: 100 });
      }
    }),
  );
  console.log(`opened ${registry.size} connections in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

  // Steady events through the publish API, every 100 ms.
  let published = 0;
  let publishErrors = 0;
  const perTick = Math.max(1, Math.round(o.eventsPerSecond / 10));
  const publisher = setInterval(() => {
    const batch = Array.from({ length: perTick }, () => ({
      channel: `execution.${1 + Math.floor(Math.random() * o.channels)}`,
      event: { type: 'log_entry', level: 'info', message: `line ${published} ${'x'.repeat(200)}`, timestamp: new Date().toISOString() },
    }));
    fetch(`${svc.url}/api/v1/publish`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISH_KEY}` }, body: JSON.stringify(batch) })
      .then((r) => (r.status === 202 ? (published += perTick) : publishErrors++))
      .catch(() => publishErrors++);
  }, 100);

  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  const rows: { t: number; rss: number; heap: number; conns: number; lagP99: number; lagMax: number }[] = [];
  let churned = 0;
  let churnFailed = 0;
  const end = Date.now() + o.minutes * 60_000;
  console.log('   t(s)  connections        RSS       heap   loop p99   loop max   published   received   churned');
  while (Date.now() < end) {
    await new Promise((r) => setTimeout(r, Math.min(o.intervalSeconds * 1000, end - Date.now())));
    const churn = await Promise.all(workers.map((w) => w.request('churn', { n: Math.floor(o.churn / o.workers) })));
    churned += Math.floor(o.churn / o.workers) * o.workers;
    churnFailed += churn.reduce((s, r) => s + (r.failed as number), 0);
    const stats = await Promise.all(workers.map((w) => w.request('stats')));
    const received = stats.reduce((s, r) => s + (r.events as number), 0);
    const m = process.memoryUsage();
    const row = { t: (Date.now() - t0) / 1000, rss: m.rss, heap: m.heapUsed, conns: registry.size, lagP99: lag.percentile(99) / 1e6, lagMax: lag.max / 1e6 };
    rows.push(row);
    lag.reset();
    console.log(
      `${row.t.toFixed(0).padStart(7)}  ${String(row.conns).padStart(11)}  ${mib(row.rss).padStart(9)}  ${mib(row.heap).padStart(9)}  ${row.lagP99.toFixed(1).padStart(6)} ms  ${row.lagMax.toFixed(1).padStart(6)} ms  ${String(published).padStart(10)}  ${String(received).padStart(9)}  ${String(churned).padStart(8)}`,
    );
  }
  clearInterval(publisher);
  const stats = await Promise.all(workers.map((w) => w.request('stats')));
  await Promise.all(workers.map((w) => w.request('exit')));
  const max = (f: (r: (typeof rows)[number]) => number): number => Math.max(...rows.map(f));
  const min = (f: (r: (typeof rows)[number]) => number): number => Math.min(...rows.map(f));
  const first = rows[0];
  const last = rows[rows.length - 1];
  console.log(
    [
      'summary:',
      `  duration ${o.minutes} min, ${o.connections} connections target, ${o.channels} channels, ${o.eventsPerSecond} events/s, churn ${o.churn} per ${o.intervalSeconds} s`,
      `  connections: min ${min((r) => r.conns)}, max ${max((r) => r.conns)}; churned ${churned}, churn failures ${churnFailed}`,
      `  RSS: idle ${mib(rss0.rss)}, first interval ${mib(first.rss)}, max ${mib(max((r) => r.rss))}, last ${mib(last.rss)}`,
      `  heap: idle ${mib(rss0.heapUsed)}, first interval ${mib(first.heap)}, min ${mib(min((r) => r.heap))}, max ${mib(max((r) => r.heap))}, last ${mib(last.heap)}`,
      `  event-loop delay: worst interval p99 ${max((r) => r.lagP99).toFixed(1)} ms, max ${max((r) => r.lagMax).toFixed(1)} ms`,
      `  events: published ${published} (publish errors ${publishErrors}), frames received by clients ${stats.reduce((s, r) => s + (r.events as number), 0)}`,
    ].join('\n'),
  );
  await svc.shutdown();
  process.exit(0);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
