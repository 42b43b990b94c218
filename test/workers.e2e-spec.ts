import { get } from 'node:http';
import { randomBytes } from 'node:crypto';
import { deleteBrokerObjects, ensureBuilt, Instance, instanceEnv, Publisher } from './support/cluster';
import { mintToken } from './support/tokens';
import { TestClient, type Frame } from './support/ws-client';

/**
 * WORKERS=2: one `node dist/main` primary forks two workers sharing the port through node:cluster; each worker is a
 * full instance reading the RabbitMQ stream (issue 14, point 3). Which worker holds a socket is in the
 * `X-Ansflow-Worker` header of the upgrade; which one answered an HTTP request is in `/health`'s `worker`. Every
 * HTTP request below opens its own TCP connection, since a kept-alive one would stay with one worker.
 * Needs the real RabbitMQ at 127.0.0.1:5672.
 */
jest.setTimeout(300_000);

const token = mintToken({ userId: 1 });

interface Health {
  status: string;
  worker: { id: number; pid: number; workers: number } | null;
}

/** GET on a fresh TCP connection (no keep-alive), so the primary may hand it to any worker. */
function fresh(instance: Instance, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port: instance.port, path, agent: false, timeout: 10_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)));
    req.on('error', reject);
  });
}

async function health(instance: Instance): Promise<Health> {
  return JSON.parse((await fresh(instance, '/health')).body) as Health;
}

