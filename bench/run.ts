/**
 * `npm run bench`: measures the service against a minimal baseline hub (`baseline-hub.ts`) under the same
 * load, in the same run, on this machine. See bench/README.md for the scenarios, flags and targets.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import type amqp from 'amqplib';
import { Broker } from './lib/broker';
import { Child } from './lib/children';
import { Context, type Figures, type Publisher, type Worker } from './lib/context';
import type { Options } from './lib/options';
import { Hub, type HubKind } from './lib/hubs';
import { machineLoad, sleep } from './lib/proc';
import type { PublisherCommand, PublisherReply, WorkerCommand, WorkerReply } from './lib/ipc';
import { parseOptions } from './lib/options';
import { medianResults, renderTable, resultKey, tableRows, type Results } from './lib/report';
import { capacity } from './scenarios/capacity';
import { churn } from './scenarios/churn';
import { fanout } from './scenarios/fanout';
import { latency } from './scenarios/latency';
import { startup } from './scenarios/startup';
import { workers } from './scenarios/workers';

const repoRoot = resolve(__dirname, '..', '..');

function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function ensureServiceBuilt(): void {
  if (existsSync(join(repoRoot, 'dist', 'main.js'))) return;
  log('dist/main.js missing: npm run build');
  const r = spawnSync('npm', ['run', 'build'], { cwd: repoRoot, stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0 || !existsSync(join(repoRoot, 'dist', 'main.js'))) {
    throw new Error('npm run build did not produce dist/main.js');
  }
}

function machine(): Figures {
  let osName = 'linux';
  try {
    osName = /PRETTY_NAME="([^"]+)"/.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? osName;
  } catch {
    // Not fatal: the name is only printed.
  }
  return {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memory_gb: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    os: osName,
    node: process.version,
  };
}

type ScenarioRun = (ctx: Context, kind: HubKind) => Promise<Figures>;

const FRESH_ONLY = new Set(['startup', 'workers']);

function plan(opts: Options): [string, ScenarioRun][] {
  const all: Record<string, [string, ScenarioRun][]> = {
    capacity: [['capacity', capacity]],
    latency: [['latency', (c, k) => latency(c, k, 1)]],
    fanout: [
      ['fanout', (c, k) => fanout(c, k, false)],
      ['fanout_batch', (c, k) => fanout(c, k, true)],
    ],
    churn: [['churn', churn]],
    multi: [['multi', (c, k) => latency(c, k, 2)]],
    startup: [['startup', startup]],
    workers: [['workers', workers]],
  };
  return opts.only.flatMap((s) => all[s]);
}

/** One scenario against one hub, with a second attempt when the first failed (RabbitMQ may have been restarted). */
async function runOnce(ctx: Context, run: ScenarioRun, kind: HubKind, label: string): Promise<Figures> {
  const t0 = Date.now();
  const load = machineLoad();
  log(`${label} ... (load ${load.loadavg1}, cpu pressure ${load.cpu_pressure_avg10}%)`);
  let figures: Figures = {};
  for (let attempt = 1; attempt <= 2; attempt++) {
    try {
      figures = { ...(await run(ctx, kind)), ...ctx.startFigures };
      if (attempt > 1) figures.attempts = attempt;
      break;
    } catch (err) {
      figures = { error: err instanceof Error ? err.message : String(err) };
      log(`${label} attempt ${attempt} failed: ${figures.error}`);
      // A failed scenario may leave sockets open: close them before the next one.
      await ctx.closeAll().catch(() => undefined);
      Hub.killAll();
      if (attempt === 1) await waitForBroker(ctx.broker);
    }
  }
  figures.loadavg1_before = load.loadavg1;
  figures.cpu_pressure_before = load.cpu_pressure_avg10;
  log(`${label} done in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${JSON.stringify(figures)}`);
  return figures;
}

/** Figures that need two runs of one round: batched vs unbatched fan-out, the memory budget of the history. */
function derive(results: Results, opts: Options): void {
  for (const mode of opts.modes) {
    const batch = results[resultKey('fanout_batch', mode)];
    const unbatched = results[resultKey('fanout', mode)];
    const fresh = results.capacity;
    const full = results[resultKey('capacity', mode)];
    for (const kind of opts.targets) {
      const b = batch?.[kind]?.deliveries_per_s;
      const u = unbatched?.[kind]?.deliveries_per_s;
      if (typeof b === 'number' && typeof u === 'number' && batch?.[kind]) batch[kind].gain_vs_unbatched = b / u;
      // With history: RSS ≤ the same run's fresh idle RSS + 1.5 × what the history holds.
      const idle = fresh?.[kind]?.idle_rss_mb;
      const held = full?.[kind]?.history_mb;
      if (mode === 'history' && full?.[kind] && typeof idle === 'number' && typeof held === 'number') {
        full[kind].rss_budget_mb = idle + 1.5 * held;
      }
    }
  }
}

