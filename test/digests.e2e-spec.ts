/**
 * Issue 11, as deployed: publishers that await each confirm (Django's) make RabbitMQ write a chunk per few records,
 * and reading a stream costs the broker per chunk. The instances copy what they read into digests (the replay stream,
 * src/messaging/stream-digest.ts) so a starting instance reads few big chunks. These tests restart instances on such
 * a stream and compare what they know with an instance that read the event stream alone.
 * Real RabbitMQ (stream protocol on 5552), real `node dist/main` children, real WebSocket clients.
 */
import amqp, { type ConfirmChannel } from 'amqplib';
import {
  buildServiceOnce,
  deleteBrokerObjects,
  eventually,
  metric,
  RABBITMQ_URL,
  rabbitmqctl,
  spawnService,
  uniqueExchange,
  type ChildService,
} from './support/broker';
import { decodeDigest, DigestBuilder } from '../src/messaging/stream-digest';
import { TestClient, type Frame } from './support/ws-client';

jest.setTimeout(300_000);

const STREAM_ARGS = { 'x-queue-type': 'stream', 'x-max-age': '24h', 'x-max-length-bytes': 2_000_000_000 };

/** Every 10th event goes to execution.7, the others spread over 50 executions. */
const channelOf = (i: number): string => (i % 10 === 0 ? 'execution.7' : `execution.${100 + (i % 50)}`);

/** Publish events `from..to-1` from 8 publishers, each awaiting its confirm before its next event (Django's way). */
async function publishLikeDjango(ch: ConfirmChannel, exchange: string, from: number, to: number): Promise<void> {
  let next = from;
  const publisher = async (): Promise<void> => {
    while (next < to) {
      const i = next++;
      await new Promise<void>((resolve, reject) =>
        ch.publish(
          exchange,
          channelOf(i),
          Buffer.from(JSON.stringify({ type: 'log_entry', seq: i, message: 'x'.repeat(100) })),
          { persistent: true, messageId: `${exchange}-${i}`, headers: { 'x-published-at-ms': Date.now() } },
          (err: unknown) => (err === null || err === undefined ? resolve() : reject(new Error('publish not confirmed'))),
        ),
      );
    }
  };
  await Promise.all(Array.from({ length: 8 }, publisher));
}

