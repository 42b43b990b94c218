/**
 * The stream-protocol reader's flow control against a real RabbitMQ (port 5552): paused, it grants no more credit and
 * the broker stops once the credit it holds is spent; resumed, delivery goes on where it stopped. The consumer
 * pauses it while its digests wait for confirms (ADR 0003, decision 5).
 */
import amqp from 'amqplib';
import { streamAddress } from '../src/messaging/broker-consumer.service';
import { StreamConnection, type Chunk } from '../src/messaging/stream-connection';
import { eventually, RABBITMQ_URL, uniqueExchange } from './support/broker';

jest.setTimeout(60_000);

describe('StreamConnection flow control', () => {
  it('paused, receives no more than its credit; resumed, receives every record once, in order', async () => {
    const stream = `${uniqueExchange('stream-pause')}.stream`;
    const conn = await amqp.connect(RABBITMQ_URL);
    const ch = await conn.createConfirmChannel();
    let reader: StreamConnection | undefined;
    try {
      await ch.assertQueue(stream, { durable: true, arguments: { 'x-queue-type': 'stream' } });
      // Each publish awaits its confirm: the broker writes a chunk per record (or a few).
      const N = 200;
      for (let i = 0; i < N; i++) {
        ch.sendToQueue(stream, Buffer.from(String(i)));
        await ch.waitForConfirms();
      }
      reader = await StreamConnection.open(streamAddress(RABBITMQ_URL, 5552), { heartbeatSeconds: 0, timeoutMs: 5000, name: 'pause test' });
      const chunks: Chunk[] = [];
      const offsets: number[] = [];
      const credit = 4;
      const r = reader;
      await r.subscribe(stream, { type: 'first' }, credit, (c) => {
        if (chunks.length === 0) r.pause();
        chunks.push(c);
        for (let i = 0; i < c.records.length; i++) offsets.push(c.firstOffset + i);
      });
      await eventually('the first chunk', () => (chunks.length > 0 ? true : undefined));
      await new Promise((resolve) => setTimeout(resolve, 1000));
      // The initial credit and nothing more.
      expect(chunks.length).toBeLessThanOrEqual(credit);
      expect(offsets.length).toBeLessThan(N);
      r.resume();
      await eventually('every record', () => (offsets.length >= N ? true : undefined));
      expect(offsets).toEqual(Array.from({ length: N }, (_, i) => i));
    } finally {
      reader?.close();
      await ch.deleteQueue(stream).catch(() => undefined);
      await conn.close();
    }
  });
});
