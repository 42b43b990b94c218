/**
 * Operations (issue 4): the health probes, the Prometheus metrics (every series from start-up, the connection gauge,
 * the latency histogram, `promtool check metrics`), quiet and token-free logs, and the SIGTERM sequence.
 *
 * In-process services run one at a time (prom-client's registry is per process); the logging and SIGTERM cases run
 * `node dist/main` as a child process, built from the current sources into a private directory.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { CloseCode } from '../src/common/close-codes';
import { loadConfig } from '../src/config/config';
import { ENDPOINT_KINDS, MetricName } from '../src/metrics/metric-names';
import { DEAD_LETTER_REASONS } from '../src/metrics/realtime-metrics.service';
import {
  buildServiceOnce,
  connectPublisher,
  deleteBrokerObjects,
  eventually,
  freePort,
  metric,
  publishVia,
  RABBITMQ_URL,
  samples,
  spawnService,
  uniqueExchange,
  waitForStatus,
  within,
  type ChildService,
  type Sample,
} from './support/broker';
import { startService } from './support/service';
import { mintToken, TEST_SECRET } from './support/tokens';
import { TestClient } from './support/ws-client';

type Svc = Awaited<ReturnType<typeof startService>>;

const version = (JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;

interface Health {
  status: string;
  service: string;
  version: string;
  timestamp: string;
  checks: { broker: { status: string; message?: string; caught_up?: boolean } } & Record<string, unknown>;
  websocket: {
    connections: number;
    by_endpoint: Record<string, number>;
    subscribed_channels: number;
    messages_delivered: number;
    last_event_age_seconds: number | null;
  } & Record<string, unknown>;
}

async function health(url: string, p = '/health'): Promise<{ status: number; body: Health }> {
  const res = await fetch(`${url}${p}`);
  return { status: res.status, body: (await res.json()) as Health };
}

async function metricsText(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`);
  expect(res.status).toBe(200);
  return res.text();
}

/** The metric families the exposition declares (`# TYPE name kind`). */
function families(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1], m[2]);
  return out;
}

function familySamples(all: Sample[], name: string, kind: string): Sample[] {
  const names = kind === 'histogram' ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
  return all.filter((s) => names.includes(s.name));
}

async function open(url: string, userId = 1): Promise<TestClient> {
  const c = await TestClient.connect(`${url}${url.includes('?') ? '&' : '?'}token=${mintToken({ userId })}`);
  await c.next('connection');
  return c;
}

/** Lines promtool's linter reports for gauges named `*_total`: ours is kept for today's dashboards, the others are
 * prom-client's default metrics. Anything else promtool says is a failure. */
const ACCEPTED_LINT = /^(ansflow_websocket_connections_total|nodejs_active_[a-z]+_total) non-counter metrics should not have "_total" suffix$/;

function promtoolCheck(text: string): Promise<{ code: number | null; lines: string[] }> {
  return new Promise((resolve, reject) => {
    const p = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (b: Buffer) => (out += b.toString()));
    p.stderr.on('data', (b: Buffer) => (out += b.toString()));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, lines: out.split('\n').filter((l) => l.trim() !== '') }));
    p.stdin.end(text);
  });
}

