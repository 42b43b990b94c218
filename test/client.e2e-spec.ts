/**
 * The client library (client/src) against the real service: `node dist/main` on a free port, events published
 * through `POST /api/v1/publish`, the `ws` package as the WebSocket. Network faults (a dropped or silent
 * connection) are real: a TCP proxy between the client and the service cuts or freezes the connection.
 *
 * Needs a built service (`npm run build`).
 */
import { createServer, Socket, type Server } from 'node:net';
import { WebSocket } from 'ws';
import { backoffDelay, closeAction, connect, type ClientEvents, type RealtimeClient, type StateChange, type TokenRequest } from '../client/src/index';
import { mintToken } from '../examples/pipeline-detail/server';
import { freePort, ServiceProcess } from '../examples/pipeline-detail/service';

const SECRET = 'client-e2e-secret-0123456789abcdef';
const PUBLISH_KEY = 'client-e2e-publish-key';

jest.setTimeout(60_000);

/** Resolves with the first `type` payload matching `accept`, or rejects after `timeoutMs`. */
function next<K extends keyof ClientEvents>(
  client: RealtimeClient,
  type: K,
  accept: (payload: ClientEvents[K]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<ClientEvents[K]> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${String(type)} within ${timeoutMs} ms (state ${client.state})`));
    }, timeoutMs);
    const off = client.on(type, (payload) => {
      if (!accept(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

async function publish(service: ServiceProcess, channel: string, events: Array<Record<string, unknown>>): Promise<void> {
  const response = await fetch(`${service.url}/api/v1/publish`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISH_KEY}` },
    body: JSON.stringify(events.map((event) => ({ channel, event }))),
  });
  if (response.status !== 202) throw new Error(`publish: HTTP ${response.status} ${await response.text()}`);
}

function logLines(executionId: number, from: number, count: number): Array<Record<string, unknown>> {
  return Array.from({ length: count }, (_, i) => ({
    type: 'log_entry',
    execution_id: executionId,
    level: 'info',
    message: `line ${from + i}`,
    step_name: 'Build',
    source: 'step_output',
  }));
}

/**
 * A TCP proxy in front of the service: `cut()` resets every open connection (the client sees 1006), `freeze()`
 * keeps connections open but stops forwarding (a half-open link: only a heartbeat notices).
 */
class FaultyLink {
  private server: Server | null = null;
  private readonly pairs = new Set<[Socket, Socket]>();
  private frozen = false;
  port = 0;

  constructor(private readonly targetPort: number) {}

  async start(): Promise<void> {
    this.port = await freePort();
    const server = createServer((inbound) => {
      const outbound = new Socket();
      outbound.connect(this.targetPort, '127.0.0.1');
      const pair: [Socket, Socket] = [inbound, outbound];
      this.pairs.add(pair);
      const forward = (from: Socket, to: Socket): void => {
        from.on('data', (chunk: Buffer) => {
          if (!this.frozen) to.write(chunk);
        });
      };
      forward(inbound, outbound);
      forward(outbound, inbound);
      const drop = (): void => {
        inbound.destroy();
        outbound.destroy();
        this.pairs.delete(pair);
      };
      inbound.on('close', drop).on('error', drop);
      outbound.on('close', drop).on('error', drop);
    });
    this.server = server;
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', () => resolve()));
  }

  cut(): void {
    for (const [inbound, outbound] of this.pairs) {
      inbound.resetAndDestroy();
      outbound.destroy();
    }
    this.pairs.clear();
  }

  /** Stop forwarding on the connections open now; new connections work normally. */
  freeze(): void {
    for (const [inbound, outbound] of this.pairs) {
      inbound.pause();
      outbound.pause();
    }
  }

  get open(): number {
    return this.pairs.size;
  }

