/**
 * RabbitMQ ingest against the real broker (issue 3): routing by routing key to the right sockets, message_id
 * idempotency, poison messages dead-lettered once with their reason, the broker absent at start-up and restarted
 * mid-stream, and two instances each delivering one publication once.
 *
 * Every describe uses its own scratch exchange (`test.<label>.<hex>`) and deletes what the service declared for it.
 * Outages (`rabbitmqctl stop_app`) hold /tmp/broker-restart.lock and always restart the broker in a `finally`.
 */
import { randomBytes } from 'node:crypto';
import {
  brokerObjects,
  buildServiceOnce,
  connectPublisher,
  deleteBrokerObjects,
  drainQueue,
  ensureBrokerRunning,
  eventually,
  metric,
  publishVia,
  queueDepth,
  RABBITMQ_URL,
  rabbitmqctl,
  spawnService,
  uniqueExchange,
  waitForStatus,
  withBrokerStopped,
  type ChildService,
  type Publisher,
} from './support/broker';
import { startService } from './support/service';
import { mintToken } from './support/tokens';
import { TestClient, type Frame } from './support/ws-client';

type Svc = Awaited<ReturnType<typeof startService>>;

/** Event frames (they carry the channel they came from); control frames (connection, status, pong) do not. */
const events = (c: TestClient): Frame[] => c.frames.filter((f) => typeof f.channel === 'string' && typeof f.position === 'number');
const tags = (c: TestClient): unknown[] => events(c).map((f) => f.tag);
const id = (): string => randomBytes(16).toString('hex');

async function open(url: string, userId: number): Promise<TestClient> {
  const c = await TestClient.connect(`${url}${url.includes('?') ? '&' : '?'}token=${mintToken({ userId })}`);
  await c.next('connection');
  return c;
}

async function follow(monitor: TestClient, executionId: number): Promise<void> {
  monitor.send({ type: 'subscribe_execution', executionId });
  expect(await monitor.next('subscribed')).toMatchObject({ execution_id: executionId });
  await monitor.next('execution_status');
}

/** Wait until the client's event frames include one tagged `tag` (the publications are ordered: all before it came). */
async function until(c: TestClient, tag: string, ms = 15_000): Promise<void> {
  await c.collect((f) => f.tag === tag, 1, ms);
}

async function startWithBroker(exchange: string, env: Record<string, string> = {}): Promise<Svc> {
  const svc = await startService({ RABBITMQ_URL, RABBITMQ_EXCHANGE: exchange, ...env });
  await waitForStatus(`${svc.url}/health/ready`, 200, 30_000);
  return svc;
}