describe('health (embedded mode)', () => {
  let svc: Svc;
  beforeAll(async () => {
    svc = await startService();
  });
  afterAll(async () => {
    await svc?.shutdown();
  });

  it.each(['/health', '/health/'])('%s answers 200 with status, service, version, timestamp, checks and websocket', async (p) => {
    const { status, body } = await health(svc.url, p);
    expect(status).toBe(200);
    expect(body).toMatchObject({
      status: 'healthy',
      service: 'ansflow-realtime',
      version,
      checks: { broker: { status: 'disabled' } },
      websocket: {
        connections: 0,
        by_endpoint: Object.fromEntries(ENDPOINT_KINDS.map((k) => [k, 0])),
        subscribed_channels: 0,
        messages_delivered: 0,
        last_event_age_seconds: null,
      },
    });
    expect(new Date(body.timestamp).toISOString()).toBe(body.timestamp);
    expect(Math.abs(Date.parse(body.timestamp) - Date.now())).toBeLessThan(10_000);
  });

  it('the websocket object follows sockets, subscriptions and deliveries', async () => {
    const a = await open(svc.ws('/ws/execution/42'), 1);
    const b = await open(svc.ws('/ws/monitor'), 2);
    let h = (await health(svc.url)).body.websocket;
    expect(h).toMatchObject({ connections: 2, by_endpoint: { execution: 1, monitor: 1, pipeline: 0, project: 0, system: 0 } });
    expect(h.subscribed_channels).toBeGreaterThanOrEqual(3); // execution.42, monitor, system (+ user channels)
    expect((await svc.publish({ channel: 'execution.42', event: { type: 'log_entry', message: 'x' } })).status).toBe(202);
    await a.next('log_entry');
    h = (await health(svc.url)).body.websocket;
    expect(h.messages_delivered).toBe(1);
    expect(h.last_event_age_seconds).toEqual(expect.any(Number));
    expect(h.last_event_age_seconds).toBeGreaterThanOrEqual(0);
    expect(h.last_event_age_seconds).toBeLessThan(10);
    a.close();
    b.close();
    await eventually('the sockets to be gone', async () => ((await health(svc.url)).body.websocket.connections === 0 ? true : undefined));
  });

  it('live and ready answer 200 without a broker, and need no token', async () => {
    expect((await fetch(`${svc.url}/health/live`)).status).toBe(200);
    expect((await fetch(`${svc.url}/health/ready`)).status).toBe(200);
    expect((await fetch(`${svc.url}/metrics`)).status).toBe(200);
  });
});

describe('health with the broker unreachable', () => {
  let svc: Svc;
  beforeAll(async () => {
    // A port nobody listens on: the broker is "down" for this service without stopping the shared one.
    const port = await freePort();
    svc = await startService({ RABBITMQ_URL: `amqp://guest:guest@127.0.0.1:${port}`, RABBITMQ_EXCHANGE: uniqueExchange('unreachable') });
  });
  afterAll(async () => {
    await svc?.shutdown();
  });

  it('live 200 (a broker outage must not get the container killed), ready 503, health 200 degraded with the broker down', async () => {
    expect((await fetch(`${svc.url}/health/live`)).status).toBe(200);
    const ready = await fetch(`${svc.url}/health/ready`);
    expect(ready.status).toBe(503);
    expect(JSON.stringify(await ready.json())).toContain('broker');
    const { status, body } = await health(svc.url);
    expect(status).toBe(200);
    expect(body).toMatchObject({ status: 'degraded', checks: { broker: { status: 'down' } } });
    expect(metric(await metricsText(svc.url), MetricName.BrokerConnected)).toBe(0);
  });
});

