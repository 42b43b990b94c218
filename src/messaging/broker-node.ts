/**
 * The `host:port` of a broker address, without its credentials or vhost: what logs, `/health` and the
 * `realtime_broker_node` metric say about the node an instance is connected to. Bounded: one value per address in
 * RABBITMQ_URL.
 */
export function brokerNodeOf(url: string): string {
  try {
    const u = new URL(url);
    const port = u.port !== '' ? u.port : u.protocol === 'amqps:' ? '5671' : '5672';
    return `${u.hostname}:${port}`;
  } catch {
    return 'unknown';
  }
}