describe('RabbitMQ ingest: routing and idempotency', () => {
  const ex = uniqueExchange('routing');
  let svc: Svc;
  let pub: Publisher;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    svc = await startWithBroker(ex);
    pub = await connectPublisher();
  });
  afterAll(async () => {
    for (const c of clients) c.close();
    await pub?.close();
    await svc?.shutdown();
    await deleteBrokerObjects(ex);
  });

  it('execution.42 reaches its sockets and monitors following 42, user.7 only user 7, system the system and monitor sockets; bodies unchanged', async () => {
    const track = async (c: Promise<TestClient>): Promise<TestClient> => {
      const got = await c;
      clients.push(got);
      return got;
    };
    const x42a = await track(open(svc.ws('/ws/execution/42'), 1));
    const x42b = await track(open(svc.ws('/ws/execution/42'), 2));
    const x43u7 = await track(open(svc.ws('/ws/execution/43'), 7));
    const mon42 = await track(open(svc.ws('/ws/monitor'), 3));
    const mon43 = await track(open(svc.ws('/ws/monitor'), 4));
    const sys7 = await track(open(svc.ws('/ws/system'), 7));
    const sys8 = await track(open(svc.ws('/ws/system'), 8));
    await follow(mon42, 42);
    await follow(mon43, 43);

    const bodies = {
      e42: {
        type: 'log_entry',
        tag: 'e42',
        execution_id: 42,
        level: 'info',
        message: 'npm ci → ok',
        nested: { a: [1, { b: 'ü' }], n: null },
        ratio: 0.25,
        ok: true,
        timestamp: '2026-01-01T00:00:00.000Z',
      },
      u7: {
        type: 'system_notification',
        tag: 'u7',
        level: 'info',
        title: 'Done',
        message: 'run finished',
        data: { level: 'info', title: 'Done', message: 'run finished' },
        timestamp: '2026-01-01T00:00:01.000Z',
      },
      sys: { type: 'system_announcement', tag: 'sys', message: 'maintenance at 22:00', timestamp: '2026-01-01T00:00:02.000Z' },
      b42: { type: 'barrier', tag: 'b42', timestamp: '2026-01-01T00:00:03.000Z' },
      b43: { type: 'barrier', tag: 'b43', timestamp: '2026-01-01T00:00:04.000Z' },
      bsys: { type: 'barrier', tag: 'bsys', timestamp: '2026-01-01T00:00:05.000Z' },
    };
    const routes: [keyof typeof bodies, string][] = [
      ['e42', 'execution.42'],
      ['u7', 'user.7'],
      ['sys', 'system'],
      ['b42', 'execution.42'],
      ['b43', 'execution.43'],
      ['bsys', 'system'],
    ];
    for (const [name, key] of routes) await pub.publish(ex, key, bodies[name], { messageId: id() });

    // The stream is totally ordered: once a socket has its last expected event, it has everything before it.
    const expected: [TestClient, string[]][] = [
      [x42a, ['e42', 'b42']],
      [x42b, ['e42', 'b42']],
      [x43u7, ['u7', 'b43']],
      [mon42, ['e42', 'sys', 'b42', 'bsys']],
      [mon43, ['sys', 'b43', 'bsys']],
      [sys7, ['u7', 'sys', 'bsys']],
      [sys8, ['sys', 'bsys']],
    ];
    for (const [c, want] of expected) await until(c, want[want.length - 1]);
    expect(expected.map(([c]) => tags(c))).toEqual(expected.map(([, want]) => want));

    // Every field arrives unchanged, plus the channel and the stream position (the same on every socket).
    const positions = new Map<string, number>();
    for (const [c] of expected) {
      for (const f of events(c)) {
        const [name, key] = routes.find(([n]) => n === f.tag) ?? [];
        expect(name).toBeDefined();
        expect(f).toEqual({ ...bodies[name as keyof typeof bodies], channel: key, position: expect.any(Number) as number });
        const seen = positions.get(String(f.tag));
        if (seen === undefined) positions.set(String(f.tag), f.position as number);
        else expect(f.position).toBe(seen);
      }
    }
    const order = routes.map(([n]) => positions.get(n) as number);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
  });

  it('delivers a message_id published twice once', async () => {
    const c = await open(svc.ws('/ws/execution/42'), 1);
    clients.push(c);
    const dupId = id();
    const before = metric(await (await fetch(`${svc.url}/metrics`)).text(), 'realtime_broker_duplicates_total') ?? NaN;
    await pub.publish(ex, 'execution.42', { type: 'log_entry', tag: 'dup', message: 'first copy' }, { messageId: dupId });
    await pub.publish(ex, 'execution.42', { type: 'log_entry', tag: 'dup', message: 'second copy' }, { messageId: dupId });
    await pub.publish(ex, 'execution.42', { type: 'log_entry', tag: 'after' }, { messageId: id() });
    await until(c, 'after');
    expect(events(c).map((f) => [f.tag, f.message])).toEqual([
      ['dup', 'first copy'],
      ['after', undefined],
    ]);
    const after = metric(await (await fetch(`${svc.url}/metrics`)).text(), 'realtime_broker_duplicates_total');
    expect(after).toBe(before + 1);
  });
});

