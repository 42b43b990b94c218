import { describeCounts, sum, type Context, type Figures } from '../lib/context';
import type { HubKind } from '../lib/hubs';
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
  const channels = ctx.channelNames(opts.fanoutChannels);
  const f: Figures = { subscribers: opts.fanoutSubscribers, channels: opts.fanoutChannels, window: opts.window, batch };
  try {
    const conn = await ctx.connect(ctx.specs(opts.fanoutSubscribers, opts.fanoutChannels, [hub.port], batch), opts.connectRate);
    f.connect_failed = conn.failed;
    f.connect_error_kinds = describeCounts(conn.errors);
    await sleep(opts.settleSeconds * 1000);

    // Warm-up (JIT, buffers), not measured.
    await ctx.reset(false);
    ctx.track(PROGRESS_EVERY_MS);
    const warm = await ctx.closedLoop(exchange, channels, opts.window, opts.fanoutWarmupSeconds * 1000);
    await ctx.drain(warm.published);
    ctx.untrack();
    await sleep(200);

    await ctx.reset(false);
    ctx.track(PROGRESS_EVERY_MS);
    const cpu0 = cpuSeconds(hub.pid);
    const t0 = nowMs();
    const pub = await ctx.closedLoop(exchange, channels, opts.window, opts.fanoutSeconds * 1000);
    const c = await ctx.drain(pub.published);
    const seconds = (nowMs() - t0) / 1000;
    const cpu = cpuSeconds(hub.pid) - cpu0;
    ctx.untrack();
    const deliveries = c.received - c.duplicates;
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
