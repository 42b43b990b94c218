import { readdirSync, readFileSync } from 'node:fs';
import { get } from 'node:http';
import type { Context, Figures } from '../lib/context';
import type { HubKind } from '../lib/hubs';
import { sleep } from '../lib/proc';
import { fanout, fanoutOn } from './fanout';

/**
 * Fan-out (the `fanout` load: subscribers over a few hot channels, closed loop) on the service with `WORKERS=1` and
 * `WORKERS=2` (node:cluster, one port), and on the baseline (one process) in the same run. The load is `fanout.ts`'s
 * with two things a cluster needs: the server's CPU is the sum over the primary and its workers, and the sockets are
 * opened only once both workers serve the port (a worker joins it when it has caught up with the stream; sockets
 * opened before would all go to the first one).
 */
export async function workers(ctx: Context, kind: HubKind): Promise<Figures> {
  if (kind === 'baseline') {
    const f = await fanout(ctx, kind, false);
    // One process: the same figure stands against both service rows.
    return { deliveries_per_s_1w: f.deliveries_per_s, deliveries_per_s_2w: f.deliveries_per_s, cpu_s_per_100k_1w: f.cpu_s_per_100k, missing_2w: f.missing };
  }
  const one = await fanoutWithWorkers(ctx, 1);
  const two = await fanoutWithWorkers(ctx, 2);
  const f: Figures = {};
  for (const [suffix, figures] of [
    ['1w', one],
    ['2w', two],
  ] as const) {
    for (const [k, v] of Object.entries(figures)) f[`${k}_${suffix}`] = v;
  }
  f.speedup_2w = Number(two.deliveries_per_s) / Number(one.deliveries_per_s);
  return f;
}

async function fanoutWithWorkers(ctx: Context, n: number): Promise<Figures> {
  const env = ctx.hubOptions.extraEnv;
  const saved = env.WORKERS;
  env.WORKERS = String(n);
  let started;
  try {
    started = await ctx.startHubs('service', 1, `workers-${n}`);
  } finally {
    if (saved === undefined) delete env.WORKERS;
    else env.WORKERS = saved;
  }
  const { hubs, exchange } = started;
  const [hub] = hubs;
  const run = await fanoutOn(ctx, hub, exchange, {
    batch: false,
    serverPids: () => processTree(hub.pid),
    beforeConnect: n > 1 ? () => waitForWorkers(hub.port, n) : undefined,
  });
  return { workers: n, ...run };
}

/** `pid` and its children (the workers of a cluster primary). */
function processTree(pid: number): number[] {
  const children: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) children.push(Number(entry));
    } catch {
      // Gone meanwhile.
    }
  }
  return [pid, ...children];
}

/** Until `/health` (fresh connections, so any worker may answer) has come from `n` different workers. */
async function waitForWorkers(port: number, n: number, timeoutMs = 60_000): Promise<void> {
  const seen = new Set<number>();
  const deadline = Date.now() + timeoutMs;
  while (seen.size < n) {
    if (Date.now() > deadline) throw new Error(`only ${seen.size} of ${n} workers answered within ${timeoutMs} ms`);
    const id = await new Promise<number | undefined>((resolve) => {
      get({ host: '127.0.0.1', port, path: '/health', agent: false, timeout: 2000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          try {
            resolve((JSON.parse(body) as { worker?: { id?: number } | null }).worker?.id);
          } catch {
            resolve(undefined);
          }
        });
      }).on('error', () => resolve(undefined));
    });
    if (id !== undefined) seen.add(id);
    else await sleep(100);
  }
}