describe('RabbitMQ ingest: poison messages', () => {
  const ex = uniqueExchange('poison');
  const MAX = 1024;
  let svc: Svc;
  let pub: Publisher;

  beforeAll(async () => {
    svc = await startWithBroker(ex, { BROKER_MAX_MESSAGE_BYTES: String(MAX) });
    pub = await connectPublisher();
  });
  afterAll(async () => {
    await pub?.close();
    await svc?.shutdown();
    await deleteBrokerObjects(ex);
  });

  it('dead-letters each kind once with its reason, counts it, and goes on to the next good message', async () => {
    const c = await open(svc.ws('/ws/execution/42'), 1);
    const big = JSON.stringify({ type: 'log_entry', tag: 'big', message: 'x'.repeat(MAX) });
    const poison: { key: string; body: string; reason: string }[] = [
      { key: 'execution.42', body: '{"type": "log_entry", "tag": ', reason: 'invalid_json' },
      { key: 'execution.42', body: '[{"type":"log_entry"}]', reason: 'not_an_object' },
      { key: 'execution.42', body: '"log_entry"', reason: 'not_an_object' },
      { key: 'execution.42', body: '{"tag":"no-type","message":"hi"}', reason: 'missing_type' },
      { key: 'execution.abc', body: '{"type":"log_entry","tag":"abc"}', reason: 'unknown_channel' },
      { key: 'foo', body: '{"type":"log_entry","tag":"foo"}', reason: 'unknown_channel' },
      { key: 'execution.42', body: big, reason: 'too_large' },
    ];
    const ids = poison.map(() => id());
    for (const [i, p] of poison.entries()) await pub.publish(ex, p.key, Buffer.from(p.body), { messageId: ids[i] });
    await pub.publish(ex, 'execution.42', { type: 'log_entry', tag: 'good', message: 'after the poison' }, { messageId: id() });

    await until(c, 'good');
    expect(tags(c)).toEqual(['good']);

    // The validator has settled every message once its queue holds nothing ready or unacknowledged: from then on
    // nothing can be redelivered, so the dead-letter queue's content is final.
    const { validate, dlq } = brokerObjects(ex);
    await eventually(
      'the validator queue to drain',
      async () => {
        const d = await queueDepth(validate);
        return d !== undefined && d.ready === 0 && d.unacked === 0 ? d : undefined;
      },
      20_000,
    );
    const letters = await drainQueue(pub.ch, dlq);
    const got = letters
      .map((m) => ({
        key: String(m.properties.headers?.['x-original-routing-key']),
        body: m.content.toString('utf8'),
        reason: String(m.properties.headers?.['x-ansflow-dead-letter-reason']),
        messageId: m.properties.messageId as unknown,
      }))
      .sort((a, b) => ids.indexOf(String(a.messageId)) - ids.indexOf(String(b.messageId)));
    expect(got).toEqual(poison.map((p, i) => ({ ...p, messageId: ids[i] })));

    const text = await (await fetch(`${svc.url}/metrics`)).text();
    const counts = Object.fromEntries(
      ['invalid_json', 'not_an_object', 'missing_type', 'unknown_channel', 'too_large'].map((reason) => [
        reason,
        metric(text, 'realtime_broker_messages_dead_lettered_total', { reason }),
      ]),
    );
    expect(counts).toEqual({ invalid_json: 1, not_an_object: 2, missing_type: 1, unknown_channel: 2, too_large: 1 });
    // Consumed from the stream: the seven poison messages and the good one (none twice).
    expect(metric(text, 'realtime_broker_messages_consumed_total')).toBe(poison.length + 1);
    c.close();
  });
});

