/**
 * Preloaded into a hub process (`node --require bench/dist/probe.js ...`, both the service and the baseline) so
 * the benchmark can read the hub's event-loop delay and garbage-collection pauses without any code in `src/`.
 *
 * On SIGUSR2 it writes what it saw since the previous SIGUSR2 (or since start-up) to `BENCH_PROBE_FILE`
 * (written to a temporary name, then renamed, so a reader never sees half a file) and starts over. The file
 * carries a sequence number so the reader knows its signal was answered.
 *
 * - Event-loop delay: `perf_hooks.monitorEventLoopDelay` at 1 ms resolution (how late a 1 ms timer fires).
 * - GC pauses: a `PerformanceObserver` on `gc` entries (duration of each pause on the main thread, by kind).
 */
import { renameSync, writeFileSync } from 'node:fs';
import { constants, monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks';

const file = process.env.BENCH_PROBE_FILE;

if (file !== undefined && file !== '') {
  const loop = monitorEventLoopDelay({ resolution: 1 });
  loop.enable();
  const KINDS: Record<number, string> = {
    [constants.NODE_PERFORMANCE_GC_MINOR]: 'scavenge',
    [constants.NODE_PERFORMANCE_GC_MAJOR]: 'mark_sweep',
    [constants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
    [constants.NODE_PERFORMANCE_GC_WEAKCB]: 'weak_callbacks',
  };
  let pauses: number[] = [];
  let byKind: Record<string, { count: number; ms: number }> = {};
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      pauses.push(e.duration);
      const detail = (e as { detail?: { kind?: number } }).detail;
      const kind = KINDS[detail?.kind ?? -1] ?? 'other';
      const k = (byKind[kind] ??= { count: 0, ms: 0 });
      k.count++;
      k.ms += e.duration;
    }
  });
  gc.observe({ entryTypes: ['gc'] });
  let since = performance.now();
  let elu = performance.eventLoopUtilization();
  let seq = 0;

  const pct = (sorted: number[], p: number): number => (sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)]);
  const ms = (ns: number): number => ns / 1e6;

  process.on('SIGUSR2', () => {
    const now = performance.now();
    const wallMs = now - since;
    const sorted = Float64Array.from(pauses).sort();
    const total = sorted.reduce((a, b) => a + b, 0);
    const report = {
      seq: ++seq,
      wall_ms: wallMs,
      loop_delay_ms: {
        count: loop.count,
        p50: ms(loop.percentile(50)),
        p90: ms(loop.percentile(90)),
        p99: ms(loop.percentile(99)),
        p999: ms(loop.percentile(99.9)),
        max: ms(loop.max),
        mean: ms(loop.mean),
      },
      gc: {
        count: sorted.length,
        total_ms: total,
        share: wallMs > 0 ? total / wallMs : 0,
        p50_ms: pct([...sorted], 0.5),
        p99_ms: pct([...sorted], 0.99),
        max_ms: sorted.length ? sorted[sorted.length - 1] : 0,
        by_kind: byKind,
      },
      event_loop_utilization: performance.eventLoopUtilization(elu).utilization,
      memory: process.memoryUsage(),
    };
    writeFileSync(`${file}.tmp`, JSON.stringify(report));
    renameSync(`${file}.tmp`, file);
    loop.reset();
    pauses = [];
    byKind = {};
    since = now;
    elu = performance.eventLoopUtilization();
  });
}
