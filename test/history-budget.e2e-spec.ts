/**
 * Issue 11, point 4: the resume history within a byte budget (HISTORY_MAX_BYTES), end to end. The real service
 * (bootstrap(), in this process) reads a scratch exchange's stream on the real RabbitMQ with a 64 KiB budget;
 * events on several execution channels overflow it many times. Checked: /health and /metrics show the budget, the
 * bytes held within it and what it evicted; the events still held are exactly the newest ones across all channels
 * (oldest dropped first); a resume below what is held is `recovered: false` with a fresh snapshot and no replayed
 * event, one from a held position gets exactly what it missed; and the same after a restart that replays the stream.
 */
import { EVENT_OVERHEAD_BYTES } from '../src/hub/channel-history';
import { connectPublisher, deleteBrokerObjects, metric, RABBITMQ_URL, uniqueExchange, waitForStatus, type Publisher } from './support/broker';
import { startService } from './support/service';
import { mintToken } from './support/tokens';
import { TestClient, type Frame } from './support/ws-client';

jest.setTimeout(180_000);

type Svc = Awaited<ReturnType<typeof startService>>;

interface HistoryHealth {
  events: number;
  bytes: number;
  max_bytes: number;
  evicted: { count: number; age: number; channels: number; bytes: number };
}

const BUDGET = 64 * 1024;
const CHANNELS = [1, 2, 3, 4, 5, 6, 7, 8];
/**
 * One round of traffic: execution.1 five times as busy as the others, and frames of different sizes per channel
 * (about 300 to 800 bytes), so "oldest first across channels" keeps a different set than "fair per channel" or
 * "by count" would.
 */
const ROUND = [1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8];
const ROUNDS = 40;
const pad = (channel: number): string => 'x'.repeat(150 + 70 * channel);

/** Event frames (they carry their channel and position); control frames (connection, recovery, status) do not. */
const eventsOf = (c: TestClient): Frame[] => c.frames.filter((f) => typeof f.channel === 'string' && typeof f.position === 'number');
const positions = (frames: Frame[]): number[] => frames.map((f) => f.position as number);

async function historyOf(svc: Svc): Promise<HistoryHealth> {
  const res = await fetch(`${svc.url}/health`, { signal: AbortSignal.timeout(5000) });
  return ((await res.json()) as { history: HistoryHealth }).history;
}

