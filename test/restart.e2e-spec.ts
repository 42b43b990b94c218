/**
 * Issue 11: restarts. A starting instance replays the stream; nothing from before a socket connected may reach it
 * as live, "caught up" is decided by offsets (clock skew of publishers is irrelevant), and a quiet stream, an empty
 * stream and a broker connection lost mid-replay all end ready with every event read exactly once.
 * Real RabbitMQ (stream protocol on 5552), real `node dist/main` children, real WebSocket clients.
 */
import amqp from 'amqplib';
import { createServer, connect as tcpConnect, type Server, type Socket } from 'node:net';
import {
  buildServiceOnce,
  deleteBrokerObjects,
  eventually,
  freePort,
  RABBITMQ_URL,
  spawnService,
  uniqueExchange,
  within,
  type ChildService,
} from './support/broker';
import { TestClient, type Frame } from './support/ws-client';

jest.setTimeout(300_000);

const STREAM_PORT = Number(process.env.TEST_RABBITMQ_STREAM_PORT ?? 5552);

interface Health {
  status: number;
  body: { details?: { broker?: { position?: number; caught_up?: boolean } }; websocket?: { events_published: number; latest_position: number } };
}

async function readiness(url: string): Promise<Health> {
  const res = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: (await res.json()) as Health['body'] };
}

async function overview(url: string): Promise<{ websocket: { events_published: number; latest_position: number }; history: { events: number } }> {
  const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(5000) });
  return (await res.json()) as { websocket: { events_published: number; latest_position: number }; history: { events: number } };
}

/** Poll /health/ready until 200 and return that answer (its broker position is the one the decision was made at). */
async function firstReady(url: string, ms = 120_000): Promise<Health> {
  return eventually(
    'ready',
    async () => {
      const h = await readiness(url).catch(() => undefined);
      return h?.status === 200 ? h : undefined;
    },
    ms,
  );
}

/**
 * Declare the exchange and its stream as the service does (same arguments) and publish `n` events with confirms in
 * large batches. Offsets of a fresh stream are 0..n-1. `headers(i)` may override x-published-at-ms (clock skew).
 */
async function prefill(exchange: string, n: number, channelOf: (i: number) => string, headers: (i: number) => Record<string, unknown> = () => ({})): Promise<void> {
  const conn = await amqp.connect(RABBITMQ_URL, { noDelay: true });
  try {
    const ch = await conn.createConfirmChannel();
    await ch.assertExchange(exchange, 'topic', { durable: true });
    await ch.assertQueue(`${exchange}.stream`, { durable: true, arguments: { 'x-queue-type': 'stream', 'x-max-age': '24h', 'x-max-length-bytes': 2_000_000_000 } });
    await ch.bindQueue(`${exchange}.stream`, exchange, '#');
    const pad = 'x'.repeat(200);
    for (let i = 0; i < n; ) {
      const end = Math.min(n, i + 5000);
      for (; i < end; i++) {
        const at = Date.now();
        ch.publish(exchange, channelOf(i), Buffer.from(JSON.stringify({ type: 'log_entry', seq: i, message: pad })), {
          persistent: true,
          messageId: `${exchange}-${i}`,
          timestamp: Math.floor(at / 1000),
          headers: { 'x-published-at-ms': at, ...headers(i) },
        });
      }
      await ch.waitForConfirms();
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/**
 * A TCP relay to the stream port whose connections the test can cut (a broker connection lost, seen from the
 * service), and which can slow the broker-to-service direction so a replay lasts long enough to act during it.
 */
class CuttableRelay {
  private readonly sockets = new Set<Socket>();
  private server: Server | undefined;
  port = 0;

  constructor(private readonly pauseMsPerRead = 0) {}

  async start(): Promise<void> {
    this.port = await freePort();
    this.server = createServer((client) => {
      const upstream = tcpConnect({ host: '127.0.0.1', port: STREAM_PORT });
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => undefined);
      }
      client.pipe(upstream);
      upstream.on('data', (d: Buffer) => {
        client.write(d);
        if (this.pauseMsPerRead > 0) {
          upstream.pause();
          setTimeout(() => upstream.resume(), this.pauseMsPerRead);
        }
      });
      client.on('close', () => upstream.destroy());
      upstream.on('close', () => client.destroy());
    });
    await new Promise<void>((resolve) => this.server?.listen(this.port, '127.0.0.1', resolve));
  }

  cut(): number {
    const n = this.sockets.size / 2;
    for (const s of this.sockets) s.destroy();
    return n;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => (this.server === undefined ? resolve() : this.server.close(() => resolve())));
  }
}

