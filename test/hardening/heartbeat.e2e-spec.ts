import { startService } from '../support/service';
import { mintToken } from '../support/tokens';
import { TestClient } from '../support/ws-client';
import { metric, until, type Svc } from './support';

const INTERVAL = 300;
const TIMEOUT = 300;
/** The registry's sweep runs every min(500, interval, auth deadline) ms. */
const TICK = Math.min(500, INTERVAL);

describe('heartbeat', () => {
  let svc: Svc;

  beforeAll(async () => {
    svc = await startService({ WS_HEARTBEAT_INTERVAL_MS: String(INTERVAL), WS_HEARTBEAT_TIMEOUT_MS: String(TIMEOUT) });
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  function pingsOf(c: TestClient): { count: number } {
    const seen = { count: 0 };
    c.ws.on('ping', () => seen.count++);
    return seen;
  }

  it('terminates a client that does not answer pings within interval + timeout, keeps a normal one', async () => {
    const closed1008 = await metric(svc, 'websocket_connections_closed_total', { code: '1008' });
    const normal = await TestClient.connect(svc.ws(`/ws/monitor?token=${mintToken({ userId: 1 })}`));
    await normal.next('connection');
    const normalPings = pingsOf(normal);
    // autoPong false: the socket is as good as a half-open TCP connection to the server's heartbeat.
    const t0 = Date.now();
    const dead = await TestClient.connect(svc.ws(`/ws/monitor?token=${mintToken({ userId: 2 })}`), { autoPong: false });
    await dead.next('connection');
    const deadPings = pingsOf(dead);

    const closed = await dead.closedWith(5000);
    const elapsed = Date.now() - t0;
    console.log(`unanswering client terminated after ${elapsed} ms (interval ${INTERVAL} + timeout ${TIMEOUT}, sweep tick ${TICK}); close seen by the client: ${closed.code}`);
    // terminate() sends no close frame: the client sees an abnormal closure.
    expect(closed.code).toBe(1006);
    expect(deadPings.count).toBeGreaterThanOrEqual(1);
    // The ping round may start up to one tick after the socket opened, and the timeout is checked on a tick.
    expect(elapsed).toBeLessThanOrEqual(INTERVAL + TIMEOUT + 2 * TICK + 150);
    await until('the 1008 close is counted', async () => (await metric(svc, 'websocket_connections_closed_total', { code: '1008' })) === closed1008 + 1);

    // The normal client answers every ping (ws does it for it, as browsers do) and stays through more rounds.
    const after = normalPings.count;
    await until('three more ping rounds', () => normalPings.count >= after + 3, 5000);
    expect(normal.closed).toBeUndefined();

    // JSON ping/pong of today's frontend still works on the same socket.
    normal.send({ type: 'ping' });
    expect(await normal.next('pong')).toHaveProperty('timestamp');
    normal.send({ type: 'pong' });
    normal.send({ type: 'ping' });
    expect((await normal.next()).type).toBe('pong');
    expect(await metric(svc, 'websocket_connections', { endpoint: 'monitor' })).toBe(1);
    normal.close();
  });

  it('keeps a client that does not answer protocol pings but sends JSON pings (any frame counts as alive)', async () => {
    const c = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId: 3 })}`), { autoPong: false });
    await c.next('connection');
    const pings = pingsOf(c);
    const timer = setInterval(() => c.send({ type: 'ping' }), INTERVAL / 3);
    try {
      await until('four ping rounds', () => pings.count >= 4, 5000);
      expect(c.closed).toBeUndefined();
      expect(c.frames.filter((f) => f.type === 'pong').length).toBeGreaterThan(3);
    } finally {
      clearInterval(timer);
      c.close();
    }
  });
});
