import type { ChurnResult } from '../lib/ipc';
import { describeCounts, sum, type Context, type Figures } from '../lib/context';
import type { HubKind } from '../lib/hubs';
import { rssKb, sleep } from '../lib/proc';
import { addCounts, distribution } from '../lib/stats';

/**
 * Churn: sockets connect and disconnect continuously at `--churn-rate` (each held `churnHoldMs`) while
 * events flow to steady subscribers of the same channels. Run in two halves, memory read after each once
 * the server has settled: growth over the first half is warm-up (heap sized to the load), growth over the
 * second half is what would be a leak.
 */
export async function churn(ctx: Context, kind: HubKind): Promise<Figures> {
  const { opts } = ctx;
  const { hubs, exchange } = await ctx.startHubs(kind, 1, 'churn');
  const [hub] = hubs;
  const channelCount = Math.max(1, Math.round(opts.churnSubscribers / 10));
  const channels = ctx.channelNames(channelCount);
  const f: Figures = { churn_rate: opts.churnRate, hold_ms: opts.churnHoldMs, steady_subscribers: opts.churnSubscribers };
  try {
    const conn = await ctx.connect(ctx.specs(opts.churnSubscribers, channelCount, [hub.port]), opts.connectRate);
    f.connect_failed = conn.failed;
    await sleep(opts.settleSeconds * 1000);
    f.rss_before_mb = rssKb(hub.pid) / 1024;
    const churnSpecs = ctx.specs(1000, channelCount, [hub.port]);
    const halfMs = (opts.churnSeconds * 1000) / 2;
    const errors: Record<string, number> = {};
    const connectMs: number[] = [];
    let attempted = 0;
    let completed = 0;
    let missing = 0;
    let duplicates = 0;
    let reordered = 0;
    const dropped: Record<string, number> = {};
    for (const half of [1, 2]) {
      await ctx.reset(false);
      const share = ctx.workers.map((_, i) => churnSpecs.filter((__, k) => k % ctx.workers.length === i));
      const churning = Promise.all(
        ctx.workers.map((w, i) =>
          w.call(
            {
              cmd: 'churn',
              sockets: share[i],
              ratePerSec: opts.churnRate / ctx.workers.length,
              holdMs: opts.churnHoldMs,
              durationMs: halfMs,
              secret: opts.secret,
            },
            'churned',
            halfMs + 120_000,
          ),
        ),
      );
      const pub = await ctx.openLoop(exchange, channels, opts.churnEventRate, halfMs);
      const results: ChurnResult[] = await churning;
      const c = await ctx.drain(pub.published);
      for (const r of results) {
        attempted += r.attempted;
        completed += r.completed;
        addCounts(errors, r.errors);
        connectMs.push(...r.connectMs);
      }
      missing += c.missing;
      duplicates += c.duplicates;
      reordered += c.reordered;
      addCounts(dropped, c.unexpected);
      await sleep(opts.settleSeconds * 1000);
      f[`rss_after_half_${half}_mb`] = rssKb(hub.pid) / 1024;
    }
    f.churn_attempted = attempted;
    f.churn_completed = completed;
    f.churn_errors = sum(errors);
    f.churn_error_kinds = describeCounts(errors);
    f.churn_connect_p99_ms = distribution(connectMs).p99;
    f.steady_missing = missing;
    f.steady_duplicates = duplicates;
    f.steady_reordered = reordered;
    f.steady_dropped = sum(dropped);
    f.rss_after_mb = f.rss_after_half_2_mb;
    f.rss_growth_second_half_mb = Number(f.rss_after_half_2_mb) - Number(f.rss_after_half_1_mb);
    f.alive = hub.alive;
  } finally {
    await ctx.closeAll();
    await hub.stop();
  }
  return f;
}
