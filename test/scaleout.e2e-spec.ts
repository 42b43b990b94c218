import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import amqp from 'amqplib';
import WebSocket from 'ws';
import { Cluster, RABBITMQ_URL, type Instance, type Publisher } from './support/cluster';
import { mintToken } from './support/tokens';
import { TestClient, type Frame } from './support/ws-client';

/**
 * Several `node dist/main` processes on one RabbitMQ exchange, as a deployment runs them behind a load balancer:
 * every instance reads the same stream, so an event has the same position everywhere and a client can resume on
 * any instance (issue 7). Needs the real RabbitMQ at 127.0.0.1:5672.
 */
jest.setTimeout(120_000);

const token = mintToken({ userId: 1 });

/** Our test events carry `seq` (the order they were published in); other frames do not. */
const isEventOf =
  (channel: string) =>
  (f: Frame): boolean =>
    f.channel === channel && typeof f.seq === 'number';

function eventsOf(c: TestClient, channel: string): Frame[] {
  return c.frames.filter(isEventOf(channel));
}

function positionsOf(frames: Frame[]): number[] {
  return frames.map((f) => f.position as number);
}

function seqsOf(frames: Frame[]): number[] {
  return frames.map((f) => f.seq as number);
}

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_v, i) => from + i);
}

/** Every event exactly once, in publication order, with strictly increasing positions. */
function expectExactlyOnceInOrder(frames: Frame[], from: number, to: number): void {
  expect(seqsOf(frames)).toEqual(range(from, to));
  const positions = positionsOf(frames);
  for (let i = 1; i < positions.length; i++) expect(positions[i]).toBeGreaterThan(positions[i - 1]);
}

function logEntry(executionId: number, seq: number): Record<string, unknown> {
  return { type: 'log_entry', execution_id: executionId, seq, level: 'info', message: `line ${seq}` };
}

async function open(instance: Instance, path: string, since?: number): Promise<TestClient> {
  const query = since === undefined ? '' : `&since=${since}`;
  return TestClient.connect(instance.ws(`${path}?token=${token}${query}`));
}

/** The last position a client saw on a channel, or the instance's position when it connected if none. */
function lastPosition(c: TestClient, channel: string): number {
  const events = eventsOf(c, channel);
  if (events.length > 0) return events[events.length - 1].position as number;
  const hello = c.frames.find((f) => f.type === 'connection');
  if (hello === undefined) throw new Error('no connection frame');
  return hello.position as number;
}

async function publishAll(pub: Publisher, channel: string, executionId: number, from: number, to: number): Promise<void> {
  await pub.burst(channel, to - from, (i) => logEntry(executionId, from + i));
}

