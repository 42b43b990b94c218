import type { Figures, Mode } from './context';
import type { HubKind } from './hubs';

/** results[scenario][hub kind] = its figures (or `{ error }` when the run failed); `scenario@history` in history mode. */
export type Results = Record<string, Partial<Record<HubKind, Figures>>>;

export function resultKey(scenario: string, mode: Mode): string {
  return mode === 'fresh' ? scenario : `${scenario}@${mode}`;
}

interface Verdict {
  target: string;
  pass: boolean | null;
}

interface Row {
  scenario: string;
  key: string;
  label: string;
  /** The target, judged on the service's figure (and the baseline's where the target is relative). */
  target?: (service: number, baseline: number, s: Figures) => Verdict;
}

const atMost =
  (limit: number, unit: string) =>
  (v: number): Verdict => ({
    target: `≤ ${limit} ${unit}`.trim(),
    pass: Number.isFinite(v) ? v <= limit : null,
  });
const zero = (v: number): Verdict => ({ target: '0', pass: Number.isFinite(v) ? v === 0 : null });
const relative =
  (factor: number, op: '≤' | '≥' = '≤') =>
  (v: number, b: number): Verdict => ({
    target: `${op} ${factor === 1 ? '' : `${factor}× `}baseline`,
    pass: Number.isFinite(v) && Number.isFinite(b) ? (op === '≤' ? v <= factor * b : v >= factor * b) : null,
  });
/** The probe's rows (bench/probe.ts), for the latency scenarios. */
const probeRows = (scenario: string, prefix = ''): Row[] => [
  { scenario, key: 'loop_delay_p50_ms', label: `${prefix}event-loop delay p50 (ms)` },
  { scenario, key: 'loop_delay_p99_ms', label: `${prefix}event-loop delay p99 (ms)` },
  { scenario, key: 'loop_delay_max_ms', label: `${prefix}event-loop delay max (ms)` },
  { scenario, key: 'gc_pauses', label: `${prefix}GC pauses` },
  { scenario, key: 'gc_pause_share_pct', label: `${prefix}GC pause share of wall time (%)` },
  { scenario, key: 'gc_pause_p99_ms', label: `${prefix}GC pause p99 (ms)` },
  { scenario, key: 'gc_pause_max_ms', label: `${prefix}GC pause max (ms)` },
  { scenario, key: 'event_loop_utilization', label: `${prefix}event-loop utilization` },
];

