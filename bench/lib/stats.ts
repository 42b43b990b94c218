/** Summary of a latency sample. Percentiles by nearest rank on the sorted sample. */
export interface Distribution {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function distribution(values: number[]): Distribution {
  if (values.length === 0) return { count: 0, p50: NaN, p90: NaN, p99: NaN, max: NaN, mean: NaN };
  const sorted = Float64Array.from(values).sort();
  const rank = (p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)];
  let sum = 0;
  for (const v of sorted) sum += v;
  return {
    count: sorted.length,
    p50: rank(0.5),
    p90: rank(0.9),
    p99: rank(0.99),
    max: sorted[sorted.length - 1],
    mean: sum / sorted.length,
  };
}

export function addCounts(into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v;
}

/** Epoch milliseconds with a fraction (for headers and dates; not for latencies across processes: see monoNs). */
export function nowMs(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Nanoseconds of CLOCK_MONOTONIC: one clock for every process of the machine, unlike `nowMs()`, whose
 * `timeOrigin` is the wall clock read when each process started. When the wall clock was slewed between the
 * start of the publisher and of a client process, latencies came out offset by milliseconds (medians of -5 to -7 ms
 * were seen in one run on this VM).
 */
export function monoNs(): bigint {
  return process.hrtime.bigint();
}