describe('restarts (issue 11)', () => {
  let build: string;
  const children: ChildService[] = [];
  const clients: TestClient[] = [];
  const exchanges: string[] = [];
  const relays: CuttableRelay[] = [];

  beforeAll(async () => {
    build = await buildServiceOnce();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await Promise.all(children.splice(0).map((c) => c.kill()));
    await Promise.all(relays.splice(0).map((r) => r.stop()));
  });

  afterAll(async () => {
    for (const x of exchanges) await deleteBrokerObjects(x);
  });

  async function spawn(exchange: string, env: Record<string, string> = {}, ready: 'live' | 'ready' = 'live'): Promise<ChildService> {
    const child = await spawnService(build, { RABBITMQ_URL, RABBITMQ_EXCHANGE: exchange, AUTH_REQUIRED: 'false', ...env }, ready);
    children.push(child);
    return child;
  }

  async function open(url: string): Promise<TestClient> {
    const c = await TestClient.connect(url);
    clients.push(c);
    return c;
  }

  it('sockets opened during a replay of many thousands of events get no replayed event as live; a resume with since gets exactly what it missed', async () => {
    const exchange = uniqueExchange('restart-live');
    exchanges.push(exchange);
    const N = 20_000;
    // Instance A sees everything live: its frames on execution.7 are the truth a resume is compared with.
    const a = await spawn(exchange, {}, 'ready');
    const truth = await open(a.ws('/ws/execution/7'));
    await truth.next('connection');
    const channelOf = (i: number): string => (i % 50 === 0 ? 'execution.7' : `execution.${100 + (i % 97)}`);
    await prefill(exchange, N, channelOf);
    const prefilledOn7 = Math.ceil(N / 50);
    const aFrames = await truth.collect((f) => f.type === 'log_entry', prefilledOn7, 120_000);
    const resumeFrom = aFrames[Math.floor(prefilledOn7 / 2)].position as number;

    // Instance B starts and replays the 20,000 events (through a relay that slows the replay to a few seconds);
    // sockets connect to it throughout the replay while a publisher keeps adding live events.
    const relay = new CuttableRelay(10);
    await relay.start();
    relays.push(relay);
    const b = await spawn(exchange, { RABBITMQ_STREAM_PORT: String(relay.port) });
    const live = await amqp.connect(RABBITMQ_URL, { noDelay: true });
    const liveCh = await live.createConfirmChannel();
    const confirmedAt = new Map<number, number>();
    let seq = N;
    let publishing = true;
    const publisher = (async () => {
      while (publishing) {
        const s = seq++;
        liveCh.publish(exchange, 'execution.7', Buffer.from(JSON.stringify({ type: 'log_entry', seq: s, message: 'live' })), {
          persistent: true,
          messageId: `${exchange}-${s}`,
          headers: { 'x-published-at-ms': Date.now() },
        });
        await liveCh.waitForConfirms();
        confirmedAt.set(s, Date.now());
        await new Promise((r) => setTimeout(r, 20));
      }
    })();

    const opened: Array<{ client: TestClient; startedAt: number; duringReplay: boolean; resume: boolean }> = [];
    for (let i = 0; ; i++) {
      const resume = i % 4 === 3;
      const startedAt = Date.now();
      const client = await open(b.ws(`/ws/execution/7${resume ? `?since=${resumeFrom}` : ''}`));
      const duringReplay = (await readiness(b.url)).status === 503;
      opened.push({ client, startedAt, duringReplay, resume });
      if (!duringReplay && i >= 3) break;
    }
    expect(opened.filter((o) => o.duringReplay).length).toBeGreaterThan(0);
    await firstReady(b.url);
    // Every socket gets its connection frame while live events still flow; then a few more, then stop and let A
    // and every socket of B receive them.
    await Promise.all(opened.map((o) => o.client.collect((f) => f.type === 'connection', 1, 120_000)));
    const stopAt = seq + 10;
    await eventually('live events', () => (seq >= stopAt ? true : undefined), 60_000);
    publishing = false;
    await publisher;
    await live.close();
    const lastSeq = seq - 1;
    const allOnA = await truth.collect((f) => f.type === 'log_entry', prefilledOn7 + (lastSeq - N + 1), 60_000);

    for (const o of opened) {
      const [connection] = await o.client.collect((f) => f.type === 'connection', 1, 60_000);
      expect(typeof connection.position).toBe('number');
      const hasLast = (f: Frame): boolean => f.type === 'log_entry' && f.seq === lastSeq;
      await o.client.collect(hasLast, 1, 60_000);
      const events = o.client.frames.filter((f) => f.type === 'log_entry');
      if (o.resume) {
        // Exactly what it missed: every event of A after the resume position, in order, once (recovery + live).
        expect(o.client.frames.find((f) => f.type === 'recovery')).toMatchObject({ recovered: true });
        const expected = allOnA.filter((f) => (f.position as number) > resumeFrom).map((f) => f.position);
        expect(events.map((f) => f.position)).toEqual(expected);
      } else {
        // Live only: no prefilled (replayed) event; for a socket opened during the replay, every live event it got
        // was confirmed by the broker after the socket began (the sync marker it waited for makes this exact).
        expect(events.filter((f) => (f.seq as number) < N)).toEqual([]);
        if (o.duringReplay) for (const f of events) expect(confirmedAt.get(f.seq as number)).toBeGreaterThanOrEqual(o.startedAt);
        // Its connection position is usable for a resume: every event it got comes after it.
        for (const f of events) expect(f.position as number).toBeGreaterThan(connection.position as number);
      }
    }
  });

  it.each([
    ['10 s in the future', 10_000],
    ['10 s in the past', -10_000],
  ])('publishers whose clocks run %s: ready only once the stream is read up to its tail', async (_label, skewMs) => {
    const exchange = uniqueExchange('restart-skew');
    exchanges.push(exchange);
    const N = 10_000;
    await prefill(
      exchange,
      N,
      (i) => `execution.${1 + (i % 20)}`,
      () => {
        const at = Date.now() + skewMs;
        return { 'x-published-at-ms': at };
      },
    );
    const svc = await spawn(exchange);
    const ready = await firstReady(svc.url);
    // The answer that said "ready" was computed with the position below: every prefilled offset (0..N-1) was read.
    expect(ready.body.details?.broker?.position).toBeGreaterThanOrEqual(N - 1);
    expect((await overview(svc.url)).websocket.events_published).toBe(N);
  });

  it('a quiet stream (events only older than the replay window) is ready at once, and knows where the stream stands', async () => {
    const exchange = uniqueExchange('restart-quiet');
    exchanges.push(exchange);
    const N = 500;
    await prefill(exchange, N, (i) => `execution.${1 + (i % 5)}`);
    // The replay window is 2 s: let every prefilled event fall out of it.
    await new Promise((r) => setTimeout(r, 3500));
    const svc = await spawn(exchange, { HISTORY_TTL_SECONDS: '2' });
    const ready = await firstReady(svc.url, 60_000);
    expect(ready.body.details?.broker?.position).toBeGreaterThanOrEqual(N - 1);
    const o = await overview(svc.url);
    expect(o.websocket.events_published).toBe(0);
    // A client that saw the last prefilled event missed nothing; one from before the window cannot be served fully.
    const upToDate = await open(svc.ws(`/ws/execution/1?since=${N - 1}`));
    expect(await upToDate.next('recovery', 30_000)).toMatchObject({ recovered: true, missed: 0 });
    const stale = await open(svc.ws(`/ws/execution/1?since=${Math.floor(N / 2)}`));
    expect(await stale.next('recovery', 30_000)).toMatchObject({ recovered: false });
  });

  it('an empty stream is ready at once; the first event is live and a resume from the connection position gets it', async () => {
    const exchange = uniqueExchange('restart-empty');
    exchanges.push(exchange);
    const svc = await spawn(exchange);
    await firstReady(svc.url, 60_000);
    const first = await open(svc.ws('/ws/execution/3'));
    const connection = await first.next('connection', 30_000);
    const conn = await amqp.connect(RABBITMQ_URL, { noDelay: true });
    try {
      const ch = await conn.createConfirmChannel();
      ch.publish(exchange, 'execution.3', Buffer.from(JSON.stringify({ type: 'log_entry', message: 'first' })), { messageId: `${exchange}-first` });
      await ch.waitForConfirms();
    } finally {
      await conn.close();
    }
    const event = await first.next('log_entry', 30_000);
    expect(event.position as number).toBeGreaterThan(connection.position as number);
    const resumed = await open(svc.ws(`/ws/execution/3?since=${String(connection.position)}`));
    expect(await resumed.next('recovery', 30_000)).toMatchObject({ recovered: true, missed: 1 });
    expect(await resumed.next('log_entry', 30_000)).toMatchObject({ position: event.position, message: 'first' });
  });

  it('a stream connection lost mid-replay: reconnects, continues from the next offset, ready with every event read once', async () => {
    const exchange = uniqueExchange('restart-cut');
    exchanges.push(exchange);
    const relay = new CuttableRelay(10);
    await relay.start();
    relays.push(relay);
    {
      const N = 30_000;
      await prefill(exchange, N, (i) => `execution.${1 + (i % 40)}`);
      const svc = await spawn(exchange, { RABBITMQ_STREAM_PORT: String(relay.port) });
      const before = await eventually(
        'replay under way',
        async () => {
          const o = await overview(svc.url);
          return o.websocket.events_published > 0 ? o : undefined;
        },
        60_000,
      );
      expect(relay.cut()).toBeGreaterThan(0);
      expect(before.websocket.events_published).toBeLessThan(N);
      await within(
        eventually('reconnect logged', () => (svc.output.some((l) => l.includes('stream reader disconnected')) ? true : undefined), 30_000),
        35_000,
        'reconnect',
      );
      const ready = await firstReady(svc.url);
      expect(ready.body.details?.broker?.position).toBeGreaterThanOrEqual(N - 1);
      // Every prefilled event once: a re-read would be dropped as a duplicate id, a gap would leave fewer.
      expect((await overview(svc.url)).websocket.events_published).toBe(N);
      const metrics = await (await fetch(`${svc.url}/metrics`)).text();
      expect(metrics).toMatch(/realtime_broker_duplicates_total 0\b/);
    }
  });
});