const ROWS: Row[] = [
  {
    scenario: 'capacity',
    key: 'held',
    label: 'connections held',
    target: (v, _b, s) => (Number(s.requested) >= 19_000 ? { target: '≥ 19000', pass: v >= 19_000 } : { target: `≥ 19000 (ran ${s.requested})`, pass: null }),
  },
  {
    scenario: 'capacity',
    key: 'idle_rss_mb',
    label: 'idle RSS (MB)',
    target: (v, _b, s) => (s.mode === 'history' ? { target: '', pass: null } : atMost(80, 'MB')(v)),
  },
  { scenario: 'capacity', key: 'idle_heap_total_mb', label: 'idle: V8 heap (MB)' },
  { scenario: 'capacity', key: 'idle_array_buffers_mb', label: 'idle: ArrayBuffers (MB)' },
  { scenario: 'capacity', key: 'idle_other_mb', label: 'idle: rest of the RSS (binary, malloc) (MB)' },
  { scenario: 'capacity', key: 'history_mb', label: 'history held, per /health (MB)' },
  {
    scenario: 'capacity',
    key: 'rss_budget_mb',
    label: 'idle RSS budget: fresh idle + 1.5 × history (MB)',
    target: (v, _b, s) => ({ target: '≥ idle RSS', pass: Number.isFinite(v) ? Number(s.idle_rss_mb) <= v : null }),
  },
  { scenario: 'capacity', key: 'rss_mb', label: 'RSS with connections (MB)' },
  {
    scenario: 'capacity',
    key: 'kb_per_conn',
    label: 'KB per connection',
    target: relative(1.2),
  },
  { scenario: 'capacity', key: 'connect_achieved_rate', label: 'connects/s achieved' },
  { scenario: 'capacity', key: 'connect_cpu_ms_per_conn', label: 'server CPU ms per connect' },
  { scenario: 'capacity', key: 'connect_p50_ms', label: 'connect p50 (ms)' },
  { scenario: 'capacity', key: 'connect_p99_ms', label: 'connect p99 (ms)', target: atMost(10, 'ms') },
  { scenario: 'capacity', key: 'open_to_frame_p99_ms', label: 'upgrade → connection frame p99 (ms)' },
  { scenario: 'capacity', key: 'connect_errors', label: 'connect errors / drops', target: zero },
  { scenario: 'latency', key: 'publish_rate', label: 'publish rate (events/s)' },
  { scenario: 'latency', key: 'p50_ms', label: 'latency p50 (ms)' },
  { scenario: 'latency', key: 'p90_ms', label: 'latency p90 (ms)' },
  { scenario: 'latency', key: 'p99_ms', label: 'latency p99 (ms)', target: relative(1.2) },
  { scenario: 'latency', key: 'p99_ms', label: 'latency p99 (ms), absolute', target: atMost(5, 'ms') },
  { scenario: 'latency', key: 'max_ms', label: 'latency max (ms)', target: relative(2) },
  { scenario: 'latency', key: 'p99_first_2s_ms', label: 'latency p99, first 2 s of publishing (ms)' },
  { scenario: 'latency', key: 'p99_after_2s_ms', label: 'latency p99 after the first 2 s (ms)' },
  { scenario: 'latency', key: 'max_after_2s_ms', label: 'latency max after the first 2 s (ms)' },
  { scenario: 'latency', key: 'missing', label: 'missing', target: zero },
  { scenario: 'latency', key: 'duplicates', label: 'duplicated', target: zero },
  { scenario: 'latency', key: 'reordered', label: 'out of order', target: zero },
  { scenario: 'latency', key: 'server_cpu_s', label: 'server CPU (s)' },
  ...probeRows('latency'),
  {
    scenario: 'fanout',
    key: 'deliveries_per_s',
    label: 'deliveries/s',
    target: (v, b) => ({
      target: '≥ 90% baseline',
      pass: Number.isFinite(v) && Number.isFinite(b) ? v >= 0.9 * b : null,
    }),
  },
  { scenario: 'fanout', key: 'cpu_s_per_100k', label: 'server CPU s / 100k deliveries', target: relative(1) },
  { scenario: 'fanout', key: 'server_cpu_share', label: 'server CPU share (cores)' },
  { scenario: 'fanout', key: 'missing', label: 'missing', target: zero },
  { scenario: 'fanout', key: 'dropped_sockets', label: 'sockets dropped' },
  { scenario: 'fanout_batch', key: 'deliveries_per_s', label: 'deliveries/s (events)' },
  { scenario: 'fanout_batch', key: 'gain_vs_unbatched', label: 'gain vs batch=0 (×)' },
  { scenario: 'fanout_batch', key: 'events_per_frame', label: 'events per frame' },
  { scenario: 'fanout_batch', key: 'cpu_s_per_100k', label: 'server CPU s / 100k deliveries' },
  { scenario: 'fanout_batch', key: 'missing', label: 'missing', target: zero },
  { scenario: 'churn', key: 'churn_attempted', label: 'churn connects' },
  { scenario: 'churn', key: 'churn_errors', label: 'churn errors', target: zero },
  { scenario: 'churn', key: 'churn_connect_p99_ms', label: 'churn connect p99 (ms)' },
  { scenario: 'churn', key: 'steady_missing', label: 'steady subscribers: missing', target: zero },
  { scenario: 'churn', key: 'rss_before_mb', label: 'RSS before (MB)' },
  { scenario: 'churn', key: 'rss_after_half_1_mb', label: 'RSS after 1st half (MB)' },
  { scenario: 'churn', key: 'rss_after_mb', label: 'RSS after 2nd half (MB)' },
  { scenario: 'churn', key: 'rss_growth_second_half_mb', label: 'RSS growth, 2nd half (MB)' },
  { scenario: 'multi', key: 'p50_ms', label: '2 instances: latency p50 (ms)' },
  { scenario: 'multi', key: 'p99_ms', label: '2 instances: latency p99 (ms)', target: atMost(5, 'ms') },
  { scenario: 'multi', key: 'max_ms', label: '2 instances: latency max (ms)' },
  { scenario: 'multi', key: 'missing', label: '2 instances: missing', target: zero },
  { scenario: 'multi', key: 'duplicates', label: '2 instances: duplicated', target: zero },
  { scenario: 'multi', key: 'reordered', label: '2 instances: out of order', target: zero },
  { scenario: 'multi', key: 'delivered_instance_1', label: 'deliveries via instance 1' },
  { scenario: 'multi', key: 'delivered_instance_2', label: 'deliveries via instance 2' },
  { scenario: 'workers', key: 'deliveries_per_s_1w', label: 'fan-out deliveries/s, WORKERS=1' },
  { scenario: 'workers', key: 'deliveries_per_s_2w', label: 'fan-out deliveries/s, WORKERS=2 (baseline: 1 process)' },
  { scenario: 'workers', key: 'speedup_2w', label: 'WORKERS=2 / WORKERS=1 (×)' },
  { scenario: 'workers', key: 'cpu_s_per_100k_1w', label: 'WORKERS=1: server CPU s / 100k deliveries' },
  { scenario: 'workers', key: 'cpu_s_per_100k_2w', label: 'WORKERS=2: server CPU s / 100k (all processes)' },
  { scenario: 'workers', key: 'server_cpu_share_2w', label: 'WORKERS=2: server CPU share (cores)' },
  { scenario: 'workers', key: 'missing_2w', label: 'WORKERS=2: missing', target: zero },
  ...probeRows('multi', '2 instances (worst): '),
  ...startupRows([20_000, 100_000, 500_000, 1_000_000]),
];

