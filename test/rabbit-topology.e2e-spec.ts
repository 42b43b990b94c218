/**
 * What the service declares on RabbitMQ (src/messaging/broker-topology.ts), against the machine's broker: the
 * validator and dead-letter queues are quorum queues (replicated, unlike the classic queues of earlier versions),
 * and a deployment whose queues an earlier version declared classic keeps working on them, with an error log that
 * says they are not replicated. The loss of nodes is tested in rabbit-cluster.e2e-spec.ts.
 */
import amqp from 'amqplib';
import {
  brokerObjects,
  buildServiceOnce,
  connectPublisher,
  deleteBrokerObjects,
  drainQueue,
  eventually,
  RABBITMQ_URL,
  spawnService,
  uniqueExchange,
  type ChildService,
} from './support/broker';

jest.setTimeout(120_000);

/**
 * The type of a queue, asked over AMQP: a declaration with `x-queue-type` and the queue's own arguments succeeds
 * only when the type matches (a different type is refused with PRECONDITION_FAILED).
 */
async function isOfType(queue: string, type: 'quorum' | 'classic', args: Record<string, unknown>): Promise<boolean> {
  const conn = await amqp.connect(RABBITMQ_URL);
  conn.on('error', () => undefined);
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => undefined);
    await ch.assertQueue(queue, { durable: true, arguments: { ...args, 'x-queue-type': type } });
    return true;
  } catch (err) {
    if ((err as { code?: unknown }).code === 406) return false;
    throw err;
  } finally {
    await conn.close().catch(() => undefined);
  }
}

const VALIDATE_ARGS = { 'x-single-active-consumer': true, 'x-max-length': 100_000, 'x-overflow': 'drop-head' };

describe('broker topology', () => {
  let build: string;
  const services: ChildService[] = [];
  const exchanges: string[] = [];

  beforeAll(async () => {
    build = await buildServiceOnce();
  });

  afterAll(async () => {
    await Promise.allSettled(services.map((s) => s.kill()));
    for (const ex of exchanges) await deleteBrokerObjects(ex);
  });

  async function start(exchange: string): Promise<ChildService> {
    const svc = await spawnService(build, { RABBITMQ_URL, RABBITMQ_EXCHANGE: exchange }, 'ready');
    services.push(svc);
    return svc;
  }

  /** A poison message must land in the dead-letter queue with its reason: the path works on these queues. */
  async function expectDeadLettered(exchange: string): Promise<void> {
    const pub = await connectPublisher();
    try {
      await pub.publish(exchange, 'execution.7', Buffer.from('{"no":"type"}'), { messageId: 'poison-1' });
      const letters = await eventually('the dead letter', async () => {
        const got = await drainQueue(pub.ch, brokerObjects(exchange).dlq);
        return got.length > 0 ? got : undefined;
      });
      expect(letters.map((m) => [String(m.properties.messageId), String(m.properties.headers?.['x-ansflow-dead-letter-reason'])])).toEqual([
        ['poison-1', 'missing_type'],
      ]);
    } finally {
      await pub.close();
    }
  }

  it('declares the validator and dead-letter queues as quorum queues and dead-letters through them', async () => {
    const exchange = uniqueExchange('topology');
    exchanges.push(exchange);
    const svc = await start(exchange);
    const { validate, dlq } = brokerObjects(exchange);
    expect(await isOfType(validate, 'quorum', VALIDATE_ARGS)).toBe(true);
    expect(await isOfType(dlq, 'quorum', {})).toBe(true);
    await expectDeadLettered(exchange);
    expect(svc.output.some((l) => l.includes('NOT replicated'))).toBe(false);
    // The node in use, without credentials, in the log and /health.
    const connected = svc.output.find((l) => l.includes('broker connected'));
    expect(connected).toContain(`"node":"${new URL(RABBITMQ_URL).hostname}:${new URL(RABBITMQ_URL).port || '5672'}"`);
    expect(connected).not.toContain('guest');
    const health = (await (await fetch(`${svc.url}/health`)).json()) as { checks: { broker: { amqp_node: string } } };
    expect(health.checks.broker.amqp_node).toBe(`${new URL(RABBITMQ_URL).hostname}:${new URL(RABBITMQ_URL).port || '5672'}`);
  });

  it('keeps using classic queues an earlier version declared, and logs an error saying they are not replicated', async () => {
    const exchange = uniqueExchange('legacy');
    exchanges.push(exchange);
    const { validate, dlq } = brokerObjects(exchange);
    // What the previous version declared.
    const conn = await amqp.connect(RABBITMQ_URL);
    const ch = await conn.createChannel();
    await ch.assertQueue(dlq, { durable: true });
    await ch.assertQueue(validate, { durable: true, arguments: VALIDATE_ARGS });
    await conn.close();

    const svc = await start(exchange);
    const errors = await eventually('both error logs', () => {
      const lines = svc.output.filter((l) => l.includes('NOT replicated')).map((l) => JSON.parse(l) as { level: unknown; queue: string });
      return lines.length >= 2 ? lines : undefined;
    });
    expect(errors.map((e) => e.queue).sort()).toEqual([dlq, validate].sort());
    expect(errors.every((e) => e.level === 'error')).toBe(true);
    expect(await isOfType(validate, 'classic', VALIDATE_ARGS)).toBe(true);
    expect(await isOfType(dlq, 'classic', {})).toBe(true);
    await expectDeadLettered(exchange);
  });
});
