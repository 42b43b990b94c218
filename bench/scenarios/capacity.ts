import { describeCounts, type Context, type Figures } from '../lib/context';
import { historyBytes, type HubKind } from '../lib/hubs';
import { cpuSeconds, listenOverflows, rssKb, sleep } from '../lib/proc';
import { distribution } from '../lib/stats';
import { probeFigures } from './latency';

/**
 * Capacity: resident memory idle and with N authenticated connections held (for each N of
 * `--connections`, reached incrementally), KB per connection, and connect latency at `--connect-rate`, with the
 * hub's event-loop delay and GC pauses during the connects (`ramp_*`: where connect time goes before the 101).
 */
export async function capacity(ctx: Context, kind: HubKind): Promise<Figures> {
  const { opts } = ctx;
  const { hubs } = await ctx.startHubs(kind, 1, 'capacity', true);
  const [hub] = hubs;
  const f: Figures = { connect_rate_per_s: opts.connectRate };
  try {
    await ctx.reset(false);
    await sleep(opts.settleSeconds * 1000);
    const idle = rssKb(hub.pid);
    f.idle_rss_mb = idle / 1024;
    // Where the idle RSS lies: V8's heap, the ArrayBuffers (frames, slabs), and the rest (the binary's pages, malloc).
    const mem = (await hub.probeRead()).memory;
    f.idle_heap_total_mb = mem.heapTotal / 2 ** 20;
    f.idle_array_buffers_mb = mem.arrayBuffers / 2 ** 20;
    f.idle_other_mb = (mem.rss - mem.heapTotal - mem.arrayBuffers) / 2 ** 20;
    const historyHeld = kind === 'service' ? historyBytes(await hub.health()) : undefined;
    if (historyHeld !== undefined) f.history_mb = historyHeld / 2 ** 20;
    const top = Math.max(...opts.connections);
    const all = ctx.specs(top, opts.capacityChannels, [hub.port]);
    const connectMs: number[] = [];
    const openToFrameMs: number[] = [];
    const errors: Record<string, number> = {};
    const overflows0 = listenOverflows();
    let held = 0;
    let done = 0;
    let connectSeconds = 0;
    const cpuAtIdle = cpuSeconds(hub.pid);
    await hub.probeMark();
    for (const level of [...opts.connections].sort((a, b) => a - b)) {
      const cpu0 = cpuSeconds(hub.pid);
      // No retries: a refused connect is a capacity figure.
      const r = await ctx.connect(all.slice(done, level), opts.connectRate, 0);
      const ramp = await hub.probeRead();
      for (const [k, v] of Object.entries(probeFigures([ramp]))) f[`ramp_${k}_at_${level}`] = v;
      f[`connect_cpu_ms_per_conn_at_${level}`] = ((cpuSeconds(hub.pid) - cpu0) * 1000) / (level - done);
      f[`connect_achieved_rate_at_${level}`] = (level - done) / r.seconds;
      done = level;
      connectSeconds += r.seconds;
      held += r.opened;
      connectMs.push(...r.connectMs);
      openToFrameMs.push(...r.openToFrameMs);
      for (const [k, v] of Object.entries(r.errors)) errors[k] = (errors[k] ?? 0) + v;
      await sleep(opts.settleSeconds * 1000);
      await hub.probeMark();
      const rss = rssKb(hub.pid);
      f[`held_at_${level}`] = held;
      f[`rss_mb_at_${level}`] = rss / 1024;
      f[`kb_per_conn_at_${level}`] = (rss - idle) / Math.max(1, held);
    }
    // Sockets the server dropped while they were held count as not held.
    const c = await ctx.collect({});
    const dropped = Object.values(c.unexpected).reduce((a, b) => a + b, 0);
    f.held = held - dropped;
    f.requested = top;
    f.rss_mb = rssKb(hub.pid) / 1024;
    f.kb_per_conn = (rssKb(hub.pid) - idle) / Math.max(1, held - dropped);
    const d = distribution(connectMs);
    const o = distribution(openToFrameMs);
    f.connect_p50_ms = d.p50;
    f.connect_p99_ms = d.p99;
    f.connect_max_ms = d.max;
    f.open_to_frame_p50_ms = o.p50;
    f.open_to_frame_p99_ms = o.p99;
    f.connect_achieved_rate = top / connectSeconds;
    f.connect_cpu_ms_per_conn = ((cpuSeconds(hub.pid) - cpuAtIdle) * 1000) / top;
    f.listen_overflows = listenOverflows() - overflows0;
    f.connect_errors = Object.values(errors).reduce((a, b) => a + b, 0) + dropped;
    f.connect_error_kinds = describeCounts({ ...errors, ...c.unexpected });
    f.alive = hub.alive;
  } finally {
    await ctx.closeAll();
    await hub.stop();
  }
  return f;
}
