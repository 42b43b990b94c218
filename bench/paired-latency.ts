/**
 * Paired latency: several service builds or settings run at the same time, so that every one of them sees the same
 * machine load at the same moment (on a shared machine, runs one after another mostly measure the neighbours).
 * Used for ADR 0003's decision 6 (the live tail's reader).
 *
 *   node bench/dist/paired-latency.js [--rate 500] [--seconds 15] [--channels 50] [--same] VARIANT...
 *   VARIANT = name=ROOT[:KEY=VALUE,...]   (ROOT/dist/main.js; the environment added to that instance's)
 *
 * e.g. `pre11=/work/pre11 amqp=.:STREAM_TAIL_READER=amqp stream=.:STREAM_TAIL_READER=stream`.
 *
 * Each instance gets its own exchange, and every event is published to each exchange back to back (the order
 * rotates); with `--same` all instances share one exchange and each event is published once, so they read the very
 * same stream and only the read path differs (same build only: older builds declare other queue types). One socket
 * per channel per instance; latency is publish → frame on the socket, on one clock (this process's). Prints one JSON
 * line per instance: p50/p90/p99/max in ms, frames received and expected, the instance's CPU seconds.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import amqp from 'amqplib';
import WebSocket from 'ws';
import { accessToken } from './lib/token';

interface Variant {
  name: string;
  root: string;
  env: Record<string, string>;
  exchange: string;
  port: number;
  proc?: ChildProcess;
  latencies: number[];
  cpu0: number;
}

const RABBIT = process.env.BENCH_RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const SECRET = 'paired-latency';
const now = (): number => performance.timeOrigin + performance.now();
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return Math.round(sorted[Math.floor(q * (sorted.length - 1))] * 100) / 100;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const option = (flag: string, fallback: number): number => {
    const i = args.indexOf(flag);
    if (i < 0) return fallback;
    const v = Number(args.splice(i, 2)[1]);
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${flag}: a positive number`);
    return v;
  };
  const rate = option('--rate', 500);
  const seconds = option('--seconds', 15);
  const channels = option('--channels', 50);
  const same = args.includes('--same');
  const tag = `paired-${process.pid}`;
  const variants: Variant[] = args
    .filter((a) => a !== '--same')
    .map((spec, i) => {
      const m = /^([\w-]+)=([^:]+)(?::(.*))?$/.exec(spec);
      if (m === null) throw new Error(`not a variant: ${spec} (name=ROOT[:KEY=VALUE,...])`);
      const env = Object.fromEntries(
        (m[3] ?? '')
          .split(',')
          .filter(Boolean)
          .map((kv) => kv.split('=') as [string, string]),
      );
      return {
        name: m[1],
        root: resolve(m[2]),
        env,
        exchange: same ? `${tag}-same` : `${tag}-${m[1]}`,
        port: 18400 + (process.pid % 500) + i,
        latencies: [],
        cpu0: 0,
      };
    });
  if (variants.length === 0) throw new Error('no variant given');
  const sockets: WebSocket[] = [];
  const conn = await amqp.connect(RABBIT, { noDelay: true });
  try {
    for (const v of variants) {
      v.proc = spawn(process.execPath, [`${v.root}/dist/main.js`], {
        cwd: v.root,
        env: {
          PATH: process.env.PATH,
          NODE_ENV: 'production',
          PORT: String(v.port),
          RABBITMQ_URL: RABBIT,
          RABBITMQ_EXCHANGE: v.exchange,
          DJANGO_SECRET_KEY: SECRET,
          LOG_LEVEL: 'warn',
          ...v.env,
        },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
    }
    for (const v of variants) {
      for (let tries = 0; ; tries++) {
        const ok = await fetch(`http://127.0.0.1:${v.port}/health/ready`).then(
          (r) => r.status === 200,
          () => false,
        );
        if (ok) break;
        if (tries > 600) throw new Error(`${v.name} not ready within 60 s`);
        await sleep(100);
      }
    }
    const token = accessToken(SECRET, 1);
    for (const v of variants) {
      for (let c = 1; c <= channels; c++) {
        const ws = new WebSocket(`ws://127.0.0.1:${v.port}/ws/execution/${c}?token=${token}`);
        sockets.push(ws);
        ws.on('message', (data: Buffer) => {
          const at = now();
          const m = /"t":([0-9.]+)/.exec(data.toString('utf8'));
          if (m !== null) v.latencies.push(at - Number(m[1]));
        });
        await new Promise<void>((ok, fail) => {
          ws.once('open', () => ok());
          ws.once('error', fail);
        });
      }
    }
    await sleep(1000);
    for (const v of variants) v.cpu0 = cpuSeconds(v.proc?.pid ?? 0);
    const ch = await conn.createChannel();
    const exchanges = same ? [variants[0].exchange] : variants.map((v) => v.exchange);
    const t0 = Date.now();
    let sent = 0;
    while (Date.now() - t0 < seconds * 1000) {
      const due = Math.floor(((Date.now() - t0) / 1000) * rate);
      for (; sent < due; sent++) {
        const key = `execution.${1 + (sent % channels)}`;
        for (let k = 0; k < exchanges.length; k++) {
          const exchange = exchanges[(sent + k) % exchanges.length];
          const body = Buffer.from(JSON.stringify({ type: 'log_entry', t: now(), message: 'x'.repeat(100) }));
          ch.publish(exchange, key, body, { headers: { 'x-published-at-ms': Date.now() } });
        }
      }
      await sleep(2);
    }
    await sleep(2000);
    const load = loadavg()[0];
    for (const v of variants) {
      const l = v.latencies;
      const figures = { variant: v.name, events: sent, frames: l.length, expected: sent };
      const cpu = Math.round((cpuSeconds(v.proc?.pid ?? 0) - v.cpu0) * 100) / 100;
      console.log(JSON.stringify({ ...figures, p50: quantile(l, 0.5), p90: quantile(l, 0.9), p99: quantile(l, 0.99), max: quantile(l, 1), cpu_s: cpu, load }));
    }
  } finally {
    for (const s of sockets) s.terminate();
    for (const v of variants) {
      if (v.proc === undefined || v.proc.exitCode !== null) continue;
      const exited = new Promise((r) => v.proc?.once('exit', r));
      v.proc.kill('SIGTERM');
      await Promise.race([exited, sleep(10_000)]);
    }
    // Delete what the instances declared, one channel per step: a failed delete closes its channel.
    for (const v of variants) {
      for (const q of ['stream', 'replay', 'validate', 'dead-letter']) {
        const c = await conn.createChannel();
        await c.deleteQueue(`${v.exchange}.${q}`).then(
          () => c.close(),
          () => undefined,
        );
      }
      for (const e of [v.exchange, `${v.exchange}.dlx`]) {
        const c = await conn.createChannel();
        await c.deleteExchange(e).then(
          () => c.close(),
          () => undefined,
        );
      }
    }
    await conn.close();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