describe('metrics (embedded mode)', () => {
  let svc: Svc;
  beforeAll(async () => {
    svc = await startService({ WS_MAX_CONNECTIONS: '500' });
  });
  afterAll(async () => {
    await svc?.shutdown();
  });

  it('exposes every metric from start-up, each label set at 0', async () => {
    const text = await metricsText(svc.url);
    const kinds = families(text);
    const all = samples(text);
    const missing = Object.values(MetricName).filter((n) => !kinds.has(n));
    expect(missing).toEqual([]);
    const nonZero: string[] = [];
    for (const name of Object.values(MetricName)) {
      const s = familySamples(all, name, kinds.get(name) ?? '');
      // The broker-node gauge has one series per RABBITMQ_URL node: none in embedded mode (no broker configured).
      if (name === MetricName.BrokerNode) continue;
      expect({ name, samples: s.length > 0 }).toEqual({ name, samples: true });
      // The configured values, not counts: the connection limit and the history's byte budget (its default).
      const expected = name === MetricName.ConnectionsLimit ? 500 : name === MetricName.HistoryMaxBytes ? loadConfig({}).HISTORY_MAX_BYTES : 0;
      for (const x of s) if (x.value !== expected) nonZero.push(`${x.name}${JSON.stringify(x.labels)} ${x.value}`);
    }
    expect(nonZero).toEqual([]);
    // The label sets dashboards and alerts select on.
    for (const endpoint of ENDPOINT_KINDS) {
      expect(metric(text, MetricName.Connections, { endpoint })).toBe(0);
      expect(metric(text, MetricName.LegacyConnections, { endpoint, status: 'active' })).toBe(0);
      expect(metric(text, MetricName.ConnectionsOpened, { endpoint })).toBe(0);
      expect(metric(text, `${MetricName.MessageLatency}_count`, { endpoint })).toBe(0);
      expect(metric(text, `${MetricName.MessageLatency}_bucket`, { endpoint, le: '+Inf' })).toBe(0);
      for (const code of [...Object.values(CloseCode).map(String), '1005', '1006', 'other']) {
        expect(metric(text, MetricName.ConnectionsClosed, { endpoint, code })).toBe(0);
      }
    }
    for (const reason of DEAD_LETTER_REASONS) expect(metric(text, MetricName.BrokerDeadLettered, { reason })).toBe(0);
    expect(metric(text, MetricName.BrokerConnected)).toBe(0);
    expect(metric(text, MetricName.BrokerConsumed)).toBe(0);
  });

  it('websocket_connections{endpoint="execution"} (and the compatibility gauge) follow open sockets', async () => {
    const gauge = async (): Promise<[number | undefined, number | undefined]> => {
      const t = await metricsText(svc.url);
      return [
        metric(t, MetricName.Connections, { endpoint: 'execution' }),
        metric(t, MetricName.LegacyConnections, { endpoint: 'execution', status: 'active' }),
      ];
    };
    const until = (n: number): Promise<boolean> =>
      eventually(`${n} execution connections`, async () => {
        const [g, legacy] = await gauge();
        return g === n && legacy === n ? true : undefined;
      });
    const a = await open(svc.ws('/ws/execution/1'));
    const b = await open(svc.ws('/ws/execution/2'));
    const m = await open(svc.ws('/ws/monitor'));
    await until(2);
    expect(metric(await metricsText(svc.url), MetricName.Connections, { endpoint: 'monitor' })).toBe(1);
    // Close with 1000 explicitly: a close frame without a status is counted as code 1005.
    a.ws.close(1000);
    await until(1);
    b.ws.close(1000);
    m.ws.close(1000);
    await until(0);
    const t = await metricsText(svc.url);
    expect(metric(t, MetricName.ConnectionsOpened, { endpoint: 'execution' })).toBe(2);
    expect(metric(t, MetricName.ConnectionsClosed, { endpoint: 'execution', code: '1000' })).toBe(2);
  });

  it("counts a client's own close codes as 'other' (a client must not choose label values)", async () => {
    const codes = [4999, 3123, 4321];
    for (const code of codes) {
      const c = await open(svc.ws('/ws/system'));
      c.ws.close(code);
      await c.closedWith();
    }
    const t = await eventually('three closes counted', async () => {
      const text = await metricsText(svc.url);
      return metric(text, MetricName.ConnectionsClosed, { endpoint: 'system', code: 'other' }) === 3 ? text : undefined;
    });
    expect(samples(t).filter((x) => x.name === MetricName.ConnectionsClosed && codes.map(String).includes(x.labels.code))).toEqual([]);
  });

  it('passes `promtool check metrics` (but for the accepted *_total gauge names)', async () => {
    // Some activity first, so the check sees non-zero samples and observed buckets too.
    const c = await open(svc.ws('/ws/execution/42'));
    expect((await svc.publish({ channel: 'execution.42', event: { type: 'log_entry', message: 'x' } })).status).toBe(202);
    await c.next('log_entry');
    const text = await metricsText(svc.url);
    // Bounded labels only: endpoint kinds and fixed reason lists, never an id or a user.
    const ours = new Set<string>(Object.values(MetricName));
    const labelProblems = samples(text)
      .filter((x) => ours.has(x.name.replace(/_(bucket|sum|count)$/, '')) || ours.has(x.name))
      .flatMap((x) => Object.entries(x.labels).map(([k, v]) => [x.name, k, v]))
      .filter(
        ([, k, v]) =>
          !['endpoint', 'code', 'reason', 'limit', 'recovered', 'decision', 'source', 'status', 'command', 'outcome', 'node', 'connection', 'le'].includes(k) ||
          (k === 'endpoint' && !(ENDPOINT_KINDS as readonly string[]).includes(v)),
      );
    expect(labelProblems).toEqual([]);
    const { code, lines } = await promtoolCheck(text);
    c.close();
    const problems = lines.filter((l) => !ACCEPTED_LINT.test(l));
    expect(problems).toEqual([]);
    // 0 = clean; 3 = lint findings only (all of them accepted above). Anything else is a failure to parse.
    expect([0, 3]).toContain(code);
    expect(lines.some((l) => l.startsWith('ansflow_websocket_connections_total'))).toBe(true);
  });
});

