/**
 * Deployment artifacts: alert rules, scrape config, compose file, Grafana dashboard, Dockerfile, and the
 * production start the Dockerfile performs. No Docker engine runs in CI, so the image's start is replayed
 * outside Docker: production-only install, `node dist/main` as an unprivileged user, liveness, SIGTERM. The image
 * itself is built and run with podman by test/image.e2e-spec.ts, the scaled compose stack's proxy by
 * test/proxy.e2e-spec.ts.
 *
 * Needs `promtool` and `docker-compose` (Debian packages `prometheus`, `docker-compose`) and a built `dist/`.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { Registry, collectDefaultMetrics } from 'prom-client';
import WebSocket from 'ws';
import { parse as parseYaml } from 'yaml';
import { MetricName } from '../src/metrics/metric-names';

const run = promisify(execFile);
const ROOT = path.resolve(__dirname, '..');
const at = (...parts: string[]): string => path.join(ROOT, ...parts);

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command to completion and returns its exit code instead of throwing, so failures show the output. */
async function runTool(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  try {
    const { stdout, stderr } = await run(cmd, args, { cwd: ROOT, env: env ?? process.env, timeout: 120_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code?: number | string; stdout?: string; stderr?: string };
    return { code: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: `${e.stderr ?? ''}${String(err)}` };
  }
}

// --- metric names --------------------------------------------------------------------------------------

const PROMQL_WORDS = new Set([
  'and', 'or', 'unless', 'bool', 'offset', 'by', 'without', 'on', 'ignoring', 'group_left', 'group_right',
  'inf', 'nan', 'atan2',
]);

/**
 * The metric names a PromQL expression selects. Strings, label matchers, range selectors and grouping
 * clauses are removed first so label names (`le`, `instance`) and durations (`5m`) are not taken for metrics;
 * an identifier followed by `(` is a function or an aggregation.
 */
function metricNamesIn(expr: string): string[] {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, ' ');
  const names: string[] = [];
  for (const m of stripped.matchAll(/(?<![A-Za-z0-9_:.$])[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const rest = stripped.slice((m.index ?? 0) + m[0].length).trimStart();
    if (rest.startsWith('(') || PROMQL_WORDS.has(m[0].toLowerCase())) continue;
    names.push(m[0]);
  }
  return names;
}

async function knownMetricNames(): Promise<Set<string>> {
  const names = new Set<string>(Object.values(MetricName));
  // prom-client's default metrics, which the service registers too (event loop, memory, CPU).
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  for (const m of await registry.getMetricsAsJSON()) names.add(m.name);
  return names;
}

/** A histogram is queried through its `_bucket`, `_sum` and `_count` series. */
function isKnown(name: string, known: Set<string>): boolean {
  if (known.has(name)) return true;
  const base = name.replace(/_(bucket|sum|count)$/, '');
  return base !== name && known.has(base);
}

// --- Grafana ---------------------------------------------------------------------------------------------

interface GrafanaTarget {
  expr?: string;
}
interface GrafanaPanel {
  type: string;
  title?: string;
  datasource?: { type?: string; uid?: string };
  targets?: GrafanaTarget[];
  panels?: GrafanaPanel[];
}
interface GrafanaDashboard {
  title: string;
  uid: string;
  panels: GrafanaPanel[];
  templating: { list: { name: string; type: string; query?: unknown; definition?: string }[] };
}

function loadDashboard(): GrafanaDashboard {
  return JSON.parse(fs.readFileSync(at('deploy/grafana/ansflow-realtime.json'), 'utf8')) as GrafanaDashboard;
}

function allPanels(panels: GrafanaPanel[]): GrafanaPanel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

function dashboardExprs(d: GrafanaDashboard): string[] {
  return allPanels(d.panels).flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? '').filter((e) => e !== ''));
}