async function metricsOf(url: string): Promise<string> {
  return (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
}

async function digests(url: string, outcome: string): Promise<number> {
  return metric(await metricsOf(url), 'realtime_stream_digests_total', { outcome }) ?? -1;
}

/** The JSON log line with message `msg`, parsed, once the child has written it (its log is written asynchronously). */
function logLine(child: ChildService, msg: string): Promise<Record<string, unknown>> {
  return eventually(`log line "${msg}"`, () => {
    const line = child.output.find((l) => l.includes(`"msg":"${msg}"`));
    return line === undefined ? undefined : (JSON.parse(line) as Record<string, unknown>);
  });
}

describe('digests of the event stream (issue 11, as deployed)', () => {
  let build: string;
  let conn: amqp.ChannelModel;
  let ch: ConfirmChannel;
  const children: ChildService[] = [];
  const clients: TestClient[] = [];
  const exchanges: string[] = [];

  beforeAll(async () => {
    build = await buildServiceOnce();
    conn = await amqp.connect(RABBITMQ_URL, { noDelay: true });
    ch = await conn.createConfirmChannel();
  });

  afterEach(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await Promise.all(children.splice(0).map((c) => c.kill()));
  });

  afterAll(async () => {
    await conn.close().catch(() => undefined);
    for (const x of exchanges) await deleteBrokerObjects(x);
  });

  async function spawn(exchange: string, env: Record<string, string> = {}): Promise<ChildService> {
    const child = await spawnService(build, { RABBITMQ_URL, RABBITMQ_EXCHANGE: exchange, AUTH_REQUIRED: 'false', ...env }, 'ready');
    children.push(child);
    return child;
  }

  /** The events of execution.7 after `since`, as a resume on `svc` returns them (recovery frame, then the events). */
  async function resume(svc: ChildService, since: number, expected: number): Promise<{ recovery: Frame; events: Frame[] }> {
    const c = await TestClient.connect(svc.ws(`/ws/execution/7?since=${since}`));
    clients.push(c);
    const recovery = await c.next('recovery', 30_000);
    const events = expected === 0 ? [] : await c.collect((f) => f.type === 'log_entry', expected, 30_000);
    return { recovery, events };
  }

  /** Publish N events while one instance reads them, then stop it with SIGTERM: it writes what it gathered. */
  async function digestWithOneInstance(exchange: string, N: number): Promise<void> {
    const a = await spawn(exchange);
    await publishLikeDjango(ch, exchange, 0, N);
    await eventually('all events read by A', async () => {
      const h = (await (await fetch(`${a.url}/health`)).json()) as { history: { events: number } };
      return h.history.events === N ? true : undefined;
    });
    a.proc.kill('SIGTERM');
    await a.exit;
  }

  it('a restarted instance reads the digests, then the rest from the event stream, and knows exactly what one reading the event stream alone knows', async () => {
    const exchange = uniqueExchange('digests');
    exchanges.push(exchange);
    const a = await spawn(exchange);
    const truth = await TestClient.connect(a.ws('/ws/execution/7'));
    clients.push(truth);
    await truth.next('connection');
    const N = 6000;
    await publishLikeDjango(ch, exchange, 0, N);
    const onA = await truth.collect((f) => f.type === 'log_entry', N / 10, 60_000);
    // A writes its digests as it reads (every 2,000 events, or 5 s after the first): wait for some, then kill it so
    // that what it gathered since its last digest is lost with it and must come from the event stream.
    await eventually('digests written by A', async () => ((await digests(a.url, 'written')) >= 2 ? true : undefined), 30_000);
    a.proc.kill('SIGKILL');
    await a.exit;
    // Published while no instance runs: in no digest yet.
    const M = 600;
    await publishLikeDjango(ch, exchange, N, N + M);

    const b = await spawn(exchange);
    const read = await logLine(b, 'digests read; reading the event stream');
    const caught = await logLine(b, 'event stream caught up');
    expect(read?.events).toBeGreaterThanOrEqual(4000);
    expect(caught?.fromDigests).toBe(read?.events);
    expect(await digests(b.url, 'read')).toBeGreaterThanOrEqual(2);
    // What B read from the event stream itself (A's last records, the 600, the markers) it writes as digests.
    await eventually('digests written by B', async () => ((await digests(b.url, 'written')) >= 1 ? true : undefined), 30_000);

    // The reference: an instance that does not use digests reads everything from the event stream.
    const c = await spawn(exchange, { STREAM_DIGEST_EVENTS: '0' });
    const since = onA[4].position as number;
    const expected = N / 10 - 5 + M / 10;
    const fromB = await resume(b, since, expected);
    const fromC = await resume(c, since, expected);
    expect(fromB.recovery).toMatchObject({ recovered: true, missed: expected });
    expect(fromC.recovery).toMatchObject({ recovered: true, missed: expected });
    // Every event of execution.7 but the five up to `since` (8 publishers: stream order is not seq order), once.
    const skipped = new Set(onA.slice(0, 5).map((f) => f.seq as number));
    const want = Array.from({ length: (N + M) / 10 }, (_, k) => k * 10).filter((s) => !skipped.has(s));
    expect(fromB.events.map((f) => f.seq as number).sort((x, y) => x - y)).toEqual(want);
    expect(fromB.events.map((f) => f.position)).toEqual(fromC.events.map((f) => f.position));
    // Frame for frame the same: A read these events live over AMQP 0-9-1 and digested them re-encoded (encodeRecord);
    // C decodes what the stream stored.
    expect(fromB.events).toEqual(fromC.events);
    // The positions A gave its socket are the ones B and C resume with.
    expect(fromB.events.slice(0, N / 10 - 5).map((f) => f.position)).toEqual(onA.slice(5).map((f) => f.position));
    const healthB = (await (await fetch(`${b.url}/health`)).json()) as { websocket: { latest_position: number }; history: { events: number } };
    const healthC = (await (await fetch(`${c.url}/health`)).json()) as { websocket: { latest_position: number }; history: { events: number } };
    expect(healthB.history.events).toBe(N + M);
    expect(healthC.history.events).toBe(N + M);
  });

  it('a message in the replay stream that is no digest, and a digest beyond the event stream, are counted and skipped: the event stream is read instead', async () => {
    const exchange = uniqueExchange('digests-bad');
    exchanges.push(exchange);
    await ch.assertExchange(exchange, 'topic', { durable: true });
    await ch.assertQueue(`${exchange}.stream`, { durable: true, arguments: STREAM_ARGS });
    await ch.bindQueue(`${exchange}.stream`, exchange, '#');
    await ch.assertQueue(`${exchange}.replay`, { durable: true, arguments: STREAM_ARGS });
    // Offset 0: an event of another channel, so a resume from 0 returns every event of execution.7.
    ch.publish(exchange, 'execution.999', Buffer.from('{"type":"log_entry"}'), { persistent: true, messageId: `${exchange}-first` });
    await ch.waitForConfirms();
    const N = 3000;
    await publishLikeDjango(ch, exchange, 0, N);
    // Not a digest; then a well-formed digest of one record at offset 1,000,000,000 (a stream that was deleted and
    // declared again leaves such digests behind).
    ch.publish('', `${exchange}.replay`, Buffer.from('{"type":"log_entry"}'), { persistent: true });
    const far = Buffer.alloc(16 + 4 + 2);
    far.write('ADG1', 0, 'latin1');
    far.writeBigUInt64BE(1_000_000_000n, 4);
    far.writeUInt32BE(1, 12);
    far.writeUInt32BE(2, 16);
    far.write('{}', 20);
    ch.publish('', `${exchange}.replay`, far, { persistent: true });
    await ch.waitForConfirms();

    const svc = await spawn(exchange);
    expect(await digests(svc.url, 'invalid')).toBe(1);
    expect(await digests(svc.url, 'read')).toBe(0);
    expect(await logLine(svc, 'a digest beyond the event stream; reading the event stream from here')).toMatchObject({ digestFrom: 1_000_000_000 });
    expect(await logLine(svc, 'event stream caught up')).toMatchObject({ fromDigests: 0 });
    const health = (await (await fetch(`${svc.url}/health`)).json()) as { history: { events: number }; websocket: { latest_position: number } };
    expect(health.history.events).toBe(N + 1);
    expect(health.websocket.latest_position).toBeLessThan(N + 10);
    const all = await resume(svc, 0, N / 10);
    expect(all.recovery).toMatchObject({ recovered: true, missed: N / 10 });
    expect(all.events.map((f) => f.seq as number).sort((x, y) => x - y)).toEqual(Array.from({ length: N / 10 }, (_, k) => k * 10));
    // The digest far ahead does not count as coverage: this instance digests what it read.
    await eventually('digests written', async () => ((await digests(svc.url, 'written')) >= 1 ? true : undefined), 30_000);
  });
  it('a gap in the digests filled by a digest written later: the reader skips to it and reads every event from digests', async () => {
    const exchange = uniqueExchange('digests-gap');
    exchanges.push(exchange);
    const N = 3000;
    await digestWithOneInstance(exchange, N);

    // A's digests, as records by offset.
    const records = new Map<number, Buffer | undefined>();
    const reader = await conn.createChannel();
    await reader.prefetch(100);
    let lastSeenMs = Date.now();
    await reader.consume(
      `${exchange}.replay`,
      (msg) => {
        if (msg === null) return;
        lastSeenMs = Date.now();
        const d = decodeDigest(msg.content);
        if (d !== undefined) d.records.forEach((r, i) => records.set(d.firstOffset + i, r === undefined ? undefined : Buffer.from(d.buf.subarray(r[0], r[1]))));
        reader.ack(msg);
      },
      { arguments: { 'x-stream-offset': 'first' } },
    );
    await eventually('the replay stream read', () => (Date.now() - lastSeenMs > 1500 ? true : undefined), 30_000);
    await reader.close();
    const offsets = [...records.keys()].sort((x, y) => x - y);
    const first = offsets[0];
    const last = offsets[offsets.length - 1];
    expect(offsets.length).toBe(last - first + 1);
    expect(offsets.length).toBeGreaterThanOrEqual(N);

    // The same records cut in three and written again in the order a dropped digest leaves behind: the first, the
    // third, then what the instance that read the rest from the event stream wrote later: the second and the third.
    const cut = (from: number, to: number): Buffer => {
      const b = new DigestBuilder();
      for (let o = from; o < to; o++) {
        const rec = records.get(o);
        b.add(o, rec ?? Buffer.alloc(0), rec === undefined ? undefined : [0, rec.length]);
      }
      return b.take(-1) as Buffer;
    };
    const third = Math.floor((last - first + 1) / 3);
    await ch.deleteQueue(`${exchange}.replay`);
    await ch.assertQueue(`${exchange}.replay`, { durable: true, arguments: STREAM_ARGS });
    const [one, two, three] = [cut(first, first + third), cut(first + third, first + 2 * third), cut(first + 2 * third, last + 1)];
    for (const body of [one, three, two, three]) {
      ch.publish('', `${exchange}.replay`, body, { persistent: true });
    }
    await ch.waitForConfirms();

    const b = await spawn(exchange);
    expect(await logLine(b, 'gap in the digests; looking further for the digest that fills it')).toMatchObject({ digestFrom: first + 2 * third });
    const read = await logLine(b, 'digests read; reading the event stream');
    // Every record from the digests: the first third, then the second once it comes, then the third written after it.
    expect(read.events).toBe(last - first + 1);
    expect(await digests(b.url, 'skipped')).toBe(1);
    const c = await spawn(exchange, { STREAM_DIGEST_EVENTS: '0' });
    const fromB = await resume(b, 0, N / 10);
    const fromC = await resume(c, 0, N / 10);
    expect(fromB.recovery).toMatchObject({ recovered: true, missed: N / 10 });
    expect(fromB.events).toEqual(fromC.events);
  });

  it('a stream whose segment files roll (RabbitMQ gives one offset of each new file no record) is digested without a gap', async () => {
    const exchange = uniqueExchange('digests-segments');
    exchanges.push(exchange);
    // 100 kB segment files instead of 500 MB: a few hundred events per file, so the skipped offsets come often.
    const policy = `${exchange}-segments`;
    await rabbitmqctl('set_policy', '--apply-to', 'queues', policy, `^${exchange.replace(/\./g, '\\.')}\\.stream$`, '{"stream-max-segment-size-bytes":100000}');
    try {
      const N = 3000;
      await digestWithOneInstance(exchange, N);
      const b = await spawn(exchange);
      const c = await spawn(exchange, { STREAM_DIGEST_EVENTS: '0' });
      const read = await logLine(b, 'digests read; reading the event stream');
      expect(read.events).toBeGreaterThanOrEqual(N);
      expect(b.output.filter((l) => l.includes('gap in the digests'))).toEqual([]);
      // The event stream itself skips offsets here: C, reading it alone, sees them.
      expect(c.output.filter((l) => l.includes('unexpected stream chunk')).length).toBeGreaterThan(0);
      const fromB = await resume(b, 0, N / 10);
      const fromC = await resume(c, 0, N / 10);
      expect(fromB.events.map((f) => f.position)).toEqual(fromC.events.map((f) => f.position));
      expect(fromB.events.map((f) => f.seq as number).sort((x, y) => x - y)).toEqual(Array.from({ length: N / 10 }, (_, k) => k * 10));
    } finally {
      await rabbitmqctl('clear_policy', policy);
    }
  });
});
