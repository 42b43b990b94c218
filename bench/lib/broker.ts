import amqp from 'amqplib';

/**
 * One AMQP connection, opened again on demand after it closed: RabbitMQ may be restarted between scenarios
 * (by other work on the machine, or an operator); one scenario then fails, not every following one.
 */
export class Broker {
  private conn: amqp.ChannelModel | undefined;

  constructor(private readonly url: string) {}

  async connection(): Promise<amqp.ChannelModel> {
    if (this.conn) return this.conn;
    const conn = await amqp.connect(this.url, { noDelay: true });
    conn.on('error', () => undefined);
    conn.on('close', () => {
      if (this.conn === conn) this.conn = undefined;
    });
    this.conn = conn;
    return conn;
  }

  async close(): Promise<void> {
    const conn = this.conn;
    this.conn = undefined;
    await conn?.close().catch(() => undefined);
  }
}