  async stop(): Promise<void> {
    this.cut();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}

describe('back-off', () => {
  it('grows exponentially from 0.5 s and is capped at 20 s', () => {
    const ceilings = Array.from({ length: 10 }, (_, attempt) => backoffDelay(attempt, undefined, () => 1));
    expect(ceilings).toEqual([500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000]);
  });

  it('draws each delay uniformly below the ceiling (full jitter)', () => {
    const draws = Array.from({ length: 2000 }, () => backoffDelay(4));
    expect(Math.min(...draws)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...draws)).toBeLessThanOrEqual(8000);
    expect(new Set(draws).size).toBeGreaterThan(500);
    const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
    expect(mean).toBeGreaterThan(3000);
    expect(mean).toBeLessThan(5000);
    expect(backoffDelay(0, undefined, () => 0)).toBe(0);
  });

  it('classifies close codes: stop on 4003/4004, refresh on 4001, prompt on 1001/4008', () => {
    expect([4003, 4004, 4999].map(closeAction)).toEqual(['stop', 'stop', 'stop']);
    expect(closeAction(4001)).toBe('refresh-token');
    expect([1001, 4008].map(closeAction)).toEqual(['reconnect-now', 'reconnect-now']);
    expect([1006, 1011, 1008, 4029, 1000].map(closeAction)).toEqual(['reconnect', 'reconnect', 'reconnect', 'reconnect', 'reconnect']);
  });
});