/** Ask /health until `pred` holds for the worker that answered (the primary alternates between workers). */
async function healthUntil(instance: Instance, pred: (h: Health) => boolean, what: string, ms = 60_000): Promise<Health> {
  const deadline = Date.now() + ms;
  for (;;) {
    const h = await health(instance).catch(() => undefined);
    if (h !== undefined && pred(h)) return h;
    if (Date.now() > deadline) throw new Error(`no /health answer with ${what} within ${ms} ms:\n${instance.tail()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

function workerOf(c: TestClient): number {
  const id = Number(c.upgradeHeaders['x-ansflow-worker']);
  if (!Number.isInteger(id)) throw new Error('no X-Ansflow-Worker header on the upgrade');
  return id;
}

async function open(instance: Instance, path: string, since?: number): Promise<TestClient> {
  const c = await TestClient.connect(instance.ws(`${path}?token=${token}${since === undefined ? '' : `&since=${since}`}`));
  await c.next('connection', 20_000);
  return c;
}

const isEvent = (f: Frame): boolean => typeof f.seq === 'number';
const seqs = (frames: Frame[]): number[] => frames.filter(isEvent).map((f) => f.seq as number);
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_v, i) => from + i);

function logEntry(executionId: number, seq: number): Record<string, unknown> {
  return { type: 'log_entry', execution_id: executionId, seq, level: 'info', message: `line ${seq}` };
}

/** The last position a client saw: its last event's, or the `connection` frame's before any event. */
function lastPosition(c: TestClient): number {
  const events = c.frames.filter(isEvent);
  const last = events.length > 0 ? events[events.length - 1] : c.frames.find((f) => f.type === 'connection');
  return last?.position as number;
}

/** Events after the recovery frame carry strictly increasing positions, each once. */
function expectIncreasingPositions(frames: Frame[]): void {
  const positions = frames.filter(isEvent).map((f) => f.position as number);
  for (let i = 1; i < positions.length; i++) expect(positions[i]).toBeGreaterThan(positions[i - 1]);
}

describe('WORKERS=2: every core of one host', () => {
  const exchange = `test.${randomBytes(6).toString('hex')}`;
  let instance: Instance;
  let publisher: Publisher;
  const clients: TestClient[] = [];
  const workerPids = new Set<number>();

  beforeAll(async () => {
    instance = new Instance('workers', ensureBuilt(), instanceEnv(exchange, { WORKERS: '2' }));
    // Generous: two workers boot at once and each joins the port only once caught up with the stream.
    await instance.start(150_000);
    publisher = await Publisher.connect(exchange);
    // Both workers listen only once they have caught up with the stream: wait until each has answered.
    const seen = new Map<number, number>();
    await healthUntil(
      instance,
      (h) => {
        if (h.worker !== null) seen.set(h.worker.id, h.worker.pid);
        return seen.size === 2;
      },
      'both workers',
    );
    for (const pid of seen.values()) workerPids.add(pid);
  });

  afterEach(() => {
    for (const c of clients.splice(0)) c.close();
  });

  afterAll(async () => {
    for (const c of clients) c.close();
    await instance?.kill('SIGKILL');
    await publisher?.close();
    await deleteBrokerObjects(exchange);
    // The workers exit when their primary's IPC channel closes; make sure of it.
    for (const pid of workerPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
  });

  it('spreads sockets over both workers and aggregates /metrics over them; /health names the worker that answered', async () => {
    for (let i = 0; i < 16; i++) clients.push(await open(instance, '/ws/execution/3'));
    const byWorker = new Map<number, number>();
    for (const c of clients) byWorker.set(workerOf(c), (byWorker.get(workerOf(c)) ?? 0) + 1);
    expect(byWorker.size).toBe(2);
    for (const n of byWorker.values()) expect(n).toBeGreaterThanOrEqual(1);

    const h = await health(instance);
    expect(h.worker).toEqual({ id: expect.any(Number), pid: expect.any(Number), workers: 2 });
    expect(workerPids.has(h.worker?.pid ?? -1)).toBe(true);

    // Whichever worker answers, the scrape counts the sockets of both (and the primary's own series).
    for (let i = 0; i < 3; i++) {
      const { status, body } = await fresh(instance, '/metrics');
      expect(status).toBe(200);
      expect(body).toMatch(/^websocket_connections\{endpoint="execution"\} 16$/m);
      expect(body).toMatch(/^realtime_workers 2$/m);
      expect(body).toMatch(/^realtime_broker_connected 1$/m);
    }

    // One event reaches the sockets of both workers (each reads the stream itself).
    await publisher.publish('execution.3', logEntry(3, 1));
    for (const c of clients) expect(seqs(await c.collect(isEvent, 1, 20_000))).toEqual([1]);
  });

  it('resumes on the other worker with exactly the events missed', async () => {
    const first = await open(instance, '/ws/execution/4');
    clients.push(first);
    for (let seq = 1; seq <= 5; seq++) await publisher.publish('execution.4', logEntry(4, seq));
    await first.collect(isEvent, 5, 20_000);
    const since = lastPosition(first);
    first.close();
    await first.closedWith(10_000);
    for (let seq = 6; seq <= 10; seq++) await publisher.publish('execution.4', logEntry(4, seq));

    // The primary picks the worker: reconnect until the other one answers (each try is a full resume too).
    let resumed: TestClient | undefined;
    for (let attempt = 0; attempt < 40 && resumed === undefined; attempt++) {
      const c = await open(instance, '/ws/execution/4', since);
      clients.push(c);
      if (workerOf(c) !== workerOf(first)) resumed = c;
      else c.close();
    }
    if (resumed === undefined) throw new Error('40 reconnects all landed on the first worker');
    const recovery = await resumed.next('recovery', 20_000);
    expect(recovery).toMatchObject({ recovered: true, missed: 5 });
    const missed = await resumed.collect(isEvent, 5, 20_000);
    expect(seqs(missed)).toEqual(range(6, 10));
    expect(missed[0].position as number).toBeGreaterThan(since);
    await publisher.publish('execution.4', logEntry(4, 11));
    expect(seqs(await resumed.collect(isEvent, 6, 20_000))).toEqual(range(6, 11));
    expectIncreasingPositions(resumed.frames);
  });

  it('replaces a worker killed with SIGKILL; its clients resume elsewhere with exactly the events they missed', async () => {
    const before = new Set<number>();
    for (let i = 0; i < 12; i++) clients.push(await open(instance, '/ws/execution/9'));
    for (const c of clients) before.add(workerOf(c));
    expect(before.size).toBe(2);
    const victim = workerOf(clients[0]);
    const victimPid = (await healthUntil(instance, (h) => h.worker?.id === victim, `worker ${victim}`)).worker?.pid as number;
    const cut = clients.filter((c) => workerOf(c) === victim);
    const kept = clients.filter((c) => workerOf(c) !== victim);

    const total = 200;
    let killed = false;
    await publisher.burst(
      'execution.9',
      total,
      (i) => logEntry(9, i + 1),
      (confirmed) => {
        if (confirmed >= total / 2 && !killed) {
          killed = true;
          process.kill(victimPid, 'SIGKILL');
        }
      },
    );
    expect(killed).toBe(true);
    // On a quiet machine the victim may have sent the whole burst before the signal landed: events published once its
    // sockets are gone are missed for sure, so every resume below has something to recover.
    for (const c of cut) await c.closedWith(20_000);
    const tail = 20;
    for (let i = total; i < total + tail; i++) await publisher.publish('execution.9', logEntry(9, i + 1));
    const all = total + tail;

    for (const c of kept) expect(seqs(await c.collect(isEvent, all, 30_000))).toEqual(range(1, all));
    let resumedMissed = 0;
    for (const c of cut) {
      const got = seqs(c.frames);
      const again = await open(instance, '/ws/execution/9', lastPosition(c));
      clients.push(again);
      expect(workerOf(again)).not.toBe(victim);
      const recovery = await again.next('recovery', 20_000);
      expect(recovery).toMatchObject({ recovered: true, missed: all - got.length });
      resumedMissed += recovery.missed as number;
      // What it had before the cut, then what the resume gave: every event once, in order.
      expect([...got, ...seqs(await again.collect(isEvent, all - got.length, 30_000))]).toEqual(range(1, all));
      expectIncreasingPositions(again.frames);
    }
    expect(cut.length).toBeGreaterThan(0);
    expect(resumedMissed).toBeGreaterThanOrEqual(tail * cut.length);

    // The primary forked a replacement (a new worker id), which serves once it has caught up.
    const replacement = await healthUntil(instance, (h) => h.worker !== null && !before.has(h.worker.id), 'a replacement worker');
    expect(replacement.worker?.workers).toBe(2);
    expect(replacement.status).toBe('healthy');
    workerPids.add(replacement.worker?.pid as number);
    expect(instance.running).toBe(true);
    const metrics = (await fresh(instance, '/metrics')).body;
    expect(metrics).toMatch(/^realtime_worker_restarts_total 1$/m);
    expect(metrics).toMatch(/^realtime_workers 2$/m);
    // The replacement has the history too: a resume from before the burst is complete on whichever worker.
    for (let i = 0; i < 4; i++) {
      const c = await open(instance, '/ws/execution/9', lastPosition(kept[0]) - 20);
      clients.push(c);
      expect(await c.next('recovery', 20_000)).toMatchObject({ recovered: true, missed: 20 });
    }
  });

  it('stops every worker on SIGTERM: sockets closed with 1001, workers and primary exit 0', async () => {
    // The replacement of the previous test joins the port once it has caught up: open sockets until both workers
    // hold some (a worker that never joins still fails here).
    const seen = new Set<number>();
    for (let i = 0; i < 40 && (i < 6 || seen.size < 2); i++) {
      const c = await open(instance, '/ws/system');
      clients.push(c);
      seen.add(workerOf(c));
      if (seen.size < 2 && i >= 5) await new Promise((resolve) => setTimeout(resolve, 250));
    }
    expect(seen.size).toBe(2);
    const code = await instance.kill('SIGTERM', 30_000);
    expect(code).toBe(0);
    for (const c of clients) expect(await c.closedWith(10_000)).toEqual({ code: 1001, reason: 'server_shutting_down' });
    const stopped = instance.logged('workers stopped');
    expect(stopped).toEqual([expect.objectContaining({ workers: 2, failed: 0 })]);
    for (const pid of workerPids) expect(() => process.kill(pid, 0)).toThrow();
  });
});