/** Deletes every exchange and queue of this run (the service names its queues/streams after the exchange). */
async function cleanupBroker(conn: amqp.ChannelModel, runId: string, exchanges: string[]): Promise<void> {
  const list = (what: 'list_queues' | 'list_exchanges'): string[] => {
    try {
      return execFileSync('rabbitmqctl', [what, '-q', '--no-table-headers', 'name'], {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
      })
        .split('\n')
        .map((s) => s.trim())
        .filter((s) => s.includes(runId));
    } catch {
      return [];
    }
  };
  const ch = await conn.createChannel();
  ch.on('error', () => undefined);
  const queues = list('list_queues');
  for (const q of queues) await ch.deleteQueue(q);
  const names = new Set([...exchanges, ...list('list_exchanges')]);
  for (const e of names) await ch.deleteExchange(e);
  await ch.close();
  log(`broker: deleted ${queues.length} queue(s)/stream(s), ${names.size} exchange(s) of run ${runId}`);
}

/** Waits (up to a minute) until RabbitMQ accepts a connection again. */
async function waitForBroker(broker: Broker): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    try {
      await broker.connection();
      return;
    } catch {
      await sleep(1000);
    }
  }
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const started = Date.now();
  const loadAtStart = machineLoad();
  if (loadAtStart.loadavg1 > 1) {
    log(`warning: load average ${loadAtStart.loadavg1} before the run: other work on this machine skews the figures`);
  }
  const runId = randomBytes(4).toString('hex');
  if (opts.targets.includes('service')) ensureServiceBuilt();
  log(`run ${runId}: scenarios ${opts.only.join(',')}; targets ${opts.targets.join(',')}; ${opts.workers} client processes`);

  const broker = new Broker(opts.rabbitUrl);
  await broker.connection(); // fail fast when RabbitMQ is not there at all
  const workers: Worker[] = Array.from({ length: opts.workers }, (_, i) => new Child<WorkerCommand, WorkerReply>('client-worker.js', `client worker ${i}`));
  const publisher: Publisher = new Child<PublisherCommand, PublisherReply>('publisher.js', 'publisher');
  const children = [...workers, publisher];
  const shutdown = (): void => {
    for (const c of children) c.kill();
    Hub.killAll();
  };
  process.on('SIGINT', () => {
    shutdown();
    process.exit(130);
  });

  const runs: Results[] = [];
  const ctx = new Context(
    opts,
    workers,
    publisher,
    broker,
    {
      rabbitUrl: opts.rabbitUrl,
      secret: opts.secret,
      apiKey: opts.apiKey,
      repoRoot: opts.serviceRoot === undefined ? repoRoot : resolve(opts.serviceRoot),
      logDir: join(repoRoot, 'bench', 'results', 'logs'),
      extraEnv: opts.serviceEnv,
      baselineEnv: opts.baselineEnv,
      nodeArgs: opts.serviceNodeArgs,
    },
    runId,
  );
  try {
    await Promise.all(children.map((c) => c.ready));
    await publisher.call({ cmd: 'open', url: opts.rabbitUrl }, 'opened');

    for (let round = 1; round <= opts.repeat; round++) {
      const results: Results = {};
      runs.push(results);
      for (const [name, run] of plan(opts)) {
        // startup fills its own stream; workers compares process counts (each start would pre-fill again): fresh only.
        for (const mode of FRESH_ONLY.has(name) ? (['fresh'] as const) : opts.modes) {
          const key = resultKey(name, mode);
          for (const kind of opts.targets) {
            ctx.mode = mode;
            (results[key] ??= {})[kind] = await runOnce(ctx, run, kind, `${key} / ${kind}${opts.repeat > 1 ? ` (run ${round}/${opts.repeat})` : ''}`);
          }
        }
      }
      derive(results, opts);
    }
  } finally {
    await cleanupBroker(await broker.connection(), runId, ctx.exchanges).catch((err: unknown) => log(`broker clean-up failed: ${String(err)}`));
    await publisher.call({ cmd: 'close' }, 'closed', 5000).catch(() => undefined);
    shutdown();
    await broker.close();
  }

  const results = medianResults(runs);
  const rows = tableRows(results);
  const seconds = (Date.now() - started) / 1000;
  const m = machine();
  const when = new Date().toISOString();
  console.log(
    `\nansflow-realtime benchmark ${when}: ${m.nproc} cores (${m.cpu}), ${m.memory_gb} GB, ${m.os}, Node ${m.node};` +
      ` load generator on the same machine; run took ${seconds.toFixed(0)} s${opts.quick ? ' (--quick)' : ''};` +
      ` load average before ${loadAtStart.loadavg1}${opts.repeat > 1 ? `; medians of ${runs.length} runs` : ''}` +
      `${opts.baselineEnv.BASELINE_SOURCE === 'stream' ? '; the baseline hub reads a stream (BASELINE_SOURCE=stream)' : ''}\n`,
  );
  console.log(renderTable(rows));
  const out = resolve(repoRoot, opts.json);
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(
    out,
    JSON.stringify(
      { date: when, machine: m, load_before: loadAtStart, seconds, options: { ...opts, secret: undefined, apiKey: undefined }, results, runs, table: rows },
      null,
      2,
    ),
  );
  console.log(`\nJSON: ${out}`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