/**
 * The start-up scenario's rows for each stream size it may run (`--startup-sizes`) and each fill (`--startup-fill`;
 * rows without figures are left out).
 */
function startupRows(sizes: number[]): Row[] {
  return [
    { prefix: '', fill: 'batched fill' },
    { prefix: 'p_', fill: "publishers' fill" },
  ].flatMap(({ prefix, fill }) =>
    sizes.flatMap((size): Row[] => {
      const n = `${prefix}${size}`;
      const k = `${size / 1000}k events, ${fill}`;
      return [
        { scenario: 'startup', key: `records_per_chunk_${n}`, label: `${k}: records per chunk` },
        { scenario: 'startup', key: `ready_s_${n}`, label: `${k}, event stream alone: start → ready (s)` },
        { scenario: 'startup', key: `replay_per_s_${n}`, label: `${k}, event stream alone: replay (events/s)` },
        { scenario: 'startup', key: `bare_read_per_s_${n}`, label: `${k}: bare stream read, same run (events/s)` },
        { scenario: 'startup', key: `cpu_s_${n}`, label: `${k}, event stream alone: service CPU s until ready` },
        { scenario: 'startup', key: `rss_mb_${n}`, label: `${k}, event stream alone: RSS once ready (MB)`, target: atMost(512, 'MB') },
        { scenario: 'startup', key: `history_mb_${n}`, label: `${k}: history held (MB, /health)` },
        { scenario: 'startup', key: `first_ready_s_${n}`, label: `${k}, digests on: first start, writing them → ready (s)` },
        { scenario: 'startup', key: `first_digest_warning_${n}`, label: `${k}, digests on: first start, digest trouble` },
        { scenario: 'startup', key: `digest_ready_s_${n}`, label: `${k}, digests on: restart → ready (s)` },
        {
          scenario: 'startup',
          key: `digest_replay_per_s_${n}`,
          label: `${k}, digests on: restart replay (events/s)`,
          target: (v) => ({ target: '≥ 100000', pass: Number.isFinite(v) ? v >= 100_000 : null }),
        },
        { scenario: 'startup', key: `digest_from_digests_${n}`, label: `${k}, digests on: restart, events read from digests` },
        { scenario: 'startup', key: `digest_digest_warning_${n}`, label: `${k}, digests on: restart, why the digests ended early` },
        { scenario: 'startup', key: `digest_cpu_s_${n}`, label: `${k}, digests on: restart, service CPU s until ready` },
        { scenario: 'startup', key: `digest_rss_mb_${n}`, label: `${k}, digests on: restart, RSS once ready (MB)`, target: atMost(512, 'MB') },
      ];
    }),
  );
}

/** Rows shown once per scenario run, after its figures: the set-up of history mode. */
const START_ROWS: Omit<Row, 'scenario'>[] = [
  { key: 'history_events', label: 'history: events pre-filled' },
  { key: 'history_publish_s', label: 'history: publish time (s)' },
  { key: 'start_to_ready_s', label: 'start → first live event (s)' },
];

function fmt(v: number | string | boolean | undefined): string {
  if (v === undefined) return '-';
  if (typeof v !== 'number') return String(v);
  if (!Number.isFinite(v)) return 'n/a';
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return v.toFixed(a >= 100 ? 0 : a >= 10 ? 1 : a >= 1 ? 2 : 3);
}

