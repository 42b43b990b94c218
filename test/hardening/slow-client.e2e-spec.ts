import type { Socket } from 'node:net';
import { ConnectionRegistry } from '../../src/gateway/connection-registry';
import { startService } from '../support/service';
import { mintToken } from '../support/tokens';
import { TestClient, type Frame } from '../support/ws-client';
import { connected, metric, until, type Svc } from './support';

const BUFFER_BYTES = 64 * 1024;
const EVENT_BYTES = 16 * 1024;
const PER_REQUEST = 20;
const REQUESTS = 60;
const CHANNEL = 'execution.7';

/** What the normal subscriber saw in one run: per-event delay from the publish request to receipt. */
interface Run {
  delaysMs: number[];
  frames: Frame[];
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function describeRun(name: string, run: Run): string {
  const s = [...run.delaysMs].sort((a, b) => a - b);
  return `${name}: ${s.length} events, delay p50 ${quantile(s, 0.5).toFixed(1)} ms, p99 ${quantile(s, 0.99).toFixed(1)} ms, max ${s[s.length - 1].toFixed(1)} ms`;
}

describe('slow client (bounded send buffer)', () => {
  let svc: Svc;
  let registry: ConnectionRegistry;
  /** Largest server-side buffer of any socket, sampled while events flow. */
  let maxBuffered = 0;
  let sampler: NodeJS.Timeout | undefined;

  beforeAll(async () => {
    svc = await startService({ WS_SEND_BUFFER_BYTES: String(BUFFER_BYTES), HISTORY_SIZE: '10' });
    registry = svc.app.get(ConnectionRegistry);
    sampler = setInterval(() => {
      for (const c of registry.connections()) maxBuffered = Math.max(maxBuffered, c.ws.bufferedAmount);
    }, 2);
  });
  afterAll(async () => {
    clearInterval(sampler);
    await svc.shutdown();
  });

  /** Publish REQUESTS × PER_REQUEST big events and time each one's arrival at `normal` (seq carries the order). */
  async function publishAndTime(normal: TestClient, runTag: string, extraWhile?: () => boolean): Promise<Run> {
    const sentAt = new Map<number, number>();
    const start = normal.frames.length;
    const pad = 'x'.repeat(EVENT_BYTES);
    const receivedAt: number[] = [];
    const onMessage = (): void => {
      receivedAt.push(performance.now());
    };
    normal.ws.on('message', onMessage);
    let seq = 0;
    for (let r = 0; r < REQUESTS || (extraWhile?.() ?? false); r++) {
      if (r > REQUESTS * 5) throw new Error('the slow client was never closed');
      const batch = [];
      for (let i = 0; i < PER_REQUEST; i++) batch.push({ channel: CHANNEL, event: { type: 'log_entry', run: runTag, seq: seq++, message: pad } });
      const t = performance.now();
      for (const b of batch) sentAt.set(b.event.seq, t);
      expect((await svc.publish(batch)).status).toBe(202);
    }
    const frames = await normal.collect((f) => f.type === 'log_entry' && f.run === runTag, seq, 30_000);
    normal.ws.off('message', onMessage);
    const delaysMs = frames.map((f, i) => receivedAt[i] - (sentAt.get(f.seq as number) ?? 0));
    expect(normal.frames.length - start).toBe(seq);
    return { delaysMs, frames };
  }

  it('closes a client that stops reading with 4008 while a normal subscriber gets every event in order', async () => {
    const normal = await connected(svc, `/ws/execution/7`, 1);

    // A first run warms the JIT and the sockets up so that the two timed runs compare like with like.
    await publishAndTime(normal, 'warm-up');
    const baseline = await publishAndTime(normal, 'baseline');

    const closed4008 = await metric(svc, 'websocket_connections_closed_total', { code: '4008' });
    const dropped = await metric(svc, 'websocket_messages_dropped_total', { reason: 'send_buffer_full' });
    const slow = await TestClient.connect(svc.ws(`/ws/execution/7?token=${mintToken({ userId: 2 })}`));
    await slow.next('connection');
    // Stop reading: the kernel buffers fill, then the server's own buffer for this socket grows.
    (slow.ws as unknown as { _socket: Socket })._socket.pause();
    const rssBefore = process.memoryUsage().rss;
    maxBuffered = 0;

    // Keep publishing past the fixed run while the slow socket is still registered (kernel buffers on loopback can
    // absorb several MB before the server's own buffer grows).
    const withSlow = await publishAndTime(normal, 'with-slow', () => registry.size > 1);
    await until('the server counted the 4008 close', async () => (await metric(svc, 'websocket_connections_closed_total', { code: '4008' })) === closed4008 + 1);
    const rssAfter = process.memoryUsage().rss;

    // The normal subscriber: every event, in order, both runs.
    for (const run of [baseline, withSlow]) {
      expect(run.frames.map((f) => f.seq)).toEqual(run.frames.map((_f, i) => i));
      const positions = run.frames.map((f) => f.position as number);
      expect(positions).toEqual([...positions].sort((a, b) => a - b));
    }
    expect(await metric(svc, 'websocket_messages_dropped_total', { reason: 'send_buffer_full' })).toBeGreaterThan(dropped);
    // Memory: no socket's buffer ever went past the bound by more than one frame.
    expect(maxBuffered).toBeLessThanOrEqual(BUFFER_BYTES + EVENT_BYTES + 1024);
    expect(registry.size).toBe(1);

    // The slow client, once it reads again, finds its connection gone (the close frame sat behind the data it never
    // read, so the server tore the socket down after sending it: the client sees 4008 or an abnormal 1006).
    (slow.ws as unknown as { _socket: Socket })._socket.resume();
    const slowClose = await slow.closedWith(10_000);
    expect([4008, 1006]).toContain(slowClose.code);

    console.log(
      [
        describeRun('without the slow client', baseline),
        describeRun('with the slow client  ', withSlow),
        `largest server-side socket buffer seen: ${maxBuffered} bytes (bound ${BUFFER_BYTES})`,
        `process RSS before/after the slow run: ${(rssBefore / 2 ** 20).toFixed(1)} / ${(rssAfter / 2 ** 20).toFixed(1)} MiB`,
        `slow client saw close ${slowClose.code} ${slowClose.reason}`,
      ].join('\n'),
    );
    normal.close();
  });
});
