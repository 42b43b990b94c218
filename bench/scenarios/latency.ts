import { describeCounts, sum, type Context, type Figures } from '../lib/context';
import type { HubKind } from '../lib/hubs';
import { cpuSeconds, sleep } from '../lib/proc';

/**
 * Latency (and, with `instances` = 2, the multi-instance run of issue 7): `--latency-rate` events/s through
 * RabbitMQ for `--latency-seconds` to subscribers spread over channels (and over the instances);
 * publish-to-receive latency, and every delivery accounted for (missing, duplicated, reordered by `seq`).
 */
export async function latency(ctx: Context, kind: HubKind, instances = 1): Promise<Figures> {
  const { opts } = ctx;
  const { hubs, exchange } = await ctx.startHubs(kind, instances, instances > 1 ? 'multi' : 'latency');
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
    const pub = await ctx.openLoop(exchange, ctx.channelNames(opts.latencyChannels), opts.latencyRate, opts.latencySeconds * 1000);
    const c = await ctx.drain(pub.published);
    const cpu = hubs.reduce((a, h, i) => a + cpuSeconds(h.pid) - cpu0[i], 0);
    f.published = pub.total;
    f.publish_rate = pub.rate;
    f.nacked = pub.nacked;
    f.expected_deliveries = c.received + c.missing - c.duplicates;
    f.delivered = c.received;
    f.p50_ms = c.latency.p50;
    f.p90_ms = c.latency.p90;
    f.p99_ms = c.latency.p99;
    f.max_ms = c.latency.max;
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
