import { createServer, type Server } from 'node:http';
import { ConnectionRegistry } from '../../src/gateway/connection-registry';
import { startService } from '../support/service';
import { mintToken } from '../support/tokens';
import { TestClient } from '../support/ws-client';
import { metric, until, type Svc } from './support';

/** Small limits so each can be hit with a handful of sockets. */
const LIMITS = {
  WS_MAX_CONNECTIONS: 8,
  WS_MAX_CONNECTIONS_PER_IP: 3,
  WS_MAX_CONNECTIONS_PER_USER: 2,
  WS_MAX_FRAMES_PER_SECOND: 10,
  WS_MAX_FRAME_BYTES: 1024,
  MONITOR_MAX_SUBSCRIPTIONS: 3,
  AUTH_FRAME_TIMEOUT_MS: 300,
  PUBLISH_MAX_BODY_BYTES: 2048,
};
const ALLOWED_ORIGIN = 'https://ansflow.example.com';

describe('limits', () => {
  let svc: Svc;
  let registry: ConnectionRegistry;
  const open: TestClient[] = [];

  beforeAll(async () => {
    svc = await startService({
      ...Object.fromEntries(Object.entries(LIMITS).map(([k, v]) => [k, String(v)])),
      ALLOWED_ORIGINS: `${ALLOWED_ORIGIN}, https://other.example.com`,
      JWT_LEEWAY_SECONDS: '0',
    });
    registry = svc.app.get(ConnectionRegistry);
  });
  afterEach(async () => {
    for (const c of open.splice(0)) c.close();
    await until('every socket gone', () => registry.size === 0);
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  const hits = (limit: string): Promise<number> => metric(svc, 'websocket_limit_hits_total', { limit });

  /** A greeted socket for `userId`, from the loopback address `ip` (127.0.0.0/8 is all local on Linux). */
  async function socket(userId: number, ip = '127.0.0.1', path = '/ws/system', options: { origin?: string } = {}): Promise<TestClient> {
    const c = await TestClient.connect(svc.ws(`${path}?token=${mintToken({ userId })}`), { localAddress: ip, ...options });
    open.push(c);
    await c.next('connection');
    return c;
  }

  async function refused(userId: number, ip = '127.0.0.1', path = '/ws/system', options: { origin?: string } = {}): Promise<{ code: number; reason: string }> {
    const c = await TestClient.connect(svc.ws(`${path}?token=${mintToken({ userId })}`), { localAddress: ip, ...options });
    open.push(c);
    const closed = await c.closedWith();
    expect(c.frames).toEqual([]);
    return closed;
  }

  it('WS_MAX_CONNECTIONS: the next socket is closed 4029 too_many_connections', async () => {
    const before = await hits('connections');
    for (let i = 0; i < LIMITS.WS_MAX_CONNECTIONS; i++) await socket(100 + i, `127.0.1.${1 + (i % 4)}`);
    expect(await refused(200, '127.0.1.9')).toEqual({ code: 4029, reason: 'too_many_connections' });
    expect(await hits('connections')).toBe(before + 1);
    // One closes: there is room again.
    open.shift()?.close();
    await until('one slot free', () => registry.size < LIMITS.WS_MAX_CONNECTIONS);
    await socket(201, '127.0.1.9');
  });

  it('WS_MAX_CONNECTIONS_PER_IP: 4029 too_many_ip_connections; another address is fine', async () => {
    const before = await hits('connections_per_ip');
    for (let i = 0; i < LIMITS.WS_MAX_CONNECTIONS_PER_IP; i++) await socket(300 + i, '127.0.2.1');
    expect(await refused(310, '127.0.2.1')).toEqual({ code: 4029, reason: 'too_many_ip_connections' });
    expect(await hits('connections_per_ip')).toBe(before + 1);
    await socket(311, '127.0.2.2');
  });

  it('WS_MAX_CONNECTIONS_PER_USER: 4029 too_many_user_connections; another user is fine', async () => {
    const before = await hits('connections_per_user');
    for (let i = 0; i < LIMITS.WS_MAX_CONNECTIONS_PER_USER; i++) await socket(400, `127.0.3.${i + 1}`);
    expect(await refused(400, '127.0.3.9')).toEqual({ code: 4029, reason: 'too_many_user_connections' });
    expect(await hits('connections_per_user')).toBe(before + 1);
    await socket(401, '127.0.3.9');
  });

  it('WS_MAX_FRAMES_PER_SECOND: 1008 rate_limited', async () => {
    const before = await hits('frames_per_second');
    const c = await socket(500);
    for (let i = 0; i <= LIMITS.WS_MAX_FRAMES_PER_SECOND; i++) c.send({ type: 'ping' });
    expect(await c.closedWith()).toEqual({ code: 1008, reason: 'rate_limited' });
    expect(c.frames.filter((f) => f.type === 'pong').length).toBeLessThanOrEqual(LIMITS.WS_MAX_FRAMES_PER_SECOND);
    expect(await hits('frames_per_second')).toBe(before + 1);
    // A client within the rate is untouched.
    const calm = await socket(501);
    for (let i = 0; i < LIMITS.WS_MAX_FRAMES_PER_SECOND; i++) calm.send({ type: 'ping' });
    await calm.collect((f) => f.type === 'pong', LIMITS.WS_MAX_FRAMES_PER_SECOND);
    expect(calm.closed).toBeUndefined();
  });

  it('WS_MAX_FRAME_BYTES: 1009', async () => {
    const before = await hits('frame_size');
    const closedBefore = await metric(svc, 'websocket_connections_closed_total', { code: '1009' });
    const c = await socket(600);
    c.send({ type: 'ping', pad: 'x'.repeat(LIMITS.WS_MAX_FRAME_BYTES) });
    expect((await c.closedWith()).code).toBe(1009);
    expect(await hits('frame_size')).toBe(before + 1);
    await until('the 1009 close is counted', async () => (await metric(svc, 'websocket_connections_closed_total', { code: '1009' })) === closedBefore + 1);
    // Exactly at the limit is fine.
    const ok = await socket(601);
    const frame = JSON.stringify({ type: 'ping', pad: '' });
    ok.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(LIMITS.WS_MAX_FRAME_BYTES - frame.length) }));
    await ok.next('pong');
  });

  it('MONITOR_MAX_SUBSCRIPTIONS: error too_many_subscriptions, the socket stays', async () => {
    const before = await hits('monitor_subscriptions');
    const c = await socket(700, '127.0.0.1', '/ws/monitor');
    for (let id = 1; id <= LIMITS.MONITOR_MAX_SUBSCRIPTIONS; id++) {
      c.send({ type: 'subscribe_execution', executionId: id });
      await c.next('subscribed');
    }
    // Following an execution already followed does not count twice.
    c.send({ type: 'subscribe_execution', executionId: 1 });
    await c.next('subscribed');
    c.send({ type: 'subscribe_execution', executionId: 99 });
    expect(await c.next('error')).toMatchObject({ code: 'too_many_subscriptions' });
    expect(await hits('monitor_subscriptions')).toBe(before + 1);
    // Unfollowing one makes room.
    c.send({ type: 'unsubscribe_execution', executionId: 2 });
    await c.next('unsubscribed');
    c.send({ type: 'subscribe_execution', executionId: 99 });
    expect(await c.next('subscribed')).toMatchObject({ execution_id: 99 });
    expect(c.closed).toBeUndefined();
  });

  it('AUTH_FRAME_TIMEOUT_MS: 4001 token_required without a token; an auth frame in time opens the socket', async () => {
    const before = await hits('auth_deadline');
    const t0 = Date.now();
    const c = await TestClient.connect(svc.ws('/ws/system'));
    open.push(c);
    expect(await c.closedWith()).toEqual({ code: 4001, reason: 'token_required' });
    const elapsed = Date.now() - t0;
    expect(c.frames).toEqual([]);
    expect(await hits('auth_deadline')).toBe(before + 1);
    console.log(`auth deadline ${LIMITS.AUTH_FRAME_TIMEOUT_MS} ms: closed after ${elapsed} ms`);

    const late = await TestClient.connect(svc.ws('/ws/system'));
    open.push(late);
    late.send({ type: 'auth', token: mintToken({ userId: 800 }) });
    expect(await late.next()).toMatchObject({ type: 'authenticated', user_id: '800' });
    expect(await late.next()).toMatchObject({ type: 'connection', authenticated: true });
  });

  it('PUBLISH_MAX_BODY_BYTES: 413 and counted', async () => {
    const before = await hits('publish_body_size');
    const res = await svc.publish({ channel: 'system', event: { type: 'x', pad: 'x'.repeat(LIMITS.PUBLISH_MAX_BODY_BYTES) } });
    expect(res.status).toBe(413);
    expect(await hits('publish_body_size')).toBe(before + 1);
    expect((await svc.publish({ channel: 'system', event: { type: 'x' } })).status).toBe(202);
  });

  it('ALLOWED_ORIGINS: a browser Origin not listed is closed 4003 origin_not_allowed; a listed one and no Origin are fine', async () => {
    const closedBefore = await metric(svc, 'websocket_connections_closed_total', { code: '4003' });
    expect(await refused(900, '127.0.0.1', '/ws/system', { origin: 'https://evil.example.net' })).toEqual({ code: 4003, reason: 'origin_not_allowed' });
    // A look-alike (prefix, other scheme, other port) is not the listed origin.
    for (const origin of [`${ALLOWED_ORIGIN}.evil.net`, ALLOWED_ORIGIN.replace('https', 'http'), `${ALLOWED_ORIGIN}:8443`, 'null']) {
      expect(await refused(900, '127.0.0.1', '/ws/system', { origin })).toEqual({ code: 4003, reason: 'origin_not_allowed' });
    }
    expect(await metric(svc, 'websocket_connections_closed_total', { code: '4003' })).toBe(closedBefore + 5);
    await socket(901, '127.0.0.1', '/ws/system', { origin: ALLOWED_ORIGIN });
    await socket(902, '127.0.0.1', '/ws/system', { origin: 'https://other.example.com' });
    // No Origin header: not a browser (a service, a CLI), so the origin rule does not apply; the token still does.
    await socket(903);
  });

  it('token expiry on an open socket: 4001 token_expired; a refresh of the same user keeps it; another user 4001 token_user_mismatch', async () => {
    // Both first tokens expire at the same second, so once `expires` is closed the refreshed socket's first token
    // has expired too.
    const exp = Math.floor(Date.now() / 1000) + 2;
    const expires = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId: 1000, extra: { exp } })}`));
    open.push(expires);
    await expires.next('connection');
    const refreshed = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId: 1001, extra: { exp } })}`));
    open.push(refreshed);
    await refreshed.next('connection');
    refreshed.send({ type: 'auth', token: mintToken({ userId: 1001, expiresIn: 60 }) });
    expect(await refreshed.next('authenticated')).toMatchObject({ user_id: '1001' });

    expect(await expires.closedWith(4000)).toEqual({ code: 4001, reason: 'token_expired' });
    // Past the first token's expiry the refreshed socket still answers.
    refreshed.send({ type: 'ping' });
    await refreshed.next('pong');
    expect(refreshed.closed).toBeUndefined();

    const mismatch = await socket(1002);
    mismatch.send({ type: 'auth', token: mintToken({ userId: 1003 }) });
    expect(await mismatch.closedWith()).toEqual({ code: 4001, reason: 'token_user_mismatch' });
    expect(await metric(svc, 'websocket_auth_failures_total', { reason: 'token_user_mismatch' })).toBeGreaterThanOrEqual(1);
    expect(await metric(svc, 'websocket_auth_failures_total', { reason: 'token_expired' })).toBeGreaterThanOrEqual(1);
  });
});