export interface TableRow {
  scenario: string;
  figure: string;
  service: number | string | null;
  baseline: number | string | null;
  ratio: number | null;
  target: string;
  pass: boolean | null;
}

export function tableRows(results: Results): TableRow[] {
  const rows: TableRow[] = [];
  const scenarios = [...new Set(ROWS.map((r) => r.scenario))];
  for (const scenario of scenarios) {
    for (const key of [resultKey(scenario, 'fresh'), resultKey(scenario, 'history')]) {
      const r = results[key];
      if (!r) continue;
      const own = ROWS.filter((row) => row.scenario === scenario);
      const start = key === scenario ? [] : START_ROWS.map((row) => ({ ...row, scenario }));
      for (const row of [...own, ...start]) {
        const s = r.service?.[row.key];
        const b = r.baseline?.[row.key];
        if (s === undefined && b === undefined) continue;
        const sn = typeof s === 'number' ? s : NaN;
        const bn = typeof b === 'number' ? b : NaN;
        const verdict = row.target && r.service && !r.service.error ? row.target(sn, bn, r.service) : undefined;
        rows.push({
          scenario: key,
          figure: row.label,
          service: s === undefined ? null : typeof s === 'boolean' ? String(s) : s,
          baseline: b === undefined ? null : typeof b === 'boolean' ? String(b) : b,
          ratio: Number.isFinite(sn) && Number.isFinite(bn) && bn !== 0 ? sn / bn : null,
          target: verdict?.target ?? '',
          pass: verdict?.pass ?? null,
        });
      }
    }
  }
  for (const [scenario, r] of Object.entries(results)) {
    for (const kind of ['service', 'baseline'] as const) {
      const err = r[kind]?.error;
      if (err !== undefined) {
        rows.push({
          scenario,
          figure: `${kind} FAILED`,
          service: kind === 'service' ? String(err).slice(0, 60) : null,
          baseline: kind === 'baseline' ? String(err).slice(0, 60) : null,
          ratio: null,
          target: '',
          pass: kind === 'service' ? false : null,
        });
      }
    }
  }
  return rows;
}

/**
 * One `Results` from several runs of the plan: each numeric figure is the median of the runs that have it (other
 * figures come from the last run that has them; an error only when every run failed). Ratios in the table are then
 * median over median; the JSON keeps every run.
 */
export function medianResults(runs: Results[]): Results {
  if (runs.length === 1) return runs[0];
  const out: Results = {};
  for (const run of runs) {
    for (const [scenario, byKind] of Object.entries(run)) {
      for (const [kind, figures] of Object.entries(byKind) as [HubKind, Figures][]) {
        if (figures.error !== undefined) continue;
        const into = ((out[scenario] ??= {})[kind] ??= {});
        for (const [k, v] of Object.entries(figures)) if (typeof v !== 'number') into[k] = v;
      }
    }
  }
  for (const [scenario, byKind] of Object.entries(out)) {
    for (const [kind, into] of Object.entries(byKind) as [HubKind, Figures][]) {
      const samples = new Map<string, number[]>();
      let ok = 0;
      for (const run of runs) {
        const figures = run[scenario]?.[kind];
        if (figures === undefined || figures.error !== undefined) continue;
        ok++;
        for (const [k, v] of Object.entries(figures)) if (typeof v === 'number') (samples.get(k) ?? samples.set(k, []).get(k))?.push(v);
      }
      for (const [k, values] of samples) into[k] = median(values);
      into.runs = ok;
    }
  }
  for (const run of runs) {
    for (const [scenario, byKind] of Object.entries(run)) {
      for (const [kind, figures] of Object.entries(byKind) as [HubKind, Figures][]) {
        const slot = (out[scenario] ??= {});
        if (figures.error !== undefined && slot[kind] === undefined) slot[kind] = figures;
      }
    }
  }
  return out;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** The table as aligned plain text (also valid Markdown). */
export function renderTable(rows: TableRow[]): string {
  const head = ['scenario', 'figure', 'service', 'baseline', 'ratio', 'target', 'pass'];
  const body = rows.map((r) => [
    r.scenario,
    r.figure,
    fmt(r.service ?? undefined),
    fmt(r.baseline ?? undefined),
    r.ratio === null ? '' : `${r.ratio.toFixed(2)}×`,
    r.target,
    r.pass === null ? '' : r.pass ? 'pass' : 'MISS',
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]): string => `| ${cells.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(head), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...body.map(line)].join('\n');
}