describe('client against the service', () => {
  let service: ServiceProcess;
  const clients: RealtimeClient[] = [];
  let nextExecution = 1000;

  const open = (options: Partial<Parameters<typeof connect>[0]> & { id?: number | string }): RealtimeClient => {
    const client = connect({
      url: service.wsUrl,
      endpoint: 'execution',
      token: () => mintToken(SECRET),
      WebSocket,
      ...options,
    });
    clients.push(client);
    return client;
  };

  beforeAll(async () => {
    service = new ServiceProcess({
      port: await freePort(),
      env: { DJANGO_SECRET_KEY: SECRET, PUBLISH_API_KEY: PUBLISH_KEY, AUTH_REQUIRED: 'true', JWT_LEEWAY_SECONDS: '0', LOG_LEVEL: 'warn' },
    });
    await service.start();
  });

  afterEach(() => {
    for (const client of clients.splice(0)) client.close();
  });

  afterAll(async () => {
    await service.stop();
  });

  it('connects and receives typed events with channel and position', async () => {
    const id = nextExecution++;
    const client = open({ id });
    const connection = await next(client, 'connection');
    expect(connection).toMatchObject({ authenticated: true, endpoint: 'execution', execution_id: String(id) });
    // simplejwt sends user_id as an integer or (from 5.5.1) a string; the service may echo either.
    expect(String(connection.user_id)).toBe('1');
    expect(client.state).toBe('open');

    const step = next(client, 'step_progress');
    await publish(service, `execution.${id}`, [
      { type: 'step_progress', execution_id: id, step_id: 7, step_name: 'Build', status: 'running', execution_time: null, output: '', error_message: '' },
    ]);
    const event = await step;
    // Typed: step_id is number | null, position a number, without casts.
    const stepId: number | null = event.step_id;
    expect(stepId).toBe(7);
    expect(event).toMatchObject({ type: 'step_progress', channel: `execution.${id}`, status: 'running', step_name: 'Build' });
    expect(typeof event.position).toBe('number');
    expect(client.position).toBe(event.position);
  });

  it('unwraps batch frames in order when batch is on', async () => {
    const id = nextExecution++;
    const client = open({ id, batch: true });
    await next(client, 'connection');
    const messages: string[] = [];
    client.on('log_entry', (e) => messages.push(e.message));
    const last = next(client, 'log_entry', (e) => e.message === 'line 49');
    await publish(service, `execution.${id}`, logLines(id, 0, 50));
    await last;
    expect(messages).toEqual(Array.from({ length: 50 }, (_, i) => `line ${i}`));
  });

  it('stops on 4004 and reports the reason', async () => {
    const client = open({ id: 'abc' });
    const stopped = await next(client, 'stopped');
    expect(stopped).toEqual({ code: 4004, reason: 'invalid_id' });
    expect(client.state).toBe('stopped');
  });

  it('asks the provider for a new token on 4001 token_expired and carries on', async () => {
    const id = nextExecution++;
    const requests: TokenRequest[] = [];
    const client = open({
      id,
      refreshBeforeExpiryMs: 0, // no in-place refresh: the server closes at exp
      // First a token that expires in 2 s, then fresh ones: what a page holding an old token goes through.
      token: async (request) => {
        requests.push(request);
        await new Promise((r) => setImmediate(r));
        return mintToken(SECRET, 1, requests.length === 1 ? 2 : 3600);
      },
    });
    await next(client, 'connection');
    const dropped = next(client, 'state', (s) => s.state === 'reconnecting', 10_000);
    const reconnected = new Promise<void>((resolve) => {
      let connections = 0;
      client.on('connection', () => (++connections === 1 ? resolve() : undefined));
    });
    expect(await dropped).toMatchObject({ code: 4001, reason: 'token_expired' });
    await reconnected;
    expect(requests).toEqual([{ refresh: false }, { refresh: true, reason: 'token_expired' }]);

    const entry = next(client, 'log_entry');
    await publish(service, `execution.${id}`, logLines(id, 0, 1));
    expect((await entry).message).toBe('line 0');
  });

  it('refreshes the token in place before it expires: an auth frame, no reconnect', async () => {
    const id = nextExecution++;
    const requests: TokenRequest[] = [];
    const client = open({
      id,
      pingIntervalMs: 250,
      token: (request) => {
        requests.push(request);
        return mintToken(SECRET, 1, requests.length === 1 ? 3 : 3600);
      },
    });
    const states: string[] = [];
    client.on('state', (s) => states.push(s.state));
    const authenticated = next(client, 'authenticated', undefined, 10_000);
    await next(client, 'connection');
    const expiresAt = Date.now() + 3000;
    expect(await authenticated).toMatchObject({ user_id: expect.anything() });
    expect(requests).toEqual([{ refresh: false }, { refresh: true, reason: 'token_expiring' }]);

    // Past the first token's exp (pongs as the clock), the same socket still delivers.
    await next(client, 'pong', () => Date.now() > expiresAt + 1000, 10_000);
    const entry = next(client, 'log_entry');
    await publish(service, `execution.${id}`, logLines(id, 0, 1));
    expect((await entry).message).toBe('line 0');
    expect(states).toEqual(['open']);
  });

  it('resumes with since after a dropped connection: every event exactly once, in order', async () => {
    const link = new FaultyLink(Number(new URL(service.url).port));
    await link.start();
    try {
      const id = nextExecution++;
      const client = open({ id, url: `ws://127.0.0.1:${link.port}`, backoff: { minMs: 200, maxMs: 1000 } });
      await next(client, 'connection');
      const received: Array<{ message: string; position: number }> = [];
      client.on('log_entry', (e) => received.push({ message: e.message, position: e.position }));

      const first = next(client, 'log_entry', (e) => e.message === 'line 9');
      await publish(service, `execution.${id}`, logLines(id, 0, 10));
      await first;

      const reconnecting = next(client, 'state', (s) => s.state === 'reconnecting');
      // Registered before the cut: the replay may arrive in one TCP read, dispatched in one go.
      const recovery = next(client, 'recovered');
      const lastMissed = next(client, 'log_entry', (e) => e.message === 'line 19');
      link.cut();
      await reconnecting;
      // Published while the client is away: only a resume can deliver these.
      await publish(service, `execution.${id}`, logLines(id, 10, 10));
      expect(await recovery).toMatchObject({ recovered: true, missed: 10 });
      await lastMissed;
      const lastLive = next(client, 'log_entry', (e) => e.message === 'line 24');
      await publish(service, `execution.${id}`, logLines(id, 20, 5));
      await lastLive;

      expect(received.map((r) => r.message)).toEqual(Array.from({ length: 25 }, (_, i) => `line ${i}`));
      const positions = received.map((r) => r.position);
      expect(positions).toEqual([...positions].sort((a, b) => a - b));
      expect(new Set(positions).size).toBe(25);
      expect(client.recovered).toBe(true);
    } finally {
      await link.stop();
    }
  });

  it('drops events it already delivered when the server replays them (de-duplication by position)', async () => {
    const id = nextExecution++;
    // A monitor page following an execution re-subscribes with an older `since` (e.g. after its own state was
    // reset): the server replays events this socket already delivered; the page must not see them twice.
    const client = open({ endpoint: 'monitor', id: undefined });
    await next(client, 'connection');
    client.send({ type: 'subscribe_execution', executionId: id });
    await next(client, 'subscribed');
    const delivered: string[] = [];
    const positions: number[] = [];
    client.on('log_entry', (e) => {
      delivered.push(e.message);
      positions.push(e.position);
    });
    const fifth = next(client, 'log_entry', (e) => e.message === 'line 4');
    await publish(service, `execution.${id}`, logLines(id, 0, 5));
    await fifth;

    // Unfollow, then follow again from before the first line: the server replays lines 0-4, already shown.
    client.send({ type: 'unsubscribe_execution', executionId: id });
    await next(client, 'unsubscribed');
    const replayed = next(client, 'recovery');
    client.send({ type: 'subscribe_execution', executionId: id, since: positions[0] - 1 });
    expect(await replayed).toMatchObject({ recovered: true, missed: 5 });
    const sixth = next(client, 'log_entry', (e) => e.message === 'line 5');
    await publish(service, `execution.${id}`, logLines(id, 5, 1));
    await sixth;
    expect(delivered).toEqual(['line 0', 'line 1', 'line 2', 'line 3', 'line 4', 'line 5']);
    expect(client.duplicatesDropped).toBe(5);
  });

  it('reconnects promptly after the server closes with 1001 (restart) and keeps receiving', async () => {
    const id = nextExecution++;
    const states: StateChange[] = [];
    const client = open({ id });
    client.on('state', (s) => states.push(s));
    await next(client, 'connection');

    const goingAway = next(client, 'state', (s) => s.state === 'reconnecting', 20_000);
    const reconnected = next(client, 'connection', undefined, 30_000);
    const restarted = service.restart();
    expect(await goingAway).toMatchObject({ code: 1001, reason: 'server_shutting_down' });
    await restarted;
    await reconnected;

    const entry = next(client, 'log_entry');
    await publish(service, `execution.${id}`, logLines(id, 0, 1));
    expect((await entry).message).toBe('line 0');
    // The first retry after 1001 waits at most the smallest ceiling.
    const firstRetry = states.find((s) => s.state === 'reconnecting');
    expect(firstRetry?.retryInMs).toBeLessThanOrEqual(500);
  });

  it('notices a silent connection (no frame, no pong) and reconnects', async () => {
    const link = new FaultyLink(Number(new URL(service.url).port));
    await link.start();
    try {
      const id = nextExecution++;
      const client = open({ id, url: `ws://127.0.0.1:${link.port}`, pingIntervalMs: 200, deadAfterMs: 1000, backoff: { minMs: 100, maxMs: 500 } });
      await next(client, 'connection');
      // Pongs keep a quiet but healthy connection alive: 8 pongs take at least 1.6 s, past the 1 s bound.
      let reconnects = 0;
      client.on('state', (s) => (reconnects += s.state === 'reconnecting' ? 1 : 0));
      let pongs = 0;
      await next(client, 'pong', () => ++pongs === 8, 5000);
      expect(reconnects).toBe(0);

      const started = Date.now();
      link.freeze();
      const dead = await next(client, 'state', (s) => s.state === 'reconnecting', 5000);
      expect(dead).toMatchObject({ code: 4000, reason: 'dead_connection' });
      expect(Date.now() - started).toBeGreaterThanOrEqual(900);
      await next(client, 'connection');
    } finally {
      await link.stop();
    }
  });
});