describe('scale-out and resume (three instances, one RabbitMQ stream)', () => {
  let cluster: Cluster;
  let pub: Publisher;
  let a: Instance;
  let b: Instance;
  let c: Instance;
  const clients: TestClient[] = [];
  const track = (t: TestClient): TestClient => {
    clients.push(t);
    return t;
  };

  beforeAll(async () => {
    cluster = await Cluster.start(3);
    [a, b, c] = cluster.instances;
    pub = await cluster.publisher();
  });

  afterAll(async () => {
    for (const t of clients) t.close();
    await cluster?.cleanup();
  });

  afterEach(() => {
    for (const t of clients.splice(0)) t.close();
  });

  it('clients on all three instances receive every event once, with the same positions everywhere', async () => {
    const channel = 'execution.101';
    const subs = await Promise.all([a, a, b, b, c, c].map(async (i) => track(await open(i, '/ws/execution/101'))));
    await Promise.all(subs.map((s) => s.next('execution_status')));
    await publishAll(pub, channel, 101, 0, 50);
    const received = await Promise.all(subs.map((s) => s.collect(isEventOf(channel), 50)));
    for (const frames of received) expectExactlyOnceInOrder(frames, 0, 50);
    const reference = positionsOf(received[0]);
    for (const frames of received) expect(positionsOf(frames)).toEqual(reference);
  });

  it('a client cut off from instance A resumes on instance B with exactly the missed events, in order, then live ones', async () => {
    const channel = 'execution.102';
    const onA = track(await open(a, '/ws/execution/102'));
    const witnessB = track(await open(b, '/ws/execution/102'));
    await Promise.all([onA.next('execution_status'), witnessB.next('execution_status')]);
    await publishAll(pub, channel, 102, 0, 5);
    await onA.collect(isEventOf(channel), 5);
    const since = lastPosition(onA, channel);
    onA.close();
    await onA.closedWith();

    await publishAll(pub, channel, 102, 5, 15);
    // The resume is answered from B's history: wait until B has read the events from the stream.
    await witnessB.collect(isEventOf(channel), 15);

    const resumed = track(await open(b, '/ws/execution/102', since));
    expect(await resumed.next()).toMatchObject({ type: 'connection' });
    expect(await resumed.next()).toMatchObject({ type: 'recovery', recovered: true, since, missed: 10 });
    const replayed = await resumed.collect(isEventOf(channel), 10);
    expectExactlyOnceInOrder(replayed, 5, 15);
    // Missed events come right after the recovery frame, before anything else.
    expect(resumed.frames.slice(2, 12).map((f) => f.seq)).toEqual(range(5, 15));

    await publishAll(pub, channel, 102, 15, 18);
    const all = await resumed.collect(isEventOf(channel), 13);
    expectExactlyOnceInOrder(all, 5, 18);
    expect(positionsOf(all)[0]).toBeGreaterThan(since);
    // The same events carry the same positions on A's and B's sockets.
    expect(positionsOf(eventsOf(onA, channel))).toEqual(positionsOf(eventsOf(witnessB, channel)).slice(0, 5));
    expect(positionsOf(all)).toEqual(positionsOf(await witnessB.collect(isEventOf(channel), 18)).slice(5));
    // A complete recovery needs no snapshot.
    expect(resumed.frames.some((f) => f.type === 'execution_status')).toBe(false);
  });

  it('SIGKILL of one instance during a burst: its clients resume on the others and get every event exactly once, in order', async () => {
    const channel = 'execution.103';
    const total = 500;
    const victims = await Promise.all(range(0, 12).map(async () => track(await open(c, '/ws/execution/103'))));
    const witnesses = [track(await open(a, '/ws/execution/103')), track(await open(b, '/ws/execution/103'))];
    await Promise.all([...victims, ...witnesses].map((s) => s.next('execution_status')));

    // C dies as soon as one of its sockets has the burst's first event: mid-burst by construction. Killing at the
    // publisher's 250th confirm raced C's delivery: once in CI no victim had received anything yet.
    let killed: Promise<number | null> | undefined;
    victims[0].ws.once('message', () => {
      killed ??= c.kill('SIGKILL');
    });
    const burst = pub.burst(channel, total, (i) => logEntry(103, i));
    // Each victim notices the lost connection and comes back on A or B with the last position it received.
    const resumed = await Promise.all(
      victims.map(async (v, i) => {
        await v.closedWith(30_000);
        return track(await open(i % 2 === 0 ? a : b, '/ws/execution/103', lastPosition(v, channel)));
      }),
    );
    await burst;
    expect(await killed).toBeNull(); // killed by the signal, not exited

    for (const w of witnesses) expectExactlyOnceInOrder(await w.collect(isEventOf(channel), total, 30_000), 0, total);
    const reference = positionsOf(eventsOf(witnesses[0], channel));
    let beforeKill = 0;
    for (const [i, v] of victims.entries()) {
      const before = eventsOf(v, channel);
      beforeKill += before.length;
      const r = resumed[i];
      const recovery = await r.next('recovery');
      expect(recovery).toMatchObject({ recovered: true, since: lastPosition(v, channel) });
      const after = await r.collect(isEventOf(channel), total - before.length, 30_000);
      const joined = [...before, ...after];
      expectExactlyOnceInOrder(joined, 0, total);
      expect(positionsOf(joined)).toEqual(reference);
      expect(recovery.missed).toBeLessThanOrEqual(after.length);
    }
    // The kill really happened mid-burst: the victims had part of it, not all.
    expect(beforeKill).toBeGreaterThan(0);
    expect(beforeKill).toBeLessThan(victims.length * total);

    await c.start();
    await c.waitReady();
  });

  it('answers recovered:false and a fresh execution_status when the position is older than the history', async () => {
    const channel = 'execution.104';
    const small = await cluster.add({ env: { HISTORY_SIZE: '5' } });
    const witness = track(await open(small, '/ws/execution/104'));
    await witness.next('execution_status');
    await pub.burst(channel, 20, (i) => ({
      type: 'execution_update',
      execution_id: 104,
      seq: i,
      status: i === 19 ? 'success' : 'running',
      pipeline_name: 'scale-out',
      total_steps: 20,
      completed_steps: i + 1,
    }));
    const seen = await witness.collect(isEventOf(channel), 20);
    const second = seen[1].position as number;

    const late = track(await open(small, '/ws/execution/104', second));
    expect(await late.next()).toMatchObject({ type: 'connection' });
    expect(await late.next()).toMatchObject({ type: 'recovery', recovered: false, since: second, missed: 0 });
    const status = await late.next();
    expect(status).toMatchObject({
      type: 'execution_status',
      data: { execution_id: 104, status: 'success', completed_steps: 20, total_steps: 20, pipeline_name: 'scale-out' },
    });
    // Never a partial recovery: none of the 5 events still in history is replayed as if it were the whole gap.
    await pub.publish(channel, { type: 'log_entry', execution_id: 104, seq: 20, message: 'live' });
    const live = await late.collect(isEventOf(channel), 1);
    expect(seqsOf(live)).toEqual([20]);

    // The same position on an instance with the default history is a complete recovery.
    await witness.collect(isEventOf(channel), 21);
    const full = track(await open(a, '/ws/execution/104', second));
    expect(await full.next('recovery')).toMatchObject({ recovered: true, missed: 19 });
    expectExactlyOnceInOrder(await full.collect(isEventOf(channel), 19), 2, 21);
  });

  it('keeps history across a restart of one instance: resuming on it with an old position recovers everything', async () => {
    const channel = 'execution.105';
    const witness = track(await open(b, '/ws/execution/105'));
    await witness.next('execution_status');
    const base = lastPosition(witness, channel);
    await publishAll(pub, channel, 105, 0, 8);
    const third = (await witness.collect(isEventOf(channel), 8))[2].position as number;

    expect(await b.kill('SIGTERM')).toBe(0);
    await b.start();
    await b.waitReady();

    const fromBase = track(await open(b, '/ws/execution/105', base));
    expect(await fromBase.next('recovery')).toMatchObject({ recovered: true, missed: 8 });
    expectExactlyOnceInOrder(await fromBase.collect(isEventOf(channel), 8), 0, 8);
    const fromThird = track(await open(b, '/ws/execution/105', third));
    expect(await fromThird.next('recovery')).toMatchObject({ recovered: true, missed: 5 });
    const replayed = await fromThird.collect(isEventOf(channel), 5);
    expectExactlyOnceInOrder(replayed, 3, 8);
    expect(positionsOf(replayed)).toEqual(positionsOf(eventsOf(witness, channel)).slice(3));
  });

  it('after a restart whose replay window is quiet, knows where the stream stands: a resume at the tail is complete', async () => {
    const channel = 'execution.110';
    // Digests off: the SIGTERM below writes what the instance gathered as a digest, and a digest is found by when it
    // was written, not by when its events were (ADR 0003, decision 5): read back within 1 s, it would bring the three
    // events back, and this test is about a replay that reads none.
    const quiet = await cluster.add({ env: { HISTORY_TTL_SECONDS: '1', STREAM_DIGEST_EVENTS: '0' } });
    const before = track(await open(quiet, '/ws/execution/110'));
    await before.next('execution_status');
    await publishAll(pub, channel, 110, 0, 3);
    const seen = await before.collect(isEventOf(channel), 3);
    const last = lastPosition(before, channel);
    // Let the events fall out of the 1 s replay window, then restart: the instance reads no event at start.
    await new Promise((r) => setTimeout(r, 1500));
    await quiet.restart('SIGTERM');
    await quiet.waitReady();
    const atTail = track(await open(quiet, '/ws/execution/110', last));
    // At or past the last event: the instances' sync markers (ADR 0003) take stream offsets too.
    const connection = await atTail.next();
    expect(connection).toMatchObject({ type: 'connection' });
    expect(connection.position as number).toBeGreaterThanOrEqual(last);
    expect(await atTail.next()).toMatchObject({ type: 'recovery', recovered: true, since: last, missed: 0 });
    const older = track(await open(quiet, '/ws/execution/110', seen[0].position as number));
    await older.next('connection');
    expect(await older.next()).toMatchObject({ type: 'recovery', recovered: false });
  });

  it('delivers events published while an instance was down to a client that resumes on it after its restart', async () => {
    const channel = 'execution.106';
    const onC = track(await open(c, '/ws/execution/106'));
    await onC.next('execution_status');
    await publishAll(pub, channel, 106, 0, 2);
    await onC.collect(isEventOf(channel), 2);
    const since = lastPosition(onC, channel);

    await c.kill('SIGKILL');
    await onC.closedWith();
    await publishAll(pub, channel, 106, 2, 12);
    await c.start();
    await c.waitReady();

    const back = track(await open(c, '/ws/execution/106', since));
    expect(await back.next()).toMatchObject({ type: 'connection' });
    expect(await back.next()).toMatchObject({ type: 'recovery', recovered: true, since, missed: 10 });
    expectExactlyOnceInOrder(await back.collect(isEventOf(channel), 10), 2, 12);
    await publishAll(pub, channel, 106, 12, 13);
    expectExactlyOnceInOrder(await back.collect(isEventOf(channel), 11), 2, 13);
  });

  it('delivers events published while an instance was cut from the broker to the clients still connected to it, once each', async () => {
    const channel = 'execution.109';
    const onC = track(await open(c, '/ws/execution/109'));
    await onC.next('execution_status');
    await publishAll(pub, channel, 109, 0, 3);
    await onC.collect(isEventOf(channel), 3);

    const reconnectsBefore = c.logged('broker connected').length;
    expect(c.dropBrokerConnection()).toBeGreaterThan(0);
    await c.waitReadiness(503);
    const publishedFrom = Date.now();
    await publishAll(pub, channel, 109, 3, 13);
    await c.waitReadiness(200);
    // The events were in the stream before the instance came back: it caught up from its next offset.
    const reconnected = c.logged('broker connected').slice(reconnectsBefore);
    expect(reconnected.length).toBeGreaterThan(0);
    expect(Date.parse(String(reconnected[0].time))).toBeGreaterThan(publishedFrom);

    expectExactlyOnceInOrder(await onC.collect(isEventOf(channel), 13), 0, 13);
    await publishAll(pub, channel, 109, 13, 14);
    expectExactlyOnceInOrder(await onC.collect(isEventOf(channel), 14), 0, 14);
    expect(onC.closed).toBeUndefined();
  });

  it('a client whose position is ahead of the instance it resumes on (it came from a faster one) waits for it instead of being refused', async () => {
    const channel = 'execution.108';
    const health = (await (await fetch(`${b.url}/health`)).json()) as { websocket: { latest_position: number } };
    const latest = health.websocket.latest_position;
    // Another instance already delivered the next two events of the stream; B has not read them yet.
    const since = latest + 2;
    const ahead = track(await open(b, '/ws/execution/108', since));
    const witness = track(await open(a, '/ws/execution/108'));
    await witness.next('execution_status');
    await publishAll(pub, channel, 108, 0, 4);
    // Premise: stream offsets are consecutive, so `since` is the position of the 2nd event.
    expect(positionsOf(await witness.collect(isEventOf(channel), 4))).toEqual(range(latest + 1, latest + 5));

    expect(await ahead.next()).toMatchObject({ type: 'connection' });
    const recovery = await ahead.next();
    expect(recovery).toMatchObject({ type: 'recovery', recovered: true, since });
    // Events after `since` that B read while the resume waited are replayed, the others arrive live: each once.
    expect(recovery.missed).toBeLessThanOrEqual(2);
    expectExactlyOnceInOrder(await ahead.collect(isEventOf(channel), 2), 2, 4);
    expect(ahead.frames.some((f) => f.type === 'execution_status')).toBe(false);
  });

  it('monitor: subscribe_execution with since recovers the missed events on another instance', async () => {
    const channel = 'execution.107';
    const monA = track(await open(a, '/ws/monitor'));
    await monA.next('system_status');
    monA.send({ type: 'subscribe_execution', executionId: 107 });
    await monA.next('subscribed');
    await monA.next('execution_status');
    const witnessB = track(await open(b, '/ws/execution/107'));
    await witnessB.next('execution_status');

    await publishAll(pub, channel, 107, 0, 3);
    await monA.collect(isEventOf(channel), 3);
    const since = lastPosition(monA, channel);
    monA.close();
    await monA.closedWith();
    await publishAll(pub, channel, 107, 3, 7);
    await witnessB.collect(isEventOf(channel), 7);

    const monB = track(await open(b, '/ws/monitor'));
    await monB.next('system_status');
    monB.send({ type: 'subscribe_execution', executionId: 107, since });
    expect(await monB.next()).toMatchObject({ type: 'subscribed', execution_id: 107 });
    expect(await monB.next()).toMatchObject({ type: 'recovery', recovered: true, since, missed: 4 });
    expectExactlyOnceInOrder(await monB.collect(isEventOf(channel), 4), 3, 7);
    await publishAll(pub, channel, 107, 7, 8);
    expectExactlyOnceInOrder(await monB.collect(isEventOf(channel), 5), 3, 8);
    expect(monB.frames.some((f) => f.type === 'execution_status')).toBe(false);
  });
});

