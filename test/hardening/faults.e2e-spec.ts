import { monitorEventLoopDelay } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Socket } from 'node:net';
import { startService } from '../support/service';
import { mintToken } from '../support/tokens';
import { TestClient } from '../support/ws-client';
import { connected, metric, until, type Svc } from './support';
import { ConnWorker } from './workers';

const CONNECTIONS = Number(process.env.FAULTS_CONNECTIONS ?? 10_000);
const WORKERS = 4;

// A full GC before each memory reading, so RSS compares live memory rather than when V8 last collected.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
interface Mem {
  rss: number;
  heap: number;
  external: number;
}
const memory = (): Mem => {
  gc();
  const m = process.memoryUsage();
  return { rss: m.rss / 2 ** 20, heap: m.heapUsed / 2 ** 20, external: m.external / 2 ** 20 };
};
const fmt = (m: Mem): string => `RSS ${m.rss.toFixed(0)} MiB (heap ${m.heap.toFixed(0)}, external ${m.external.toFixed(0)})`;

/** Progress on stderr: a stage that stalls is visible before the timeout. */
const stage = (what: string): boolean => process.stderr.write(`[faults] ${new Date().toISOString().slice(11, 23)} ${what}\n`);

function quantile(values: number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
}

describe('faults', () => {
  let svc: Svc;

  beforeAll(async () => {
    svc = await startService({
      WS_MAX_CONNECTIONS: '19000',
      WS_MAX_CONNECTIONS_PER_IP: '19000',
      WS_MAX_CONNECTIONS_PER_USER: '19000',
    });
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  const gauge = (): Promise<number> => metric(svc, 'websocket_connections');

  it('cleans up a client killed without a close frame', async () => {
    const before = await gauge();
    const c = await connected(svc, '/ws/execution/5', 1);
    const d = await connected(svc, '/ws/monitor', 1);
    d.send({ type: 'subscribe_execution', executionId: 5 });
    await d.next('subscribed');
    expect(await gauge()).toBe(before + 2);
    for (const k of [c, d]) (k.ws as unknown as { _socket: Socket })._socket.destroy();
    await until('websocket_connections back down', async () => (await gauge()) === before);
    expect(await metric(svc, 'websocket_subscribed_channels')).toBe(0);
    // The channel still works for a newcomer.
    const e = await connected(svc, '/ws/execution/5', 1);
    await svc.publish({ channel: 'execution.5', event: { type: 'log_entry', message: 'after' } });
    await e.next('log_entry');
    e.close();
  });

  it(`survives ${CONNECTIONS} connections dropped at once and reconnecting with jittered back-off`, async () => {
    const idle = memory();
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const probe = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId: 1 })}`));
    await probe.next('connection');
    // The probe pings every 50 ms through everything below; each pong's round trip is the service's responsiveness.
    const rtts: number[] = [];
    let unanswered = 0;
    let pingAt = 0;
    let probing = true;
    const probeLoop = (async () => {
      while (probing) {
        pingAt = performance.now();
        probe.send({ type: 'ping' });
        try {
          // Answered, however late: the bound only catches a service that stopped answering.
          await probe.next('pong', 30_000);
          rtts.push(performance.now() - pingAt);
        } catch {
          unanswered++;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const workers = Array.from({ length: WORKERS }, () => new ConnWorker());
    try {
      const per = Math.ceil(CONNECTIONS / WORKERS);
      const t0 = Date.now();
      const opened = await Promise.all(
        workers.map((w, i) => w.request('open', { url: svc.ws(`/ws/execution/${100 + i}?token=${mintToken({ userId: 10 + i })}`), n: per, localAddress: `127.0.${20 + i}.1`, concurrency: 200 }, 200_000)),
      );
      const openMs = Date.now() - t0;
      stage(`opened ${JSON.stringify(opened)}`);
      expect(opened.reduce((s, r) => s + (r.failed as number), 0)).toBe(0);
      await until('all connections registered', async () => (await gauge()) === per * WORKERS + 1, 20_000, 100);
      const peak = memory();
      const rttOpen = [...rtts];

      const tDrop = Date.now();
      stage('dropping');
      await Promise.all(workers.map((w) => w.request('drop')));
      const reconnected = await Promise.all(workers.map((w) => w.request('reconnect', { baseMs: 1000, capMs: 15_000, deadlineMs: 150_000 }, 200_000)));
      const reconnectMs = Date.now() - tDrop;
      stage(`reconnected ${JSON.stringify(reconnected)}`);
      expect(reconnected.reduce((s, r) => s + (r.failed as number), 0)).toBe(0);
      await until('all connections back', async () => (await gauge()) === per * WORKERS + 1, 20_000, 100);
      const rttReconnect = rtts.slice(rttOpen.length);
      const attempts = reconnected.reduce((s, r) => s + (r.attempts as number), 0);

      await Promise.all(workers.map((w) => w.exit()));
      stage('workers gone');
      await until('only the probe left', async () => (await gauge()) === 1, 20_000, 100);
      probing = false;
      await probeLoop;
      const after = memory();
      lag.disable();
      console.log(
        [
          `${per * WORKERS} connections opened in ${openMs} ms; dropped at once and all back in ${reconnectMs} ms (${attempts} attempts)`,
          `probe ping→pong while opening: p50 ${quantile(rttOpen, 0.5).toFixed(1)} ms, p99 ${quantile(rttOpen, 0.99).toFixed(1)} ms, max ${Math.max(...rttOpen).toFixed(1)} ms (${rttOpen.length} pings)`,
          `probe ping→pong during drop + reconnect: p50 ${quantile(rttReconnect, 0.5).toFixed(1)} ms, p99 ${quantile(rttReconnect, 0.99).toFixed(1)} ms, max ${Math.max(...rttReconnect).toFixed(1)} ms (${rttReconnect.length} pings)`,
          `event-loop delay of the service's process: p99 ${(lag.percentile(99) / 1e6).toFixed(1)} ms, max ${(lag.max / 1e6).toFixed(1)} ms`,
          `memory of the test process (service + probe; after a full GC): idle ${fmt(idle)}; with ${per * WORKERS} sockets ${fmt(peak)}; after ${fmt(after)}`,
        ].join('\n'),
      );
      expect(unanswered).toBe(0);
      // A leak of per-connection objects shows in the JS heap: 10,000 sockets × even 3 KiB left behind is 30 MiB.
      expect(after.heap).toBeLessThan(idle.heap + 30);
      // RSS does not always shrink back (the allocator keeps freed pages): a generous bound, for native leaks.
      expect(after.rss).toBeLessThan(idle.rss + 250);
    } finally {
      probing = false;
      await Promise.all(workers.map((w) => w.exit()));
      probe.close();
    }
  }, 240_000);
});