describe('metrics and health with the broker', () => {
  const ex = uniqueExchange('ops');
  let svc: Svc;
  beforeAll(async () => {
    svc = await startService({ RABBITMQ_URL, RABBITMQ_EXCHANGE: ex });
    await waitForStatus(`${svc.url}/health/ready`, 200, 30_000);
  });
  afterAll(async () => {
    await svc?.shutdown();
    await deleteBrokerObjects(ex);
  });

  it('reports the broker up and caught up', async () => {
    const { status, body } = await health(svc.url);
    expect(status).toBe(200);
    expect(body).toMatchObject({ status: 'healthy', checks: { broker: { status: 'up', caught_up: true } } });
    expect(metric(await metricsText(svc.url), MetricName.BrokerConnected)).toBe(1);
  });

  it('observes the latency of a broker event, once per event and endpoint kind', async () => {
    const c = await open(svc.ws('/ws/execution/42'));
    const pub = await connectPublisher();
    try {
      await pub.publish(ex, 'execution.42', { type: 'log_entry', message: 'timed' }, { messageId: randomBytes(16).toString('hex') });
    } finally {
      await pub.close();
    }
    await c.next('log_entry');
    c.close();
    const t = await eventually('a latency observation', async () => {
      const text = await metricsText(svc.url);
      return metric(text, `${MetricName.MessageLatency}_count`, { endpoint: 'execution' }) === 1 ? text : undefined;
    });
    const sum = metric(t, `${MetricName.MessageLatency}_sum`, { endpoint: 'execution' }) ?? NaN;
    expect(sum).toBeGreaterThan(0);
    expect(sum).toBeLessThan(5);
    expect(metric(t, `${MetricName.MessageLatency}_bucket`, { endpoint: 'execution', le: '5' })).toBe(1);
    for (const endpoint of ENDPOINT_KINDS.filter((k) => k !== 'execution')) {
      expect(metric(t, `${MetricName.MessageLatency}_count`, { endpoint })).toBe(0);
    }
    expect(metric(t, MetricName.BrokerConsumed)).toBe(1);
    expect(metric(t, MetricName.EventsPublished, { source: 'broker' })).toBe(1);
  });
});