/**
 * Figures for docs/adr/0001 (prints, asserts nothing): SCALEOUT_MEASURE=1 npx jest --selectProjects e2e
 * --runTestsByPath test/scaleout.e2e-spec.ts -t figures
 */
const measure = process.env.SCALEOUT_MEASURE === '1' ? describe : describe.skip;

function quantiles(samples: number[]): string {
  const s = [...samples].sort((x, y) => x - y);
  const q = (p: number): string => (s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? NaN).toFixed(2);
  return `n=${s.length} p50=${q(0.5)} p90=${q(0.9)} p99=${q(0.99)} max=${q(1)} ms`;
}

/** Publish→consume latency of bare amqplib through a stream or a classic queue bound to a topic exchange. */
async function brokerLatency(
  kind: 'stream' | 'classic' | 'exclusive',
  mode: 'one-at-a-time' | 'burst',
  n: number,
): Promise<{ latency: number[]; confirm: number[] }> {
  const exchange = `measure.${randomBytes(4).toString('hex')}`;
  const queue = `${exchange}.${kind}`;
  const cconn = await amqp.connect(RABBITMQ_URL, { noDelay: true });
  const pconn = await amqp.connect(RABBITMQ_URL, { noDelay: true });
  const latency: number[] = [];
  const confirm: number[] = [];
  try {
    const cch = await cconn.createChannel();
    await cch.assertExchange(exchange, 'topic', { durable: true });
    // `exclusive`: what a per-instance fan-out queue would be (in memory, gone with its connection).
    await cch.assertQueue(
      queue,
      kind === 'exclusive' ? { exclusive: true, durable: false } : { durable: true, arguments: kind === 'stream' ? { 'x-queue-type': 'stream' } : {} },
    );
    await cch.bindQueue(queue, exchange, '#');
    await cch.prefetch(1000);
    const sentAt = new Map<number, number>();
    let received = 0;
    let wake: () => void = () => undefined;
    await cch.consume(
      queue,
      (msg) => {
        if (msg === null) return;
        const i = Number(msg.content.toString());
        latency.push(performance.now() - (sentAt.get(i) ?? NaN));
        cch.ack(msg);
        received++;
        wake();
      },
      { noAck: false, arguments: kind === 'stream' ? { 'x-stream-offset': 'next' } : {} },
    );
    const pch = await pconn.createConfirmChannel();
    const send = (i: number): Promise<void> =>
      new Promise((resolve) => {
        const t = performance.now();
        sentAt.set(i, t);
        pch.publish(exchange, 'execution.1', Buffer.from(String(i)), { persistent: true }, () => {
          confirm.push(performance.now() - t);
          resolve();
        });
      });
    const receivedAll = (k: number): Promise<void> =>
      new Promise((resolve) => {
        wake = () => {
          if (received >= k) resolve();
        };
        wake();
      });
    if (mode === 'one-at-a-time') {
      for (let i = 0; i < n; i++) {
        const confirmed = send(i);
        await receivedAll(i + 1);
        await confirmed;
      }
    } else {
      const all: Promise<void>[] = [];
      for (let i = 0; i < n; i++) {
        all.push(send(i));
        if (i % 500 === 499) await new Promise((resolve) => setImmediate(resolve));
      }
      await Promise.all(all);
      await receivedAll(n);
    }
    await cch.deleteQueue(queue);
    await cch.deleteExchange(exchange);
  } finally {
    await cconn.close();
    await pconn.close();
  }
  return { latency, confirm };
}