async function metricsOf(svc: Svc): Promise<string> {
  return (await fetch(`${svc.url}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
}

describe('history byte budget (issue 11)', () => {
  const exchange = uniqueExchange('history-budget');
  const env = { RABBITMQ_URL, RABBITMQ_EXCHANGE: exchange, HISTORY_MAX_BYTES: String(BUDGET) };
  const clients: TestClient[] = [];
  let svc: Svc | undefined;
  let pub: Publisher;
  let seq = 0;
  /** Every event frame published, as a live socket of its channel received it (the truth resumes are compared with). */
  const truth = new Map<number, Frame[]>();
  const published = (): number => [...truth.values()].reduce((n, frames) => n + frames.length, 0);
  const allByPosition = (): Frame[] => [...truth.values()].flat().sort((a, b) => (a.position as number) - (b.position as number));

  async function start(): Promise<Svc> {
    const s = await startService(env);
    await waitForStatus(`${s.url}/health/ready`, 200, 60_000);
    return s;
  }

  async function open(path: string, userId = 1): Promise<TestClient> {
    if (svc === undefined) throw new Error('no service');
    const c = await TestClient.connect(`${svc.ws(path)}${path.includes('?') ? '&' : '?'}token=${mintToken({ userId })}`);
    clients.push(c);
    await c.next('connection', 30_000);
    return c;
  }

  /** Publish `bodies` on their channels (in this order, confirmed), and wait until the live sockets got them all. */
  async function publish(items: Array<{ channel: number; body: Record<string, unknown> }>, live: Map<number, TestClient>): Promise<void> {
    const want = new Map<number, number>();
    const had = new Map([...live].map(([channel, c]) => [channel, eventsOf(c).length]));
    await Promise.all(
      items.map(({ channel, body }) => {
        want.set(channel, (want.get(channel) ?? 0) + 1);
        const s = seq++;
        return pub.publish(
          exchange,
          `execution.${channel}`,
          { ...body, execution_id: channel, seq: s, timestamp: new Date().toISOString() },
          { messageId: `${exchange}-${s}` },
        );
      }),
    );
    for (const [channel, n] of want) {
      const c = live.get(channel);
      if (c === undefined) throw new Error(`no live socket on execution.${channel}`);
      const from = had.get(channel) ?? 0;
      await c.collect((f) => typeof f.channel === 'string' && typeof f.position === 'number', from + n, 60_000);
      truth.set(channel, [...(truth.get(channel) ?? []), ...eventsOf(c).slice(from)]);
    }
  }

  const logEntries = (rounds: number, tag: string, round = ROUND): Array<{ channel: number; body: Record<string, unknown> }> =>
    Array.from({ length: rounds * round.length }, (_, i) => {
      const channel = round[i % round.length];
      return { channel, body: { type: 'log_entry', level: 'info', tag, message: pad(channel) } };
    });

  /** /health and /metrics agree, the bytes held fit the budget and only the budget evicted. Returns what is held. */
  async function checkBudget(): Promise<HistoryHealth> {
    const h = await historyOf(svc as Svc);
    expect(h.max_bytes).toBe(BUDGET);
    expect(h.bytes).toBeLessThanOrEqual(BUDGET);
    expect(h.evicted.bytes).toBeGreaterThan(0);
    expect({ count: h.evicted.count, age: h.evicted.age, channels: h.evicted.channels }).toEqual({ count: 0, age: 0, channels: 0 });
    // Every event read is either held or evicted by the budget; none lost, none counted twice.
    expect(h.events + h.evicted.bytes).toBe(published());
    // Oldest first and no more than needed: one more event (the largest frame here, at most) would not fit.
    const largest = Math.max(...allByPosition().map((f) => Buffer.byteLength(JSON.stringify(f)))) + EVENT_OVERHEAD_BYTES;
    expect(h.bytes).toBeGreaterThan(BUDGET - largest);
    const text = await metricsOf(svc as Svc);
    expect(metric(text, 'realtime_history_max_bytes')).toBe(BUDGET);
    expect(metric(text, 'realtime_history_bytes')).toBe(h.bytes);
    expect(metric(text, 'realtime_history_events')).toBe(h.events);
    expect(metric(text, 'realtime_history_evictions_total', { reason: 'bytes' })).toBe(h.evicted.bytes);
    for (const reason of ['count', 'age', 'channels']) expect(metric(text, 'realtime_history_evictions_total', { reason })).toBe(0);
    return h;
  }

  /**
   * The `held` events still in the history are the newest ones of all channels: a resume from just below them is
   * complete on every channel and replays exactly that channel's events after it, in order; one position lower, on
   * the channel whose event was evicted there, is not complete.
   */
  async function checkNewestHeld(held: number): Promise<void> {
    const all = allByPosition();
    expect(held).toBeLessThan(all.length);
    const newestEvicted = all[all.length - held - 1];
    const since = newestEvicted.position as number;
    let replayed = 0;
    for (const channel of CHANNELS) {
      const c = await open(`/ws/execution/${channel}?since=${since}`, 100 + channel);
      const want = positions((truth.get(channel) ?? []).filter((f) => (f.position as number) > since));
      expect(await c.next('recovery', 30_000)).toMatchObject({ recovered: true, since, missed: want.length });
      await c.collect((f) => typeof f.channel === 'string', want.length, 30_000);
      expect(positions(eventsOf(c))).toEqual(want);
      replayed += want.length;
    }
    expect(replayed).toBe(held);
    const below = await open(`/ws/execution/${String(newestEvicted.channel).split('.')[1]}?since=${since - 1}`, 200);
    expect(await below.next('recovery', 30_000)).toMatchObject({ recovered: false, missed: 0 });
  }

  /**
   * A resume from a position whose events were evicted (the first log entry of each channel): `recovered: false`, the
   * execution's current snapshot (built from events long evicted), and no replayed event; the next event is live.
   */
  async function checkEvictedResume(live: Map<number, TestClient>, marker: string): Promise<void> {
    const stale = new Map<number, TestClient>();
    for (const channel of CHANNELS) {
      const first = (truth.get(channel) ?? []).find((f) => f.type === 'log_entry') as Frame;
      const c = await open(`/ws/execution/${channel}?since=${String(first.position)}`, 300 + channel);
      expect(await c.next('recovery', 30_000)).toMatchObject({ recovered: false, missed: 0 });
      expect(await c.next(undefined, 30_000)).toMatchObject({
        type: 'execution_status',
        execution_id: channel,
        status: 'running',
        pipeline_name: `pipeline-${channel}`,
      });
      stale.set(channel, c);
    }
    await publish(
      CHANNELS.map((channel) => ({ channel, body: { type: 'log_entry', tag: marker } })),
      live,
    );
    for (const [channel, c] of stale) {
      await c.collect((f) => f.tag === marker, 1, 30_000);
      // Nothing but the live event: no partial replay, and nothing after the snapshot but what was published since.
      expect(positions(eventsOf(c))).toEqual(positions((truth.get(channel) ?? []).filter((f) => f.tag === marker)));
    }
  }

  beforeAll(async () => {
    pub = await connectPublisher();
  });

  afterEach(() => {
    for (const c of clients.splice(0)) c.ws.terminate();
  });

  afterAll(async () => {
    for (const c of clients.splice(0)) c.ws.terminate();
    await svc?.shutdown();
    await pub?.close();
    await deleteBrokerObjects(exchange);
  });

  it('keeps the newest events within the budget, shows it in /health and /metrics, and resumes complete or recovered:false, also after a restart', async () => {
    svc = await start();
    const live = new Map<number, TestClient>();
    for (const channel of CHANNELS) live.set(channel, await open(`/ws/execution/${channel}`, channel));
    // A reader of execution.3 that goes away after the first burst and comes back later.
    const laggard = await open('/ws/execution/3', 50);

    await publish(
      CHANNELS.map((channel) => ({ channel, body: { type: 'execution_status', status: 'running', pipeline_name: `pipeline-${channel}` } })),
      live,
    );
    await publish(logEntries(ROUNDS, 'burst'), live);
    await laggard.collect((f) => typeof f.channel === 'string', truth.get(3)?.length ?? 0, 30_000);
    const laggardAt = Math.max(...positions(eventsOf(laggard)));
    laggard.ws.terminate();

    const h = await checkBudget();
    expect(h.evicted.bytes).toBeGreaterThan(published() / 2);
    await checkNewestHeld(h.events);
    await checkEvictedResume(live, 'after-stale-1');

    // The laggard missed a little (two rounds and the marker): still held, so it gets exactly that, in order.
    await publish(logEntries(2, 'missed', CHANNELS), live);
    const back = await open(`/ws/execution/3?since=${laggardAt}`, 50);
    const missed = positions((truth.get(3) ?? []).filter((f) => (f.position as number) > laggardAt));
    expect(missed.length).toBe(3);
    expect(await back.next('recovery', 30_000)).toMatchObject({ recovered: true, since: laggardAt, missed: missed.length });
    await back.collect((f) => typeof f.channel === 'string', missed.length, 30_000);
    expect(positions(eventsOf(back))).toEqual(missed);
    expect(back.frames.some((f) => f.type === 'execution_status')).toBe(false);
    const beforeRestart = await checkBudget();

    // Restart on the same stream: the replay rebuilds the history through the same budget.
    for (const c of clients.splice(0)) c.ws.terminate();
    await svc.shutdown();
    svc = undefined;
    svc = await start();
    const replayed = await checkBudget();
    // The same frames in the same order through the same budget: the same events held.
    expect({ events: replayed.events, bytes: replayed.bytes }).toEqual({ events: beforeRestart.events, bytes: beforeRestart.bytes });
    await checkNewestHeld(replayed.events);
    const again = await open(`/ws/execution/3?since=${laggardAt}`, 50);
    expect(await again.next('recovery', 30_000)).toMatchObject({ recovered: true, since: laggardAt, missed: missed.length });
    await again.collect((f) => typeof f.channel === 'string', missed.length, 30_000);
    expect(positions(eventsOf(again))).toEqual(missed);

    const liveAfter = new Map<number, TestClient>();
    for (const channel of CHANNELS) liveAfter.set(channel, await open(`/ws/execution/${channel}`, channel));
    await checkEvictedResume(liveAfter, 'after-stale-2');
    await checkBudget();
  });
});