describe('RabbitMQ ingest: two instances', () => {
  const ex = uniqueExchange('two');
  let a: ChildService | undefined;
  let b: ChildService | undefined;
  let pub: Publisher;
  const clients: TestClient[] = [];

  beforeAll(async () => {
    const dir = await buildServiceOnce();
    const env = { RABBITMQ_URL, RABBITMQ_EXCHANGE: ex };
    [a, b] = await Promise.all([spawnService(dir, env, 'ready'), spawnService(dir, env, 'ready')]);
    pub = await connectPublisher();
  }, 300_000);
  afterAll(async () => {
    for (const c of clients) c.close();
    await pub?.close();
    await Promise.all([a?.kill(), b?.kill()]);
    await deleteBrokerObjects(ex);
  });

  it("one publication reaches each instance's subscribers exactly once, with the same position", async () => {
    if (a === undefined || b === undefined) throw new Error('instances not started');
    for (const s of [a, b]) for (const user of [1, 2]) clients.push(await open(s.ws('/ws/execution/42'), user));
    await pub.publish(ex, 'execution.42', { type: 'log_entry', tag: 'amqp', message: 'from the broker' }, { messageId: id() });
    expect((await publishVia(a.url, { channel: 'execution.42', event: { type: 'log_entry', tag: 'api', message: 'through instance A' } })).status).toBe(202);
    await pub.publish(ex, 'execution.42', { type: 'barrier', tag: 'end' }, { messageId: id() });
    for (const c of clients) await until(c, 'end');
    expect(clients.map(tags)).toEqual(clients.map(() => ['amqp', 'api', 'end']));
    const positions = clients.map((c) => events(c).map((f) => f.position));
    for (const p of positions) expect(p).toEqual(positions[0]);
  });
  it('dead-letters a poison message once, not once per instance (one validator is active), and logs it once', async () => {
    if (a === undefined || b === undefined) throw new Error('instances not started');
    const messageId = id();
    await pub.publish(ex, 'execution.42', Buffer.from('{"type": oops'), { messageId });
    const { validate, dlq } = brokerObjects(ex);
    await eventually(
      'the validator queue to drain',
      async () => {
        const d = await queueDepth(validate);
        return d !== undefined && d.ready === 0 && d.unacked === 0 ? d : undefined;
      },
      20_000,
    );
    const letters = await drainQueue(pub.ch, dlq);
    expect(letters.map((m) => [String(m.properties.messageId), String(m.properties.headers?.['x-ansflow-dead-letter-reason'])])).toEqual([
      [messageId, 'invalid_json'],
    ]);
    const counted = await Promise.all(
      [a, b].map(async (s) =>
        metric(await (await fetch(`${s.url}/metrics`)).text(), 'realtime_broker_messages_dead_lettered_total', { reason: 'invalid_json' }),
      ),
    );
    expect((counted[0] ?? NaN) + (counted[1] ?? NaN)).toBe(1);
    const logged = [...a.output, ...b.output].filter((l) => l.includes('dead-lettering a broker message'));
    expect(logged).toHaveLength(1);
    expect(logged[0]).toContain(messageId);
  });
});

