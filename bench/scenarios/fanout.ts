import { describeCounts, sum, type Context, type Figures } from '../lib/context';
import type { Hub, HubKind } from '../lib/hubs';
import { cpuSeconds, sleep } from '../lib/proc';
import { nowMs } from '../lib/stats';

const PROGRESS_EVERY_MS = 10;

/**
 * Fan-out: subscribers over a few hot channels, publishing as fast as delivery keeps up (closed loop: at
 * most `--window` events per channel beyond what its slowest subscriber has received). Deliveries/s and the
 * server's CPU seconds per 100,000 deliveries; `batch` connects with `?batch=1` and counts events, not frames.
 */
export async function fanout(ctx: Context, kind: HubKind, batch: boolean): Promise<Figures> {
  const { opts } = ctx;
  const { hubs, exchange } = await ctx.startHubs(kind, 1, batch ? 'fanout-batch' : 'fanout');
  const [hub] = hubs;
  const f: Figures = { subscribers: opts.fanoutSubscribers, channels: opts.fanoutChannels, window: opts.window, batch };
  return { ...f, ...(await fanoutOn(ctx, hub, exchange, { batch, serverPids: () => [hub.pid] })) };
}

/**
 * The fan-out load on a started `hub` (the `fanout` scenario's, also run by `workers`): connect the subscribers, a
 * warm-up (JIT, buffers; not measured), then `--fanout-seconds` of closed-loop publishing drained to the last
 * delivery, the server's CPU summed over `serverPids()` (read when the measured part begins). Closes the sockets and
 * stops the hub in the end, also on failure. `beforeConnect` runs first (e.g. wait until every worker serves).
 */
export async function fanoutOn(
  ctx: Context,
  hub: Hub,
  exchange: string,
  run: { batch: boolean; serverPids: () => number[]; beforeConnect?: () => Promise<void> },
): Promise<Figures> {
  const { opts } = ctx;
  const channels = ctx.channelNames(opts.fanoutChannels);
  const f: Figures = {};
  try {
    await run.beforeConnect?.();
    const conn = await ctx.connect(ctx.specs(opts.fanoutSubscribers, opts.fanoutChannels, [hub.port], run.batch), opts.connectRate);
    f.connect_failed = conn.failed;
    f.connect_error_kinds = describeCounts(conn.errors);
    await sleep(opts.settleSeconds * 1000);

    await ctx.reset(false);
    ctx.track(PROGRESS_EVERY_MS);
    const warm = await ctx.closedLoop(exchange, channels, opts.window, opts.fanoutWarmupSeconds * 1000);
    await ctx.drain(warm.published);
    ctx.untrack();
    await sleep(200);

    await ctx.reset(false);
    ctx.track(PROGRESS_EVERY_MS);
    const pids = run.serverPids();
    const serverCpu = (): number => pids.reduce((total, p) => total + cpuSeconds(p), 0);
    const cpu0 = serverCpu();
    const t0 = nowMs();
    const pub = await ctx.closedLoop(exchange, channels, opts.window, opts.fanoutSeconds * 1000);
    const c = await ctx.drain(pub.published);
    const seconds = (nowMs() - t0) / 1000;
    const cpu = serverCpu() - cpu0;
    ctx.untrack();
    const deliveries = c.received - c.duplicates;
    f.processes = pids.length;
    f.published = pub.total;
    f.deliveries = deliveries;
    f.frames = c.frames;
    f.seconds = seconds;
    f.deliveries_per_s = deliveries / seconds;
    f.events_per_frame = deliveries / Math.max(1, c.frames);
    f.server_cpu_s = cpu;
    f.server_cpu_share = cpu / seconds;
    f.cpu_s_per_100k = (cpu * 100_000) / Math.max(1, deliveries);
    f.missing = c.missing;
    f.duplicates = c.duplicates;
    f.reordered = c.reordered;
    f.dropped_sockets = sum(c.unexpected);
    f.dropped_kinds = describeCounts(c.unexpected);
    f.alive = hub.alive;
  } finally {
    ctx.untrack();
    await ctx.closeAll();
    await hub.stop();
  }
  return f;
}