/**
 * The per-user limit when channel authorization takes time (AUTHZ_MODE=django): concurrent upgrades of one user
 * must not all pass the check while Django is being asked. The authorizer here is a stand-in HTTP server (not the
 * real Django view, which authz.e2e-spec.ts uses) because the race needs a slow, always-allowing answer.
 */
describe('limits: WS_MAX_CONNECTIONS_PER_USER with a slow authorizer', () => {
  let svc: Svc;
  let standIn: Server;

  beforeAll(async () => {
    standIn = createServer((_req, res) => setTimeout(() => res.end('{"allow":true}'), 100));
    await new Promise<void>((r) => standIn.listen(0, '127.0.0.1', r));
    const port = (standIn.address() as { port: number }).port;
    svc = await startService({ AUTHZ_MODE: 'django', AUTHZ_DJANGO_URL: `http://127.0.0.1:${port}/authorize`, AUTHZ_ALLOW_TTL_SECONDS: '0', WS_MAX_CONNECTIONS_PER_USER: '2' });
  });
  afterAll(async () => {
    await svc.shutdown();
    await new Promise((r) => standIn.close(r));
  });

  it('opens at most the limit out of six simultaneous sockets of one user', async () => {
    const clients = await Promise.all(Array.from({ length: 6 }, () => TestClient.connect(svc.ws(`/ws/project/1?token=${mintToken({ userId: 5 })}`))));
    const outcomes = await Promise.all(
      clients.map(async (c) => {
        try {
          await c.next('connection', 5000);
          return 'open';
        } catch {
          return `${c.closed?.code} ${c.closed?.reason}`;
        }
      }),
    );
    expect(outcomes.filter((o) => o === 'open')).toHaveLength(2);
    expect(outcomes.filter((o) => o === '4029 too_many_user_connections')).toHaveLength(4);
    for (const c of clients) c.close();
  });
});