describe('RabbitMQ ingest: broker outages', () => {
  afterAll(async () => {
    // Whatever happened, leave the shared broker running.
    await ensureBrokerRunning();
  });

  it('starts with the broker stopped (serving HTTP and sockets, not ready, publish API 503), then consumes when it comes', async () => {
    const ex = uniqueExchange('down-at-start');
    let svc: Svc | undefined;
    let c: TestClient | undefined;
    let pub: Publisher | undefined;
    try {
      const { downMs } = await withBrokerStopped(async () => {
        svc = await startService({ RABBITMQ_URL, RABBITMQ_EXCHANGE: ex });
        expect((await fetch(`${svc.url}/health/live`)).status).toBe(200);
        const ready = await fetch(`${svc.url}/health/ready`);
        expect(ready.status).toBe(503);
        const health = await fetch(`${svc.url}/health`);
        expect(health.status).toBe(200);
        expect(((await health.json()) as { checks: { broker: { status: string } } }).checks.broker.status).toBe('down');
        expect((await svc.publish({ channel: 'execution.42', event: { type: 'log_entry', tag: 'refused' } })).status).toBe(503);
        // The socket opens, but its `connection` frame waits until the instance has read the stream (ADR 0003):
        // greeted now, it would receive the stream's past as live once the broker comes.
        c = await TestClient.connect(`${svc.ws('/ws/execution/42')}?token=${mintToken({ userId: 1 })}`);
        // One more round trip to the service while the broker is still down: the socket got nothing meanwhile.
        await fetch(`${svc.url}/health`);
        expect(c.frames).toEqual([]);
      });
      if (svc === undefined || c === undefined) throw new Error('service not started');
      await waitForStatus(`${svc.url}/health/ready`, 200, 30_000);
      await c.next('connection', 30_000);
      pub = await connectPublisher();
      await pub.publish(ex, 'execution.42', { type: 'log_entry', tag: 'first' }, { messageId: id() });
      expect((await svc.publish({ channel: 'execution.42', event: { type: 'log_entry', tag: 'api' } })).status).toBe(202);
      await until(c, 'api');
      expect(tags(c)).toEqual(['first', 'api']);
      expect(c.closed).toBeUndefined();
      process.stdout.write(`broker down at start: down for ${downMs} ms\n`);
    } finally {
      c?.close();
      await pub?.close();
      await svc?.shutdown();
      await ensureBrokerRunning();
      await deleteBrokerObjects(ex);
    }
    // Generous: stopping and starting the broker takes tens of seconds on a loaded machine.
  }, 180_000);

  it('keeps sockets open across a broker restart and delivers, in order, what was published while it was disconnected', async () => {
    const ex = uniqueExchange('restart');
    // The service connects as its own user: clearing that user's permissions keeps it from reconnecting after the
    // restart until the test has published, so "published while disconnected" is certain, not a race.
    const user = `test-svc-${randomBytes(4).toString('hex')}`;
    const password = randomBytes(12).toString('hex');
    await rabbitmqctl('add_user', user, password);
    let svc: Svc | undefined;
    const clients: TestClient[] = [];
    let pub: Publisher | undefined;
    try {
      await rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', '.*');
      svc = await startWithBroker(ex, { RABBITMQ_URL: `amqp://${user}:${password}@127.0.0.1:5672` });
      const s = svc;
      const x = await open(s.ws('/ws/execution/42'), 1);
      const m = await open(s.ws('/ws/monitor'), 2);
      clients.push(x, m);
      await follow(m, 42);
      pub = await connectPublisher();
      const send = async (p: Publisher, from: number, to: number): Promise<void> => {
        for (let i = from; i <= to; i++) await p.publish(ex, 'execution.42', { type: 'log_entry', tag: `e${i}`, seq: i }, { messageId: id() });
      };
      await send(pub, 1, 3);
      for (const c of clients) await until(c, 'e3');
      await pub.close();

      await rabbitmqctl('clear_permissions', '-p', '/', user);
      const { downMs } = await withBrokerStopped(async () => {
        await waitForStatus(`${s.url}/health/ready`, 503, 15_000);
        expect((await fetch(`${s.url}/health/live`)).status).toBe(200);
      });
      // The broker is back; the service cannot log in yet. Publish while it is disconnected.
      pub = await connectPublisher();
      await send(pub, 4, 8);
      const health = (await (await fetch(`${s.url}/health`)).json()) as { checks: { broker: { status: string; message?: string } } };
      expect(health.checks.broker).toMatchObject({ status: 'down', message: 'not connected' });
      await rabbitmqctl('set_permissions', '-p', '/', user, '.*', '.*', '.*');
      await waitForStatus(`${s.url}/health/ready`, 200, 30_000);
      await send(pub, 9, 10);
      for (const c of clients) await until(c, 'e10', 20_000);
      const want = Array.from({ length: 10 }, (_, i) => `e${i + 1}`);
      expect(clients.map(tags)).toEqual([want, want]);
      for (const c of clients) {
        expect(c.closed).toBeUndefined();
        c.send({ type: 'ping' });
        await c.next('pong');
      }
      // Positions keep growing across the restart (clients resume with them).
      const pos = events(x).map((f) => f.position as number);
      expect([...pos].sort((p, q) => p - q)).toEqual(pos);
      process.stdout.write(`broker restart: down for ${downMs} ms\n`);
    } finally {
      for (const c of clients) c.close();
      await pub?.close();
      await svc?.shutdown();
      await ensureBrokerRunning();
      await rabbitmqctl('delete_user', user).catch(() => undefined);
      await deleteBrokerObjects(ex);
    }
    // Generous: a broker restart takes tens of seconds on a loaded machine.
  }, 180_000);
});
