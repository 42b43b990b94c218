import type { Channel, ChannelModel } from 'amqplib';
import type { Logger } from 'pino';
import type { AppConfig } from '../config/config';
import { brokerNames } from './message-policy';

/**
 * What the service declares on RabbitMQ, in one place. Everything that must survive the loss of a node is
 * replicated by RabbitMQ's Raft-based queue types:
 *
 * - the event stream (`<exchange>.stream`) is a stream, whose replicas are placed when it is declared. Its
 *   replication factor is the broker's default for streams, every node of the cluster at declaration time, not an
 *   `x-initial-cluster-size` argument: a declaration argument is fixed forever and checked for equality on every
 *   later declaration, so a number written here would make an instance refuse a stream an operator has since grown
 *   or shrunk with `rabbitmq-streams add_replica`/`delete_replica` (docs/operations.md). Policies cannot set it.
 * - the replay stream (`<exchange>.replay`, digests of the event stream for fast start-ups) is a stream too, declared
 *   the same way;
 * - the validator queue (`<exchange>.validate`) and the dead-letter queue (`<exchange>.dead-letter`) are quorum
 *   queues: a classic queue lives on one node and is lost, with the dead letters in it, when that node goes.
 *   Quorum queues support single-active-consumer (one instance validates) and `x-max-length` with `drop-head`.
 *
 * A queue's type cannot change: RabbitMQ refuses a redeclaration with another `x-queue-type` (PRECONDITION_FAILED).
 * Deployments made before this change have classic validator and dead-letter queues; the service keeps using them
 * as they are, logs an error saying they are not replicated and how to migrate, and carries on.
 */
export async function declareStream(ch: Channel, config: AppConfig): Promise<void> {
  const exchange = config.RABBITMQ_EXCHANGE;
  const { stream, replay } = brokerNames(exchange);
  const args = { 'x-queue-type': 'stream', 'x-max-age': config.STREAM_MAX_AGE, 'x-max-length-bytes': config.STREAM_MAX_BYTES };
  await ch.assertExchange(exchange, 'topic', { durable: true });
  await ch.assertQueue(stream, { durable: true, arguments: args });
  await ch.bindQueue(stream, exchange, '#');
  // The digests of the event stream (src/messaging/stream-digest.ts): written by the instances through the default
  // exchange, bound to nothing. Same retention as the event stream.
  if (config.STREAM_DIGEST_EVENTS > 0) await ch.assertQueue(replay, { durable: true, arguments: args });
}

/** The arguments of the validator queue: one active consumer, bounded, oldest dropped first. */
const VALIDATE_ARGS = { 'x-single-active-consumer': true, 'x-max-length': 100_000, 'x-overflow': 'drop-head' };

/** PRECONDITION_FAILED: the queue exists with other arguments (here: another type). */
const PRECONDITION_FAILED = 406;

export async function declareDeadLetterPath(ch: Channel, connection: ChannelModel, exchange: string, logger: Logger): Promise<void> {
  const { validate, dlx, dlq } = brokerNames(exchange);
  await ch.assertExchange(exchange, 'topic', { durable: true });
  await ch.assertExchange(dlx, 'topic', { durable: true });
  await declareQuorum(connection, dlq, {}, logger);
  await ch.bindQueue(dlq, dlx, '#');
  await declareQuorum(connection, validate, VALIDATE_ARGS, logger);
  await ch.bindQueue(validate, exchange, '#');
}

/**
 * Declare a quorum queue on a channel of its own (a refused declaration closes its channel, and the caller's must
 * live on). When the queue exists as a classic queue, say so and use it as it is.
 */
async function declareQuorum(connection: ChannelModel, queue: string, args: Record<string, unknown>, logger: Logger): Promise<void> {
  const ch = await connection.createChannel();
  ch.on('error', () => undefined); // the refusal below is expected and handled; it also arrives as an 'error'
  try {
    await ch.assertQueue(queue, { durable: true, arguments: { ...args, 'x-queue-type': 'quorum' } });
  } catch (err) {
    if ((err as { code?: unknown }).code !== PRECONDITION_FAILED) throw err;
    logger.error(
      { queue, err: err instanceof Error ? err.message : String(err) },
      'queue declared classic by an earlier version: it is NOT replicated and is lost with its node; using it as it is. ' +
        'To replicate it: stop the instances, move its messages away (shovel) if you need them, delete the queue, start the instances ' +
        '(docs/operations.md, "Migrating from classic queues")',
    );
    return;
  } finally {
    await ch.close().catch(() => undefined);
  }
}