measure('scale-out figures (SCALEOUT_MEASURE=1)', () => {
  it('figures: publish→consume latency through a stream vs a classic queue (amqplib, same machine)', async () => {
    for (const mode of ['one-at-a-time', 'burst'] as const) {
      for (const kind of ['exclusive', 'classic', 'stream'] as const) {
        await brokerLatency(kind, mode, 200); // warm-up
        const { latency, confirm } = await brokerLatency(kind, mode, mode === 'burst' ? 10_000 : 2000);
        console.log(
          `[figures] amqplib ${kind === 'classic' ? 'classic durable' : kind === 'exclusive' ? 'classic exclusive' : kind} ${mode}: publish→consume ${quantiles(latency)}; publish→confirm ${quantiles(confirm)}`,
        );
      }
    }
  });

  it('figures: start-up replay time of the stream, readiness wait, and resume latency', async () => {
    const cluster = await Cluster.start(1, { LOG_LEVEL: 'info' });
    try {
      const pub = await cluster.publisher();
      const startup = async (label: string): Promise<Instance> => {
        const t0 = performance.now();
        const inst = await cluster.add({ ready: false });
        const listening = performance.now() - t0;
        await inst.waitReady(300_000);
        const ready = performance.now() - t0;
        const caught = inst.logged('event stream caught up').pop();
        console.log(
          `[figures] start-up with ${label}: listening after ${listening.toFixed(0)} ms, ready after ${ready.toFixed(0)} ms, replay ${String(caught?.replayMs)} ms, rss ${rss(inst)} MiB`,
        );
        return inst;
      };
      await startup('an empty stream');
      let published = 0;
      for (const target of [10_000, 100_000]) {
        // Every 5th event to execution.1 (the one resumed below), the others over 99 more executions.
        while (published < target) {
          const chunk = Math.min(5000, target - published);
          const base = published;
          const id = (i: number): number => ((base + i) % 5 === 0 ? 1 : 2 + ((base + i) % 99));
          await pub.burst(
            (i) => `execution.${id(i)}`,
            chunk,
            (i) => logEntry(id(i), base + i),
          );
          published += chunk;
        }
        const inst = await startup(`${target} events in the stream`);
        if (target === 10_000) {
          // Resume latency on this freshly replayed instance: connect with since → recovery frame → last missed event.
          for (const missed of [0, 10, 100, 900]) {
            const toRecovery: number[] = [];
            const toLast: number[] = [];
            for (let rep = 0; rep < 20; rep++) {
              const probe = await open(inst, '/ws/execution/1');
              const hello = await probe.next('connection');
              probe.close();
              const since = (hello.position as number) - 5 * missed;
              const t0 = performance.now();
              const r = await open(inst, '/ws/execution/1', since);
              const recovery = await r.next('recovery');
              toRecovery.push(performance.now() - t0);
              if (recovery.recovered !== true) throw new Error(`recovery refused: ${JSON.stringify(recovery)}`);
              if ((recovery.missed as number) > 0) await r.collect(isEventOf('execution.1'), recovery.missed as number);
              toLast.push(performance.now() - t0);
              r.close();
            }
            console.log(`[figures] resume with ${missed} missed events: to recovery frame ${quantiles(toRecovery)}; to last missed event ${quantiles(toLast)}`);
          }
        }
        await inst.kill('SIGKILL');
      }
    } finally {
      await cluster.cleanup();
    }
  }, 600_000);

  it('figures: publish→WebSocket latency through two instances (50 clients spread over both)', async () => {
    const cluster = await Cluster.start(2);
    try {
      const pub = await cluster.publisher();
      const latency: number[] = [];
      const sockets = await Promise.all(
        range(0, 50).map(async (i) => {
          const ws = new WebSocket(cluster.instances[i % 2].ws(`/ws/execution/200?token=${token}`));
          // execution_status is sent once the socket has joined its channel.
          const subscribed = new Promise((resolve) => {
            ws.on('message', (data: Buffer) => {
              const f = JSON.parse(data.toString('utf8')) as { type?: string; t?: number };
              if (typeof f.t === 'number') latency.push(performance.now() - f.t);
              else if (f.type === 'execution_status') resolve(undefined);
            });
          });
          await subscribed;
          return ws;
        }),
      );
      for (let i = 0; i < 2000; i++) {
        await pub.publish('execution.200', { type: 'log_entry', seq: i, t: performance.now() });
        if (i % 10 === 9) await new Promise((resolve) => setTimeout(resolve, 2)); // ~2-3k events/s
      }
      const deadline = Date.now() + 10_000;
      while (latency.length < 2000 * 50 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50));
      console.log(`[figures] broker → 2 instances → 50 WebSocket clients: publish→receive ${quantiles(latency)} (${latency.length}/${2000 * 50} deliveries)`);
      for (const ws of sockets) ws.close();
    } finally {
      await cluster.cleanup();
    }
  });
});

function rss(inst: Instance): string {
  const pid = inst.proc?.pid;
  if (pid === undefined) return '?';
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1]);
  return (kb / 1024).toFixed(0);
}

measure('scale-out figures (SCALEOUT_MEASURE=1), memory', () => {
  it('figures: memory per idle connection on one instance', async () => {
    const cluster = await Cluster.start(1, { WS_MAX_CONNECTIONS_PER_USER: '5000' });
    const [a] = cluster.instances;
    const sockets: TestClient[] = [];
    try {
      const before = Number(rss(a));
      for (let batch = 0; batch < 20; batch++) {
        const opened = await Promise.all(range(0, 100).map((i) => open(a, `/ws/execution/${1 + ((batch * 100 + i) % 500)}`)));
        await Promise.all(opened.map((s) => s.next('execution_status')));
        sockets.push(...opened);
      }
      const after = Number(rss(a));
      console.log(
        `[figures] ${sockets.length} idle sockets over 500 channels: RSS ${before} → ${after} MiB, ${(((after - before) * 1024) / sockets.length).toFixed(1)} KiB per connection`,
      );
    } finally {
      for (const s of sockets) s.close();
      await cluster.cleanup();
    }
  });
});
