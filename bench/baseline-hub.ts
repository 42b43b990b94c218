/**
 * The baseline of the benchmark: the smallest honest hub with the service's contract, on plain `ws` and
 * `amqplib`, so that the service's figures can be read against what a well-written hub on the same stack
 * reaches on the same machine in the same run. It does what the service's hot path must do and nothing more:
 *
 * - RabbitMQ in: an exclusive auto-delete queue bound with `#` to the topic exchange, prefetch 1000.
 * - Upgrade: path → channels, HS256 token verified with `jsonwebtoken` (refused: close 4001).
 * - First frame `connection`; each event is parsed once, gets `channel` and `position` (a counter), is
 *   serialized and UTF-8 encoded once, and the same buffer is written (as a text frame) to every subscriber of
 *   its routing key.
 * - `?batch=1` sockets get the events that arrived in the same turn of the event loop in one `batch` frame,
 *   built once per channel.
 * - A subscriber whose send buffer passes 4 MiB is closed 4008, so a stuck client cannot grow memory.
 *
 * Not here (the service has them, the benchmark does not exercise them): history/resume, monitor
 * subscriptions, client frames, limits, metrics, health details.
 *
 * Env: PORT, RABBITMQ_URL, RABBITMQ_EXCHANGE, DJANGO_SECRET_KEY; `BASELINE_SOURCE=stream` (`--baseline-env`) reads a
 * stream bound to the exchange, `<exchange>.stream`, from its next offset, instead of its own classic queue: the
 * service's transport (it reads its stream over AMQP 0-9-1 once caught up), so the two hubs differ by their own work only.
 */
import { createSecretKey } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import amqp from 'amqplib';
import jwt from 'jsonwebtoken';
import { WebSocket, WebSocketServer } from 'ws';

const port = Number(process.env.PORT ?? 8101);
const exchange = process.env.RABBITMQ_EXCHANGE ?? 'ansflow.realtime';
// A KeyObject made once: given a string, jsonwebtoken 9 first tries (and fails) to parse it as a PEM public
// key on every verify, which costs ~0.7 ms of CPU per connection (seen in a --cpu-prof of this hub).
const secret = createSecretKey(Buffer.from(process.env.DJANGO_SECRET_KEY ?? '', 'utf8'));
const rabbitUrl = process.env.RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const MAX_BUFFERED_BYTES = 4 * 1024 * 1024;

interface Subscribers {
  plain: Set<WebSocket>;
  batch: Set<WebSocket>;
}
const channels = new Map<string, Subscribers>();
let position = 0;
let connections = 0;

const ROUTES: [RegExp, (id: string) => string, string][] = [
  [/^\/ws\/execution\/([1-9]\d*)\/?$/, (id) => `execution.${id}`, 'execution'],
  [/^\/ws\/pipeline\/([1-9]\d*)\/?$/, (id) => `pipeline.${id}`, 'pipeline'],
  [/^\/ws\/project\/([1-9]\d*)\/?$/, (id) => `project.${id}`, 'project'],
  [/^\/ws\/monitor\/?$/, () => 'monitor', 'monitor'],
  [/^\/ws\/system\/?$/, () => 'system', 'system'],
];

function verify(token: string | null): number | string | null {
  if (!token) return null;
  try {
    const claims = jwt.verify(token, secret, { algorithms: ['HS256'] });
    if (typeof claims !== 'object' || claims.token_type !== 'access') return null;
    const uid: unknown = claims.user_id;
    return typeof uid === 'number' || typeof uid === 'string' ? uid : null;
  } catch {
    return null;
  }
}

function subscribers(channel: string): Subscribers {
  let s = channels.get(channel);
  if (!s) {
    s = { plain: new Set(), batch: new Set() };
    channels.set(channel, s);
  }
  return s;
}

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });

function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const route = ROUTES.find(([re]) => re.test(url.pathname));
  const userId = verify(url.searchParams.get('token'));
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (!route) return ws.close(4004, 'unknown_path');
    if (userId === null) return ws.close(4001, 'token_invalid');
    const [re, toChannel, endpoint] = route;
    const id = re.exec(url.pathname)?.[1] ?? '';
    const subs = [toChannel(id), `user.${userId}`].map(subscribers);
    const kind = url.searchParams.get('batch') === '1' ? 'batch' : 'plain';
    for (const s of subs) s[kind].add(ws);
    connections++;
    ws.on('close', () => {
      connections--;
      for (const s of subs) s[kind].delete(ws);
    });
    ws.on('error', () => ws.terminate());
    ws.send(
      JSON.stringify({
        type: 'connection',
        message: `Connected to ${endpoint}${id ? ` ${id}` : ''}`,
        timestamp: new Date().toISOString(),
        authenticated: true,
        user_id: userId,
        endpoint,
        position,
      }),
    );
  });
}

function write(ws: WebSocket, frame: Buffer): void {
  if (ws.bufferedAmount > MAX_BUFFERED_BYTES) ws.close(4008, 'send_buffer_full');
  else ws.send(frame, { binary: false });
}

/** Events waiting for the end of this event-loop turn, per channel, for `batch=1` subscribers. */
const pendingBatches = new Map<string, string[]>();
let flushScheduled = false;

function flushBatches(): void {
  flushScheduled = false;
  for (const [channel, events] of pendingBatches) {
    const frame = Buffer.from(`{"type":"batch","events":[${events.join(',')}]}`);
    for (const ws of channels.get(channel)?.batch ?? []) write(ws, frame);
  }
  pendingBatches.clear();
}

function dispatch(channel: string, body: Buffer): void {
  let event: unknown;
  try {
    event = JSON.parse(body.toString('utf8'));
  } catch {
    return;
  }
  if (typeof event !== 'object' || event === null || Array.isArray(event)) return;
  const fields = event as Record<string, unknown>;
  if (typeof fields.type !== 'string') return;
  fields.channel = channel;
  fields.position = ++position;
  if (fields.timestamp === undefined) fields.timestamp = new Date().toISOString();
  const subs = channels.get(channel);
  if (!subs) return;
  const text = JSON.stringify(fields);
  if (subs.plain.size > 0) {
    const frame = Buffer.from(text);
    for (const ws of subs.plain) write(ws, frame);
  }
  if (subs.batch.size > 0) {
    const pending = pendingBatches.get(channel);
    if (pending) pending.push(text);
    else pendingBatches.set(channel, [text]);
    if (!flushScheduled) {
      flushScheduled = true;
      setImmediate(flushBatches);
    }
  }
}

async function main(): Promise<void> {
  const conn = await amqp.connect(rabbitUrl, { noDelay: true });
  const ch = await conn.createChannel();
  await ch.assertExchange(exchange, 'topic', { durable: true });
  const fromStream = process.env.BASELINE_SOURCE === 'stream';
  // The stream as the service declares it by default (a declaration must match an existing one's arguments).
  const streamArgs = { 'x-queue-type': 'stream', 'x-max-age': '24h', 'x-max-length-bytes': 2_000_000_000 };
  const { queue } = fromStream
    ? await ch.assertQueue(`${exchange}.stream`, { durable: true, arguments: streamArgs })
    : await ch.assertQueue('', { exclusive: true, autoDelete: true });
  await ch.bindQueue(queue, exchange, '#');
  await ch.prefetch(1000);
  await ch.consume(
    queue,
    (msg) => {
      if (!msg) return;
      dispatch(msg.fields.routingKey, msg.content);
      ch.ack(msg);
    },
    fromStream ? { arguments: { 'x-stream-offset': 'next' } } : {},
  );

  const server = createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ status: 'ok', connections }));
    } else {
      res.writeHead(404).end();
    }
  });
  server.on('upgrade', onUpgrade);
  server.listen(port, '127.0.0.1');
  const stop = (): void => {
    server.close();
    void conn.close().finally(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  console.error('baseline hub failed:', err);
  process.exit(1);
});
