import { Hub } from './hub';
import type { ObjectFacts, Subscriber } from './hub-event';

class Sink implements Subscriber {
  readonly frames: string[] = [];
  constructor(
    readonly kind: 'execution' | 'monitor' = 'execution',
    readonly batch = false,
  ) {}
  write(frame: Buffer): boolean {
    this.frames.push(frame.toString());
    return true;
  }
  parsed(): Record<string, unknown>[] {
    return this.frames.map((f) => JSON.parse(f) as Record<string, unknown>);
  }
}

/** What the broker consumer learns of a body while checking it (messaging/json-scan.ts), from the parsed object. */
function factsOf(o: Record<string, unknown>): ObjectFacts {
  const timestamp = !('timestamp' in o) ? undefined : typeof o.timestamp === 'string' ? 'string' : 'other';
  return { type: typeof o.type === 'string' ? o.type : undefined, channel: 'channel' in o, position: 'position' in o, timestamp, data: 'data' in o };
}

function hub(batchWindowMs = 0): Hub {
  return new Hub({ history: { size: 100, ttlMs: 60_000, maxChannels: 100 }, dedupWindow: 100, batchWindowMs, batchMaxEvents: 50, externalPositions: false });
}

describe('Hub', () => {
  it('serializes once: every subscriber gets the same buffer', () => {
    const h = hub();
    const seen: Buffer[] = [];
    const sub = (): Subscriber => ({ kind: 'execution', batch: false, write: (f) => (seen.push(f), true) });
    h.subscribe(sub(), ['execution.1']);
    h.subscribe(sub(), ['execution.1']);
    h.publish('execution.1', { type: 'log_entry', message: 'x' });
    expect(seen).toHaveLength(2);
    expect(seen[0]).toBe(seen[1]);
  });

  it('relays the publisher fields unchanged and adds channel, position and a missing timestamp', () => {
    const h = hub();
    const s = new Sink();
    h.subscribe(s, ['execution.1']);
    h.publish('execution.1', { type: 'x', a: { b: [1] }, timestamp: 'keep' });
    h.publish('execution.1', { type: 'y' });
    const [a, b] = s.parsed();
    expect(a).toMatchObject({ type: 'x', a: { b: [1] }, timestamp: 'keep', channel: 'execution.1' });
    expect(String(b.timestamp)).toMatch(/Z$/);
    expect(Number(b.position)).toBe(Number(a.position) + 1);
  });

  it('drops a repeated message id', () => {
    const h = hub();
    const s = new Sink();
    h.subscribe(s, ['system']);
    h.publish('system', { type: 'x' }, { messageId: 'm1' });
    expect(h.publish('system', { type: 'x' }, { messageId: 'm1' })).toBeUndefined();
    expect(s.frames).toHaveLength(1);
  });

  it('builds the frame from the received bytes exactly as it would serialize the parsed body', () => {
    const at = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    const cases: Array<Record<string, unknown>> = [
      { type: 'log_entry', message: 'é "quoted" \\ \u2028', timestamp: '2026-01-01T00:00:00.000Z' },
      { type: 'log_entry', message: 'no timestamp', nested: { a: [1, 2, { b: null }] } },
      { type: 'log_entry', timestamp: 12345 }, // not a string: replaced, through the serializer
      { type: 'system_notification', level: 'info', title: 't', message: 'm' }, // gets `data`
      { type: 'x', channel: 'forged', position: 7 }, // the hub's own fields win
    ];
    for (const body of cases) {
      const viaRaw = hub();
      const viaObject = hub();
      const a = new Sink();
      const b = new Sink();
      viaRaw.subscribe(a, ['system']);
      viaObject.subscribe(b, ['system']);
      const raw = Buffer.from(`  ${JSON.stringify(body)}\n`);
      viaRaw.publish('system', JSON.parse(raw.toString()) as Record<string, unknown>, { position: 41, raw, createdAtMs: at });
      viaObject.publish('system', body, { position: 41, createdAtMs: at });
      const fromRaw = JSON.parse(a.frames[0]) as Record<string, unknown>;
      const fromObject = JSON.parse(b.frames[0]) as Record<string, unknown>;
      expect(fromRaw).toStrictEqual(fromObject);
      expect(Object.keys(fromRaw)).toEqual(Object.keys(fromObject)); // same order of members too
      expect(fromRaw).toMatchObject({ channel: 'system', position: 41 });
      if (typeof body.timestamp !== 'string') expect(fromRaw.timestamp).toBe(new Date(at).toISOString());
    }
  });

  it('publishes a received body unparsed with the same frame bytes, history, snapshot and de-duplication as parsed', () => {
    const at = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
    const texts = [
      '{"type":"log_entry","message":"x"}',
      ' {"type":"log_entry","timestamp":"2026-01-01T00:00:00.000Z","message":"\\u00e9"}\n',
      '{"type":"log_entry","timestamp":12345}',
      '{"type":"log_entry","timestamp":"a","timestamp":null}',
      '{"type":"system_notification","level":"info","title":"t","message":"m"}',
      '{"type":"system_notification","data":{"level":"x"}}',
      '{"type":"x","channel":"forged","position":7}',
      '{"type":"execution_status","status":"running","steps":[{"id":1,"status":"running"}]}',
      '{"type":"step_progress","step_id":3,"status":"success"}',
      '{"type":"execution_update","status":"failed","total_steps":4}',
    ];
    for (const channel of ['execution.5', 'system']) {
      const viaFacts = hub();
      const viaObject = hub();
      const a = new Sink();
      const b = new Sink();
      viaFacts.subscribe(a, [channel]);
      viaObject.subscribe(b, [channel]);
      texts.forEach((text, i) => {
        const raw = Buffer.from(text);
        const body = JSON.parse(text) as Record<string, unknown>;
        const meta = { position: 41 + i, createdAtMs: at + i, messageId: `m${i % 7}` };
        const got = viaFacts.publishReceived(channel, raw, factsOf(body), meta);
        const expected = viaObject.publish(channel, body, { ...meta, raw });
        expect(got?.frame.toString()).toBe(expected?.frame.toString());
      });
      expect(a.frames).toEqual(b.frames);
      expect(viaFacts.history.since([channel], 0).events.map((e) => e.frame.toString())).toEqual(
        viaObject.history.since([channel], 0).events.map((e) => e.frame.toString()),
      );
      expect(viaFacts.snapshots.get(5)).toEqual({ ...viaObject.snapshots.get(5), timestamp: expect.any(String) as unknown });
    }
  });

  it('remembers the last dedupWindow message ids, forgetting the oldest first', () => {
    const h = new Hub({ history: { size: 100, ttlMs: 60_000, maxChannels: 100 }, dedupWindow: 3, batchWindowMs: 0, batchMaxEvents: 50, externalPositions: false });
    for (const id of ['a', 'b', 'c', 'd']) expect(h.publish('system', { type: 'x' }, { messageId: id })).toBeDefined();
    // 'a' was forgotten when 'd' came; b, c and d are still known (a duplicate does not push anything out).
    expect(h.publish('system', { type: 'x' }, { messageId: 'd' })).toBeUndefined();
    expect(h.publish('system', { type: 'x' }, { messageId: 'b' })).toBeUndefined();
    expect(h.publish('system', { type: 'x' }, { messageId: 'a' })).toBeDefined();
    // 'a' pushed out the oldest, 'b'; then 'b' pushed out 'c', and 'c' pushed out 'd': a is still known.
    expect(h.publish('system', { type: 'x' }, { messageId: 'b' })).toBeDefined();
    expect(h.publish('system', { type: 'x' }, { messageId: 'c' })).toBeDefined();
    expect(h.publish('system', { type: 'x' }, { messageId: 'a' })).toBeUndefined();
  });

  it('replays missed events before live ones on subscribe with since', () => {
    const h = hub();
    const first = h.publish('execution.2', { type: 'a' });
    h.publish('execution.2', { type: 'b' });
    h.publish('execution.3', { type: 'other' });
    const s = new Sink();
    const order: string[] = [];
    const r = h.subscribe(s, ['execution.2'], first?.position, (recovered, missed) => order.push(`recovery ${recovered} ${missed}`));
    h.publish('execution.2', { type: 'c' });
    expect(r).toEqual({ recovered: true, missed: 1 });
    expect(order).toEqual(['recovery true 1']);
    expect(s.parsed().map((f) => f.type)).toEqual(['b', 'c']);
  });

  it('coalesces events for batch subscribers into one frame per channel, in order', async () => {
    const h = hub(5);
    const single = new Sink();
    const batched = new Sink('execution', true);
    h.subscribe(single, ['execution.1']);
    h.subscribe(batched, ['execution.1']);
    for (let i = 0; i < 3; i++) h.publish('execution.1', { type: 'log_entry', i });
    expect(single.frames).toHaveLength(3);
    await new Promise((r) => setTimeout(r, 20));
    expect(batched.frames).toHaveLength(1);
    const batch = batched.parsed()[0] as { type: string; events: { i: number }[] };
    expect(batch.type).toBe('batch');
    expect(batch.events.map((e) => e.i)).toEqual([0, 1, 2]);
  });

  it('adds data to system notifications for the notification bell', () => {
    const h = hub();
    const s = new Sink();
    h.subscribe(s, ['user.3']);
    h.publish('user.3', { type: 'system_notification', level: 'info', title: 't', message: 'm' });
    expect(s.parsed()[0]).toMatchObject({ level: 'info', data: { level: 'info', title: 't', message: 'm' } });
  });

  it('waitForPosition resolves once an event at that position has passed, or at the deadline', async () => {
    const h = hub();
    const first = h.publish('system', { type: 'a' });
    const target = (first?.position ?? 0) + 2;
    let done = false;
    const waiting = h.waitForPosition(target, 5000).then(() => (done = true));
    h.publish('system', { type: 'b' });
    await Promise.resolve();
    expect(done).toBe(false);
    h.publish('system', { type: 'c' });
    await waiting;
    expect(done).toBe(true);
    const start = Date.now();
    await h.waitForPosition(target + 100, 50);
    expect(Date.now() - start).toBeGreaterThanOrEqual(40);
  });
});