describe('logs (child process)', () => {
  let dir: string;
  let child: ChildService | undefined;
  beforeAll(async () => {
    dir = await buildServiceOnce();
  }, 300_000);
  afterEach(async () => {
    await child?.kill();
    child = undefined;
  });

  async function stop(c: ChildService): Promise<void> {
    c.proc.kill('SIGTERM');
    const e = await within(c.exit, 15_000, 'exit after SIGTERM');
    expect(e).toEqual({ code: 0, signal: null });
  }

  it('health and metrics requests log nothing at LOG_LEVEL=debug', async () => {
    const c = (child = await spawnService(dir, { LOG_LEVEL: 'debug' }));
    for (let i = 0; i < 20; i++) expect((await fetch(`${c.url}/health`)).status).toBe(200);
    for (const p of ['/health/', '/health/live', '/health/ready', '/metrics', '/metrics']) expect((await fetch(`${c.url}${p}`)).status).toBe(200);
    await stop(c);
    const start = c.output.findIndex((l) => l.includes('ansflow-realtime listening'));
    expect(start).toBeGreaterThanOrEqual(0);
    const after = c.output.slice(start + 1);
    const shutdownLines = /"msg":"(signal received|shutting down: refusing upgrades, closing sockets with 1001|shutdown complete)"/;
    expect(after.filter((l) => shutdownLines.test(l))).toHaveLength(3);
    // The child was probed on /health/live until it answered, then hit 25 times: none of it is in the log. Only the
    // shutdown's three lines come after the listening one, in any order: pino's writes to a pipe reach it out of
    // order now and then ('signal received' after 'shutdown complete', with an earlier timestamp; 1 run in 8).
    expect(after.filter((l) => !shutdownLines.test(l))).toEqual([]);
  });

  it('no token, publish key or signing key appears in any log line at LOG_LEVEL=trace', async () => {
    const c = (child = await spawnService(dir, { LOG_LEVEL: 'trace', AUTH_FRAME_TIMEOUT_MS: '500' }));
    const tokens = {
      query: mintToken({ userId: 11 }),
      header: mintToken({ userId: 12 }),
      protocol: mintToken({ userId: 13 }),
      frame: mintToken({ userId: 14 }),
      badSignature: mintToken({ userId: 15, secret: 'another-secret-key-xyz' }),
      expired: mintToken({ userId: 16, expiresIn: -60 }),
      notUpgrade: mintToken({ userId: 17 }),
      badPath: mintToken({ userId: 18 }),
    };
    const q = await TestClient.connect(c.ws(`/ws/execution/42?token=${tokens.query}`));
    await q.next('connection');
    const h = await TestClient.connect(c.ws('/ws/system'), { headers: { authorization: `Bearer ${tokens.header}` } });
    await h.next('connection');
    const p = await TestClient.connect(c.ws('/ws/monitor'), { protocols: ['ansflow.v1', `bearer.${tokens.protocol}`] });
    await p.next('connection');
    const f = await TestClient.connect(c.ws('/ws/project/3'));
    f.send({ type: 'auth', token: tokens.frame });
    await f.next('connection');
    const bad = await TestClient.connect(c.ws(`/ws/execution/42?token=${tokens.badSignature}`));
    expect((await bad.closedWith()).code).toBe(4001);
    const expired = await TestClient.connect(c.ws('/ws/system'), { headers: { authorization: `Bearer ${tokens.expired}` } });
    expect((await expired.closedWith()).code).toBe(4001);
    const unknown = await TestClient.connect(c.ws(`/ws/nope/1?token=${tokens.badPath}`));
    expect((await unknown.closedWith()).code).toBe(4004);
    expect((await fetch(`${c.url}/ws/execution/42?token=${tokens.notUpgrade}`)).status).toBeGreaterThanOrEqual(400);
    expect((await publishVia(c.url, { channel: 'execution.42', event: { type: 'log_entry', message: 'hi' } })).status).toBe(202);
    await q.next('log_entry');
    for (const s of [q, h, p, f]) s.close();
    await stop(c);

    const log = c.output.join('\n');
    // The run did log (connections, closes): an empty log would prove nothing.
    expect(c.output.length).toBeGreaterThan(10);
    const leaks: string[] = [];
    for (const [name, t] of Object.entries(tokens)) {
      const signature = t.split('.')[2];
      if (log.includes(t) || log.includes(signature)) leaks.push(name);
    }
    for (const [name, secret] of [
      ['PUBLISH_API_KEY', 'child-publish-key-0123'],
      ['DJANGO_SECRET_KEY', TEST_SECRET],
    ]) {
      if (log.includes(secret)) leaks.push(name);
    }
    expect(leaks).toEqual([]);
  });
});

