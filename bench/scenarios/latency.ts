import { describeCounts, sum, type Context, type Figures } from '../lib/context';
import type { HubKind, ProbeReport } from '../lib/hubs';
import { cpuSeconds, sleep } from '../lib/proc';

/**
 * Latency (and, with `instances` = 2, the multi-instance run of issue 7): `--latency-rate` events/s through
 * RabbitMQ for `--latency-seconds` to subscribers spread over channels (and over the instances);
 * publish-to-receive latency, and every delivery accounted for (missing, duplicated, reordered by `seq`).
 */
export async function latency(ctx: Context, kind: HubKind, instances = 1): Promise<Figures> {
  const { opts } = ctx;
  const { hubs, exchange } = await ctx.startHubs(kind, instances, instances > 1 ? 'multi' : 'latency', true);
  const f: Figures = {
    instances,
    subscribers: opts.latencySubscribers,
    channels: opts.latencyChannels,
    target_rate: opts.latencyRate,
  };
  try {
    const ports = hubs.map((h) => h.port);
    const conn = await ctx.connect(ctx.specs(opts.latencySubscribers, opts.latencyChannels, ports), opts.connectRate);
    f.connect_failed = conn.failed;
    f.connect_error_kinds = describeCounts(conn.errors);
    await sleep(opts.settleSeconds * 1000);
    await ctx.reset(true);
    const cpu0 = hubs.map((h) => cpuSeconds(h.pid));
    await Promise.all(hubs.map((h) => h.probeMark()));
    const pub = await ctx.openLoop(exchange, ctx.channelNames(opts.latencyChannels), opts.latencyRate, opts.latencySeconds * 1000);
    const probes = await Promise.all(hubs.map((h) => h.probeRead()));
    const c = await ctx.drain(pub.published);
    const cpu = hubs.reduce((a, h, i) => a + cpuSeconds(h.pid) - cpu0[i], 0);
    Object.assign(f, probeFigures(probes));
    f.published = pub.total;
    f.publish_rate = pub.rate;
    f.nacked = pub.nacked;
    f.expected_deliveries = c.received + c.missing - c.duplicates;
    f.delivered = c.received;
    f.p50_ms = c.latency.p50;
    f.p90_ms = c.latency.p90;
    f.p99_ms = c.latency.p99;
    f.max_ms = c.latency.max;
    f.p99_first_2s_ms = c.latencyFirst.p99;
    f.max_first_2s_ms = c.latencyFirst.max;
    f.p99_after_2s_ms = c.latencyAfter.p99;
    f.max_after_2s_ms = c.latencyAfter.max;
    f.p99_by_second_ms = c.p99BySecond.map((v) => v.toFixed(2)).join(' ');
    f.missing = c.missing;
    f.duplicates = c.duplicates;
    f.reordered = c.reordered;
    f.dropped_sockets = sum(c.unexpected);
    f.dropped_kinds = describeCounts(c.unexpected);
    f.server_cpu_s = cpu;
    if (instances > 1) {
      hubs.forEach((h, i) => (f[`delivered_instance_${i + 1}`] = c.receivedByPort[String(h.port)] ?? 0));
    }
    f.alive = hubs.every((h) => h.alive);
  } finally {
    await ctx.closeAll();
    await Promise.all(hubs.map((h) => h.stop()));
  }
  return f;
}

/** The hub's own view of a period (publishing, a connect ramp): event-loop delay and GC pauses (the worst instance's). */
export function probeFigures(probes: ProbeReport[]): Figures {
  const worst = (pick: (p: ProbeReport) => number): number => Math.max(...probes.map(pick));
  return {
    loop_delay_p50_ms: worst((p) => p.loop_delay_ms.p50),
    loop_delay_p99_ms: worst((p) => p.loop_delay_ms.p99),
    loop_delay_max_ms: worst((p) => p.loop_delay_ms.max),
    gc_pauses: worst((p) => p.gc.count),
    gc_pause_total_ms: worst((p) => p.gc.total_ms),
    gc_pause_share_pct: worst((p) => p.gc.share * 100),
    gc_pause_p99_ms: worst((p) => p.gc.p99_ms),
    gc_pause_max_ms: worst((p) => p.gc.max_ms),
    gc_by_kind: probes.map((p) => Object.entries(p.gc.by_kind).map(([k, v]) => `${k}:${v.count}/${v.ms.toFixed(1)}ms`).join(' ')).join(' | '),
    event_loop_utilization: worst((p) => p.event_loop_utilization),
    heap_used_mb: worst((p) => p.memory.heapUsed / 2 ** 20),
  };
}