// --- Dockerfile ------------------------------------------------------------------------------------------

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions with line continuations joined and comments dropped, grouped by stage. */
function dockerfileStages(text: string): Instruction[][] {
  const joined = text
    .split('\n')
    .filter((l) => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ');
  const stages: Instruction[][] = [];
  for (const line of joined.split('\n')) {
    const m = /^\s*([A-Za-z]+)\s+(.*)$/.exec(line);
    if (!m) continue;
    const ins = { op: m[1].toUpperCase(), args: m[2].trim() };
    if (ins.op === 'FROM') stages.push([]);
    stages[stages.length - 1]?.push(ins);
  }
  return stages;
}

// --- processes ---------------------------------------------------------------------------------------------

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

function deadline<T>(ms: number, what: string): Promise<T> {
  return new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms).unref());
}

/** Asks `url` until it answers 200; stops early if the process dies. Returns the last status seen. */
async function waitFor200(url: string, child: ChildProcess, ms: number): Promise<number> {
  const end = Date.now() + ms;
  let last = 0;
  while (Date.now() < end) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`service exited (${child.exitCode ?? child.signalCode}) before ${url} answered`);
    }
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
      last = res.status;
      if (res.status === 200) return 200;
    } catch {
      // Not listening yet: the next attempt waits on the connection itself, so no sleep is needed beyond it.
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${url} did not answer 200 within ${ms} ms (last status ${last})`);
}

function uidOf(pid: number): number {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^Uid:\s+(\d+)/m.exec(status);
  if (!m) throw new Error(`no Uid line in /proc/${pid}/status`);
  return Number(m[1]);
}

// ----------------------------------------------------------------------------------------------------------

describe('Prometheus rules and scrape config', () => {
  it('passes promtool check rules', async () => {
    const r = await runTool('promtool', ['check', 'rules', 'deploy/prometheus/alerts.yml']);
    expect(r).toMatchObject({ code: 0 });
    expect(r.stdout).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('fires each alert on the series that should trigger it (promtool test rules)', async () => {
    const r = await runTool('promtool', ['test', 'rules', 'deploy/prometheus/alerts.test.yml']);
    expect(r).toMatchObject({ code: 0 });
  });

  it('passes promtool check config, scraping :8001/metrics every 10 s', async () => {
    const r = await runTool('promtool', ['check', 'config', 'deploy/prometheus/prometheus.yml']);
    expect(r).toMatchObject({ code: 0 });
    const cfg = parseYaml(fs.readFileSync(at('deploy/prometheus/prometheus.yml'), 'utf8')) as {
      scrape_configs: { scrape_interval?: string; metrics_path?: string; static_configs: { targets: string[] }[] }[];
    };
    const job = cfg.scrape_configs[0];
    expect(job.scrape_interval).toBe('10s');
    expect(job.metrics_path).toBe('/metrics');
    expect(job.static_configs[0].targets.every((t) => t.endsWith(':8001'))).toBe(true);
  });

  it('alerts only on metrics the service exports', async () => {
    const known = await knownMetricNames();
    known.add('up'); // Prometheus' own series for a scrape target.
    const rules = parseYaml(fs.readFileSync(at('deploy/prometheus/alerts.yml'), 'utf8')) as {
      groups: { rules: { alert: string; expr: string }[] }[];
    };
    const unknown = rules.groups
      .flatMap((g) => g.rules)
      .flatMap((r) => metricNamesIn(r.expr).map((n) => `${r.alert}: ${n}`))
      .filter((s) => !isKnown(s.split(': ')[1], known));
    expect(unknown).toEqual([]);
    const alerts = rules.groups.flatMap((g) => g.rules.map((r) => r.alert));
    expect(alerts).toEqual(
      expect.arrayContaining([
        'RealtimeConnectionsNearLimit',
        'RealtimeMessageLatencyHigh',
        'RealtimeDeadLettersIncreasing',
        'RealtimeBrokerDown',
        'RealtimeSlowClientsClosed',
        'RealtimeAuthFailuresSpike',
      ]),
    );
  });
});

describe('Grafana dashboard', () => {
  it('queries only metrics the service exports (or prom-client default metrics)', async () => {
    const d = loadDashboard();
    const known = await knownMetricNames();
    const exprs = dashboardExprs(d);
    expect(exprs.length).toBeGreaterThan(10);
    const unknown = exprs.flatMap(metricNamesIn).filter((n) => !isKnown(n, known));
    expect(unknown).toEqual([]);
    // label_values(metric, label): the first argument is the metric.
    const variableMetrics = d.templating.list
      .filter((v) => v.type === 'query')
      .map((v) => /label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)/.exec(v.definition ?? '')?.[1] ?? '');
    expect(variableMetrics.filter((n) => !isKnown(n, known))).toEqual([]);
  });

  it('has valid PromQL in every panel (checked by promtool as recording rules)', async () => {
    const exprs = dashboardExprs(loadDashboard()).map((e) =>
      e.replace(/\$__rate_interval|\$__interval|\$__range/g, '1m').replace(/\$\{?instance\}?/g, '.*'),
    );
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ansflow-dash-'));
    try {
      const file = path.join(dir, 'dashboard-rules.yml');
      const rules = exprs.map((expr, i) => ({ record: `dashboard:panel_${i}`, expr }));
      fs.writeFileSync(file, JSON.stringify({ groups: [{ name: 'dashboard', rules }] }));
      const r = await runTool('promtool', ['check', 'rules', file]);
      expect(r).toMatchObject({ code: 0 });
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('selects its Prometheus through a datasource variable and shows the required panels', () => {
    const d = loadDashboard();
    expect(d.templating.list).toEqual(
      expect.arrayContaining([expect.objectContaining({ name: 'datasource', type: 'datasource', query: 'prometheus' })]),
    );
    const queried = allPanels(d.panels).filter((p) => p.type !== 'row');
    expect(queried.every((p) => p.datasource?.uid === '${datasource}')).toBe(true);
    const exprs = dashboardExprs(d).join('\n');
    for (const needle of [
      /sum by \(endpoint\) \(websocket_connections\{/,
      /by \(code\) \(rate\(websocket_connections_closed_total/,
      /by \(reason\) \(rate\(websocket_auth_failures_total/,
      /websocket_frames_sent_total/,
      /websocket_bytes_sent_total/,
      /histogram_quantile\(0\.5,.*websocket_message_latency_seconds_bucket/,
      /histogram_quantile\(0\.9,.*websocket_message_latency_seconds_bucket/,
      /histogram_quantile\(0\.99,.*websocket_message_latency_seconds_bucket/,
      /by \(reason\) \(rate\(websocket_messages_dropped_total/,
      /realtime_broker_messages_consumed_total/,
      /by \(reason\) \(increase\(realtime_broker_messages_dead_lettered_total/,
      /realtime_broker_connected/,
      /websocket_subscribed_channels/,
      /nodejs_eventloop_lag_seconds/,
      /process_resident_memory_bytes/,
    ]) {
      expect(exprs).toMatch(needle);
    }
  });
});

interface ComposeService {
  image?: string;
  hostname?: string;
  build?: unknown;
  healthcheck?: { test: string[] };
  depends_on?: Record<string, { condition: string }>;
  environment?: Record<string, string>;
  ports?: { published: number | string; target: number }[];
  expose?: (string | number)[];
  volumes?: (string | { type: string; source: string; target: string; read_only?: boolean })[];
}

/** Volumes as docker-compose 1.x prints them (`source:target[:ro]`) or in the long form of compose v2. */
function mounts(s: ComposeService): { source: string; target: string; readOnly: boolean }[] {
  return (s.volumes ?? []).map((v) => {
    if (typeof v !== 'string') return { source: v.source, target: v.target, readOnly: v.read_only === true };
    const [source, target, mode] = v.split(':');
    return { source, target, readOnly: mode === 'ro' };
  });
}

describe.each([['docker-compose.yml'], ['docker-compose.scale.yml']])('%s', (file) => {
  const env = { ...process.env, DJANGO_SECRET_KEY: 'compose-test-secret', PUBLISH_API_KEY: 'compose-test-key' };
  const load = async (): Promise<Record<string, ComposeService>> => {
    const r = await runTool('docker-compose', ['-f', file, 'config'], env);
    expect(r.code).toBe(0);
    return (parseYaml(r.stdout) as { services: Record<string, ComposeService> }).services;
  };

  it('passes docker-compose config -q with the required variables set', async () => {
    const r = await runTool('docker-compose', ['-f', file, 'config', '-q'], env);
    expect(r).toMatchObject({ code: 0, stderr: '' });
  });

  it('refuses to start without DJANGO_SECRET_KEY', async () => {
    const without: NodeJS.ProcessEnv = { ...env, DJANGO_SECRET_KEY: undefined };
    const r = await runTool('docker-compose', ['-f', file, 'config', '-q'], without);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('DJANGO_SECRET_KEY');
  });

  it('runs a RabbitMQ with the stream protocol, and nothing the service does not use', async () => {
    const services = await load();
    expect(Object.keys(services).filter((s) => s !== 'proxy').sort()).toEqual(['rabbitmq', 'realtime']);
    const { rabbitmq, realtime } = services;
    expect(rabbitmq.image).toBe('rabbitmq:3.13-management');
    // The stream protocol advertises the node's host name: it must be one the other containers resolve.
    expect(rabbitmq.hostname).toBe('rabbitmq');
    expect(rabbitmq.healthcheck?.test.join(' ')).toContain('rabbitmq-diagnostics -q ping');
    expect(rabbitmq.ports?.map((p) => p.target)).toEqual(expect.arrayContaining([5672, 5552, 15672]));
    const plugins = mounts(rabbitmq).find((v) => v.target === '/etc/rabbitmq/enabled_plugins');
    expect(plugins).toEqual({ source: at('deploy/rabbitmq/enabled_plugins'), target: '/etc/rabbitmq/enabled_plugins', readOnly: true });
    const enabled = fs.readFileSync(at('deploy/rabbitmq/enabled_plugins'), 'utf8');
    expect(enabled.trim()).toMatch(/^\[[a-z_,\s]+\]\.$/);
    expect(enabled).toContain('rabbitmq_stream');
    expect(enabled).toContain('rabbitmq_management');
    expect(Object.keys(realtime.environment ?? {}).filter((k) => /REDIS/.test(k))).toEqual([]);
    expect(realtime.build).toBeDefined();
    expect(realtime.healthcheck?.test.join(' ')).toContain('/health/live');
    expect(realtime.healthcheck?.test.join(' ')).toContain('AbortSignal.timeout');
    expect(realtime.depends_on?.rabbitmq).toEqual({ condition: 'service_healthy' });
    expect(realtime.environment).toMatchObject({
      RABBITMQ_URL: 'amqp://guest:guest@rabbitmq:5672',
      DJANGO_SECRET_KEY: 'compose-test-secret',
      PUBLISH_API_KEY: 'compose-test-key',
    });
  });
});

describe('docker-compose.yml and docker-compose.scale.yml', () => {
  const env = { ...process.env, DJANGO_SECRET_KEY: 'compose-test-secret', PUBLISH_API_KEY: 'compose-test-key' };
  const load = async (file: string): Promise<Record<string, ComposeService>> => {
    const r = await runTool('docker-compose', ['-f', file, 'config'], env);
    expect(r.code).toBe(0);
    return (parseYaml(r.stdout) as { services: Record<string, ComposeService> }).services;
  };

  it('single: the service on 8001', async () => {
    const { realtime, proxy } = await load('docker-compose.yml');
    expect(proxy).toBeUndefined();
    expect(realtime.ports?.map((p) => [Number(p.published), p.target])).toContainEqual([8001, 8001]);
  });

  it('scale: HAProxy on 8001 with the shipped config, the instances publish no port (so --scale works)', async () => {
    const { realtime, proxy } = await load('docker-compose.scale.yml');
    expect(realtime.ports ?? []).toEqual([]);
    expect(realtime.expose?.map(String)).toEqual(['8001']);
    expect(proxy.image).toMatch(/^haproxy:\d/);
    expect(proxy.ports?.map((p) => [Number(p.published), p.target])).toEqual([[8001, 8001]]);
    expect(mounts(proxy)).toContainEqual({ source: at('deploy/haproxy/haproxy.cfg'), target: '/usr/local/etc/haproxy/haproxy.cfg', readOnly: true });
    expect(proxy.environment).toMatchObject({ PROXY_BIND: ':8001', DNS_NAMESERVER: '127.0.0.11:53', REALTIME_SERVERS: 'realtime:8001' });
    // Every variable the config reads is set.
    const cfg = fs.readFileSync(at('deploy/haproxy/haproxy.cfg'), 'utf8');
    const read = [...cfg.matchAll(/\$\{([A-Z_]+)\}/g)].map((m) => m[1]);
    expect(read.length).toBeGreaterThan(0);
    for (const v of read) expect(Object.keys(proxy.environment ?? {})).toContain(v);
  });

  it('scale: the proxy checks /health/ready with WebSocket timeouts above the heartbeat', () => {
    const cfg = fs.readFileSync(at('deploy/haproxy/haproxy.cfg'), 'utf8');
    expect(cfg).toMatch(/^\s*option httpchk GET \/health\/ready\s*$/m);
    expect(cfg).not.toMatch(/^\s*(cookie|stick|balance source)\b/m);
    const tunnel = /^\s*timeout tunnel (\d+)s\s*$/m.exec(cfg);
    expect(Number(tunnel?.[1])).toBeGreaterThan(25); // WS_HEARTBEAT_INTERVAL_MS default, 25 s
  });

  it('both files run the same broker and the same service settings', async () => {
    const single = await load('docker-compose.yml');
    const scaled = await load('docker-compose.scale.yml');
    expect(scaled.rabbitmq).toEqual(single.rabbitmq);
    const { ports: _p, expose: _e, ...scaledRealtime } = scaled.realtime;
    const { ports: _q, expose: _f, ...singleRealtime } = single.realtime;
    expect(scaledRealtime).toEqual(singleRealtime);
  });
});

describe('Dockerfile', () => {
  const stages = dockerfileStages(fs.readFileSync(at('Dockerfile'), 'utf8'));
  const runtime = stages[stages.length - 1] ?? [];
  const args = (op: string): string[] => runtime.filter((i) => i.op === op).map((i) => i.args);

  it('builds with dev dependencies in a first stage', () => {
    expect(stages.length).toBeGreaterThanOrEqual(2);
    const build = stages[0].map((i) => i.args).join('\n');
    expect(build).toMatch(/npm ci(?! --omit)/);
    expect(build).toContain('npm run build');
  });

  it('runs node:20-bookworm-slim with production dependencies and dist/ only', () => {
    expect(runtime[0]).toMatchObject({ op: 'FROM' });
    expect(runtime[0].args).toMatch(/^node:20-bookworm-slim\b/);
    expect(args('RUN').join('\n')).toMatch(/npm ci --omit=dev/);
    expect(args('COPY').some((a) => /--from=\S+\s+\S*dist\s/.test(`${a} `))).toBe(true);
    expect(args('ENV').join(' ')).toMatch(/NODE_ENV=production/);
    expect(args('ENV').join(' ')).toMatch(/PORT=8001/);
    expect(args('EXPOSE')).toContain('8001');
  });

  it('drops root, runs under an init, probes /health/live and starts node dist/main', () => {
    const user = args('USER').pop();
    expect(user).toBeDefined();
    expect(user).not.toMatch(/^(root|0)(:|$)/);
    expect(args('RUN').join('\n')).toMatch(/apt-get install .*\btini\b/);
    expect(JSON.parse(args('ENTRYPOINT').pop() ?? '[]')).toEqual(['/usr/bin/tini', '--']);
    expect(args('HEALTHCHECK').pop()).toContain('/health/live');
    // The probe gives up by itself: a frozen process accepts the connection but never answers.
    expect(args('HEALTHCHECK').pop()).toMatch(/AbortSignal\.timeout\(\d+\)/);
    expect(JSON.parse(args('CMD').pop() ?? '[]')).toEqual(['node', 'dist/main']);
  });

  it('needs no BuildKit front-end image (no syntax directive): an offline BuildKit would fetch it', () => {
    expect(fs.readFileSync(at('Dockerfile'), 'utf8')).not.toMatch(/^#\s*syntax\s*=/im);
  });

  it('keeps node_modules, dist and .git out of the build context', () => {
    const ignored = fs.readFileSync(at('.dockerignore'), 'utf8').split('\n').map((l) => l.trim());
    expect(ignored).toEqual(expect.arrayContaining(['node_modules', 'dist', '.git', 'coverage']));
  });
});

describe('production start, as the Dockerfile performs it', () => {
  let dir = '';
  let child: ChildProcess | undefined;

  beforeAll(async () => {
    if (!fs.existsSync(at('dist/main.js'))) {
      throw new Error('dist/main.js is missing: run `npm run build` before this test');
    }
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ansflow-prod-'));
    // mkdtemp makes the directory 0700; the unprivileged user must be able to read the code.
    fs.chmodSync(dir, 0o755);
    for (const f of ['package.json', 'package-lock.json']) fs.copyFileSync(at(f), path.join(dir, f));
    fs.cpSync(at('dist'), path.join(dir, 'dist'), { recursive: true });
    const install = await runTool(
      'npm',
      ['ci', '--omit=dev', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--prefix', dir],
      { ...process.env, NODE_ENV: 'production' },
    );
    if (install.code !== 0) throw new Error(`npm ci --omit=dev failed:\n${install.stderr}`);
  }, 300_000);

  afterEach(async () => {
    if (child && child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited(child);
    }
  });

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('installs no dev dependency', () => {
    expect(fs.existsSync(path.join(dir, 'node_modules/@nestjs/core'))).toBe(true);
    for (const dev of ['typescript', 'jest', '@nestjs/cli', 'ts-jest']) {
      expect(fs.existsSync(path.join(dir, 'node_modules', dev))).toBe(false);
    }
  });

  it('serves /health/live as an unprivileged user, and on SIGTERM closes sockets 1001 and exits 0', async () => {
    const port = await freePort();
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dir,
      NODE_ENV: 'production',
      PORT: String(port),
      DJANGO_SECRET_KEY: 'deploy-test-secret-not-a-placeholder',
      PUBLISH_API_KEY: 'deploy-test-publish-key',
      AUTH_REQUIRED: 'false',
    };
    // As root (CI), drop to nobody as the image's USER does; otherwise we already are unprivileged.
    const asRoot = process.getuid?.() === 0;
    const [cmd, ...cmdArgs] = asRoot
      ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, 'dist/main']
      : [process.execPath, 'dist/main'];
    const output: string[] = [];
    child = spawn(cmd, cmdArgs, { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout?.on('data', (b: Buffer) => output.push(b.toString()));
    child.stderr?.on('data', (b: Buffer) => output.push(b.toString()));
    const proc = child;

    try {
      await waitFor200(`http://127.0.0.1:${port}/health/live`, proc, 30_000);
    } catch (err) {
      throw new Error(`${String(err)}\n--- service output ---\n${output.join('')}`);
    }
    if (asRoot) expect(uidOf(proc.pid ?? 0)).toBe(65534);

    // One open socket, to see the shutdown reach clients the way the image's users see it.
    const socket = new WebSocket(`ws://127.0.0.1:${port}/ws/system`);
    const firstFrame = new Promise<string>((resolve, reject) => {
      socket.once('message', (data: Buffer) => resolve(data.toString()));
      socket.once('error', reject);
    });
    const closed = new Promise<{ code: number; reason: string }>((resolve) =>
      socket.once('close', (code: number, reason: Buffer) => resolve({ code, reason: reason.toString() })),
    );
    expect(JSON.parse(await Promise.race([firstFrame, deadline<string>(10_000, 'connection frame')]))).toMatchObject({ type: 'connection' });

    const exit = exited(proc);
    proc.kill('SIGTERM');
    const close = await Promise.race([closed, deadline<never>(15_000, 'socket close after SIGTERM')]);
    const result = await Promise.race([exit, deadline<never>(15_000, 'exit after SIGTERM')]);
    expect(close).toEqual({ code: 1001, reason: 'server_shutting_down' });
    expect({ ...result, output: result.code === 0 ? '' : output.join('') }).toEqual({
      code: 0,
      signal: null,
      output: '',
    });
  }, 60_000);
});