/** A WebSocket client that never answers the server's close frame (a stuck browser tab), on a raw TCP socket. */
async function lingeringSocket(port: number, path: string): Promise<{ closeFrame: Promise<{ code: number; reason: string }>; destroy: () => void }> {
  const sock = net.connect(port, '127.0.0.1');
  sock.on('error', () => undefined);
  let buf = Buffer.alloc(0);
  let upgraded = false;
  let onUpgrade: (ok: boolean, head: string) => void = () => undefined;
  let onClose: (c: { code: number; reason: string }) => void = () => undefined;
  const upgradedP = new Promise<void>((resolve, reject) => {
    onUpgrade = (ok, head) => (ok ? resolve() : reject(new Error(`upgrade refused: ${head}`)));
    setTimeout(() => reject(new Error('no upgrade answer within 5 s')), 5000).unref();
  });
  const closeFrame = new Promise<{ code: number; reason: string }>((resolve) => (onClose = resolve));
  sock.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk]);
    if (!upgraded) {
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString();
      buf = buf.subarray(end + 4);
      upgraded = true;
      onUpgrade(head.startsWith('HTTP/1.1 101'), head);
    }
    // Server frames are unmasked: opcode, 7-bit length (or 16/64-bit extended), payload.
    while (buf.length >= 2) {
      const opcode = buf[0] & 0x0f;
      let len = buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (buf.length < 4) return;
        len = buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (buf.length < 10) return;
        len = Number(buf.readBigUInt64BE(2));
        off = 10;
      }
      if (buf.length < off + len) return;
      const payload = buf.subarray(off, off + len);
      buf = buf.subarray(off + len);
      if (opcode === 0x8) onClose({ code: payload.length >= 2 ? payload.readUInt16BE(0) : 1005, reason: payload.subarray(2).toString() });
    }
  });
  sock.write(
    `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await upgradedP;
  return { closeFrame, destroy: () => sock.destroy() };
}

describe('SIGTERM (child process with the broker)', () => {
  const ex = uniqueExchange('sigterm');
  const SHUTDOWN_TIMEOUT_MS = 3000;
  let child: ChildService | undefined;
  let linger: { destroy: () => void } | undefined;
  beforeAll(async () => {
    const dir = await buildServiceOnce();
    child = await spawnService(dir, { RABBITMQ_URL, RABBITMQ_EXCHANGE: ex, SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) }, 'ready');
  }, 300_000);
  afterAll(async () => {
    linger?.destroy();
    await child?.kill();
    await deleteBrokerObjects(ex);
  });

  it('turns unready at once, refuses upgrades, closes every socket 1001 server_shutting_down and exits 0 in time', async () => {
    const c = child;
    if (c === undefined) throw new Error('not started');
    const clients = [
      await open(c.ws('/ws/execution/42'), 1),
      await open(c.ws('/ws/monitor'), 2),
      await open(c.ws('/ws/system'), 3),
      await open(c.ws('/ws/pipeline/5'), 4),
    ];
    // One client that never completes the close handshake keeps the HTTP server up for (almost) the whole
    // timeout, so the refused upgrade and the 503 readiness are observed on a listening server.
    const l = await lingeringSocket(c.port, `/ws/execution/42?token=${mintToken({ userId: 5 })}`);
    linger = l;

    const sent = Date.now();
    c.proc.kill('SIGTERM');
    // Poll readiness from the signal on. On a busy machine the request's bytes can reach the child's socket before
    // the child runs its signal handler, so the first answer may still be 200; once the process has logged the
    // signal, every answer must be 503.
    const statuses: number[] = [];
    let readyMs = -1;
    while (readyMs < 0 && Date.now() - sent < 2000) {
      const r = await fetch(`${c.url}/health/ready`);
      statuses.push(r.status);
      if (r.status === 503) {
        readyMs = Date.now() - sent;
        expect(JSON.stringify(await r.json())).toContain('shutting down');
      } else await r.arrayBuffer();
    }
    expect(readyMs).toBeGreaterThanOrEqual(0);
    expect(readyMs).toBeLessThan(1000);
    await eventually('the signal in the log', () => (c.output.some((x) => x.includes('signal received')) ? true : undefined), 2000);
    expect((await fetch(`${c.url}/health/ready`)).status).toBe(503);
    const overview = await health(c.url);
    expect({ status: overview.status, body: overview.body.status }).toEqual({ status: 503, body: 'shutting_down' });
    await expect(TestClient.connect(c.ws(`/ws/execution/42?token=${mintToken({ userId: 6 })}`))).rejects.toThrow('HTTP 503');

    const closes = await Promise.all(clients.map((x) => x.closedWith(SHUTDOWN_TIMEOUT_MS + 2000)));
    expect(closes).toEqual(clients.map(() => ({ code: 1001, reason: 'server_shutting_down' })));
    expect(await l.closeFrame).toEqual({ code: 1001, reason: 'server_shutting_down' });

    const exit = await within(c.exit, SHUTDOWN_TIMEOUT_MS + 5000, 'exit after SIGTERM');
    const exitMs = Date.now() - sent;
    expect({ exit, output: exit.code === 0 ? '' : c.output.join('\n') }).toEqual({ exit: { code: 0, signal: null }, output: '' });
    expect(exitMs).toBeLessThan(SHUTDOWN_TIMEOUT_MS + 1500);
    expect(c.output.some((l2) => l2.includes('shutdown complete'))).toBe(true);
    process.stdout.write(
      `SIGTERM: ready answers ${statuses.join(',')}, 503 after ${readyMs} ms, exit 0 after ${exitMs} ms (timeout ${SHUTDOWN_TIMEOUT_MS} ms)\n`,
    );
  });
});

describe('SIGTERM with the broker unreachable (child process)', () => {
  let child: ChildService | undefined;
  afterAll(async () => {
    await child?.kill();
  });

  it('still closes sockets 1001 and exits 0 within the timeout', async () => {
    const dir = await buildServiceOnce();
    const port = await freePort(); // nobody listens there
    const c = (child = await spawnService(dir, {
      RABBITMQ_URL: `amqp://guest:guest@127.0.0.1:${port}`,
      RABBITMQ_EXCHANGE: uniqueExchange('sigterm-nobroker'),
      SHUTDOWN_TIMEOUT_MS: '3000',
    }));
    expect((await fetch(`${c.url}/health/ready`)).status).toBe(503);
    // The socket is held without its connection frame until the stream has been read (ADR 0003): open is enough.
    const s = await TestClient.connect(`${c.ws('/ws/execution/42')}?token=${mintToken({ userId: 1 })}`);
    const sent = Date.now();
    c.proc.kill('SIGTERM');
    expect(await s.closedWith(5000)).toEqual({ code: 1001, reason: 'server_shutting_down' });
    const exit = await within(c.exit, 8000, 'exit after SIGTERM');
    expect({ exit, output: exit.code === 0 ? '' : c.output.join('\n') }).toEqual({ exit: { code: 0, signal: null }, output: '' });
    expect(Date.now() - sent).toBeLessThan(3000 + 1500);
  }, 300_000);
});
