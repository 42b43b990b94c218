import { startService } from './support/service';
import { mintToken, tamperedToken, unsignedToken } from './support/tokens';
import { TestClient } from './support/ws-client';

type Svc = Awaited<ReturnType<typeof startService>>;

describe('core service (embedded mode, no broker)', () => {
  let svc: Svc;
  const token = mintToken({ userId: 7 });

  beforeAll(async () => {
    svc = await startService({ AUTH_FRAME_TIMEOUT_MS: '400', WS_MAX_FRAME_BYTES: '4096', WS_MAX_FRAMES_PER_SECOND: '20' });
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  const endpoints = [
    { path: '/ws/execution/42', channel: 'execution.42' },
    { path: '/ws/pipeline/5', channel: 'pipeline.5' },
    { path: '/ws/project/3', channel: 'project.3' },
    { path: '/ws/monitor', channel: 'monitor' },
    { path: '/ws/system', channel: 'system' },
  ];

  it.each(endpoints)('$path: greets with connection, relays a published event intact, answers ping', async ({ path, channel }) => {
    const c = await TestClient.connect(svc.ws(`${path}?token=${token}`));
    const hello = await c.next();
    expect(hello).toMatchObject({ type: 'connection', authenticated: true, user_id: '7' });
    expect(String(hello.timestamp)).toMatch(/Z$/);
    const event = { type: 'custom_event', nested: { a: [1, 2, { b: 'ü' }] }, n: 1.5, flag: false, timestamp: '2026-01-01T00:00:00.000Z' };
    expect((await svc.publish({ channel, event })).status).toBe(202);
    const got = await c.next('custom_event');
    expect(got).toMatchObject({ ...event, channel });
    expect(typeof got.position).toBe('number');
    c.send({ type: 'ping' });
    expect(await c.next('pong')).toHaveProperty('timestamp');
    c.close();
  });

  it('accepts a trailing slash', async () => {
    const c = await TestClient.connect(svc.ws(`/ws/execution/42/?token=${token}`));
    expect((await c.next()).type).toBe('connection');
    c.close();
  });

  it.each([
    ['/ws/nope', 4004, 'unknown_path'],
    ['/ws/execution/abc', 4004, 'invalid_id'],
    ['/ws/execution/0', 4004, 'invalid_id'],
    ['/ws/execution/-1', 4004, 'invalid_id'],
    ['/ws/execution/1.5', 4004, 'invalid_id'],
    ['/ws/execution/', 4004, 'invalid_id'],
    ['/ws/pipeline/99999999999999999999', 4004, 'invalid_id'],
  ])('refuses %s with %d %s', async (path, code, reason) => {
    const c = await TestClient.connect(svc.ws(`${path}?token=${token}`));
    expect(await c.closedWith()).toEqual({ code, reason });
    expect(c.frames).toEqual([]);
  });

  describe('Django tokens', () => {
    const cases: [string, string, string][] = [
      ['a refresh token', mintToken({ type: 'refresh' }), 'token_invalid'],
      ['an expired token', mintToken({ expiresIn: -60 }), 'token_expired'],
      ['a token signed with another key', mintToken({ secret: 'another-secret-key-xyz' }), 'token_invalid'],
      ['a tampered payload', tamperedToken(mintToken({ userId: 1 }), { user_id: 2 }), 'token_invalid'],
      ['alg none', unsignedToken(), 'token_invalid'],
      ['a token without token_type', mintToken({ type: null }), 'token_invalid'],
      ['garbage', 'not-a-jwt', 'token_invalid'],
    ];
    it.each(cases)('closes with 4001 when the token is %s', async (_name, bad, reason) => {
      const c = await TestClient.connect(svc.ws(`/ws/execution/42?token=${bad}`));
      expect(await c.closedWith()).toEqual({ code: 4001, reason });
      expect(c.frames).toEqual([]);
    });

    it('closes with 4001 token_required when no token and no auth frame comes in time', async () => {
      const c = await TestClient.connect(svc.ws('/ws/execution/42'));
      expect(await c.closedWith()).toEqual({ code: 4001, reason: 'token_required' });
      expect(c.frames).toEqual([]);
    });

    it.each([
      ['an integer', 12],
      ['a string', '12'],
    ])('accepts user_id as %s', async (_n, userId) => {
      const c = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId })}`));
      expect(await c.next()).toMatchObject({ type: 'connection', user_id: '12' });
      c.close();
    });

    it('takes the token from Authorization: Bearer', async () => {
      const c = await TestClient.connect(svc.ws('/ws/system'), { headers: { authorization: `Bearer ${token}` } });
      expect(await c.next()).toMatchObject({ type: 'connection', authenticated: true });
      c.close();
    });

    it('takes the token from Sec-WebSocket-Protocol and selects ansflow.v1', async () => {
      const c = await TestClient.connect(svc.ws('/ws/system'), { protocols: ['ansflow.v1', `bearer.${token}`] });
      expect(c.ws.protocol).toBe('ansflow.v1');
      expect(await c.next()).toMatchObject({ type: 'connection', authenticated: true });
      c.close();
    });

    it('takes the token from a first auth frame, sending no channel frame before it', async () => {
      const c = await TestClient.connect(svc.ws('/ws/monitor'));
      c.send({ type: 'auth', token });
      expect((await c.next()).type).toBe('authenticated');
      expect((await c.next()).type).toBe('connection');
      expect((await c.next()).type).toBe('system_status');
      c.close();
    });

    it('closes at expiry with token_expired, and a fresh token of the same user in an auth frame keeps it open', async () => {
      const short = mintToken({ userId: 9, expiresIn: 1 });
      const a = await TestClient.connect(svc.ws(`/ws/system?token=${short}`));
      const b = await TestClient.connect(svc.ws(`/ws/system?token=${short}`));
      await a.next('connection');
      await b.next('connection');
      b.send({ type: 'auth', token: mintToken({ userId: 9, expiresIn: 600 }) });
      await b.next('authenticated');
      expect(await a.closedWith(15000)).toEqual({ code: 4001, reason: 'token_expired' });
      b.send({ type: 'ping' });
      expect((await b.next('pong')).type).toBe('pong');
      b.close();
    });

    it('closes with token_user_mismatch when an auth frame carries another user', async () => {
      const c = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId: 1 })}`));
      await c.next('connection');
      c.send({ type: 'auth', token: mintToken({ userId: 2 }) });
      expect(await c.closedWith()).toEqual({ code: 4001, reason: 'token_user_mismatch' });
    });
  });

  describe('routing', () => {
    it('execution.N reaches that execution and monitors following it, not other executions', async () => {
      const e42 = await TestClient.connect(svc.ws(`/ws/execution/42?token=${token}`));
      const e43 = await TestClient.connect(svc.ws(`/ws/execution/43?token=${token}`));
      const mon = await TestClient.connect(svc.ws(`/ws/monitor?token=${token}`));
      const other = await TestClient.connect(svc.ws(`/ws/monitor?token=${token}`));
      await mon.next('system_status');
      mon.send({ type: 'subscribe_execution', executionId: 42 });
      expect(await mon.next('subscribed')).toMatchObject({ execution_id: 42 });
      await mon.next('execution_status');
      await e42.next('execution_status');
      await e43.next('execution_status');
      await svc.publish({ channel: 'execution.42', event: { type: 'log_entry', message: 'for 42' } });
      await svc.publish({ channel: 'execution.43', event: { type: 'log_entry', message: 'for 43' } });
      expect(await e42.next('log_entry')).toMatchObject({ message: 'for 42' });
      expect(await mon.next('log_entry')).toMatchObject({ message: 'for 42' });
      expect(await e43.next('log_entry')).toMatchObject({ message: 'for 43' });
      // A marker on `monitor` proves `other` has had time to receive anything it wrongly would.
      await svc.publish({ channel: 'monitor', event: { type: 'marker' } });
      await other.next('marker');
      expect(other.frames.filter((f) => f.type === 'log_entry')).toEqual([]);
      expect(e42.frames.filter((f) => f.type === 'log_entry')).toHaveLength(1);
      mon.send({ type: 'unsubscribe_execution', executionId: 42 });
      await mon.next('unsubscribed');
      for (const c of [e42, e43, mon, other]) c.close();
    });

    it('user.N reaches every socket of that user only; system reaches system and monitor sockets', async () => {
      const u7a = await TestClient.connect(svc.ws(`/ws/execution/1?token=${mintToken({ userId: 7 })}`));
      const u7b = await TestClient.connect(svc.ws(`/ws/monitor?token=${mintToken({ userId: 7 })}`));
      const u8 = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId: 8 })}`));
      const proj = await TestClient.connect(svc.ws(`/ws/project/1?token=${mintToken({ userId: 8 })}`));
      for (const c of [u7a, u7b, u8, proj]) await c.next('connection');
      await svc.publish({ channel: 'user.7', event: { type: 'system_notification', level: 'info', title: 'T', message: 'hi 7' } });
      const n = await u7a.next('system_notification');
      expect(n).toMatchObject({ level: 'info', title: 'T', message: 'hi 7', data: { level: 'info', title: 'T', message: 'hi 7' } });
      await u7b.next('system_notification');
      await svc.publish({ channel: 'system', event: { type: 'system_notification', level: 'warning', title: 'S', message: 'all' } });
      expect(await u8.next('system_notification')).toMatchObject({ message: 'all' });
      expect(await u7b.next('system_notification')).toMatchObject({ message: 'all' });
      await svc.publish({ channel: 'project.1', event: { type: 'project_update', project_id: 1 } });
      await proj.next('project_update');
      expect(u8.frames.filter((f) => f.message === 'hi 7')).toEqual([]);
      expect(proj.frames.filter((f) => f.type === 'system_notification')).toEqual([]);
      expect(u7a.frames.filter((f) => f.message === 'all')).toEqual([]);
      for (const c of [u7a, u7b, u8, proj]) c.close();
    });

    it('a page opening mid-run gets the current execution_status first, and get_status answers it', async () => {
      await svc.publish([
        { channel: 'execution.77', event: { type: 'execution_update', execution_id: 77, status: 'running', pipeline_name: 'build', steps: [], total_steps: 3, completed_steps: 0 } },
        { channel: 'execution.77', event: { type: 'step_progress', execution_id: 77, step_id: 1, step_name: 'checkout', status: 'success', execution_time: 1.2 } },
        { channel: 'execution.77', event: { type: 'step_progress', execution_id: 77, step_id: 2, step_name: 'test', status: 'running' } },
      ]);
      const c = await TestClient.connect(svc.ws(`/ws/execution/77?token=${token}`));
      expect((await c.next()).type).toBe('connection');
      const status = await c.next();
      expect(status).toMatchObject({
        type: 'execution_status',
        data: { execution_id: 77, status: 'running', pipeline_name: 'build', total_steps: 3, completed_steps: 1, current_step: { step_id: 2, status: 'running' } },
      });
      c.send({ type: 'get_status' });
      expect(await c.next('execution_status')).toMatchObject({ data: { execution_id: 77, status: 'running' } });
      c.close();
    });

    it("AnsFlow's useWebSocket reading execution_status (top level, then `execution`) finds a run started before the page", async () => {
      await svc.publish([
        { channel: 'execution.88', event: { type: 'execution_update', execution_id: 88, pipeline_id: 4, status: 'running', pipeline_name: 'deploy', trigger_type: 'manual', total_steps: 3, message: 'Deploying' } },
        { channel: 'execution.88', event: { type: 'step_progress', execution_id: 88, step_id: 1, step_name: 'checkout', status: 'running', output: 'Cloning' } },
        { channel: 'execution.88', event: { type: 'step_progress', execution_id: 88, step_id: 1, step_name: 'checkout', status: 'success', execution_time: 1.5 } },
        { channel: 'execution.88', event: { type: 'step_progress', execution_id: 88, step_id: 2, step_name: 'test', status: 'failed', error_message: 'exit 1' } },
        { channel: 'execution.88', event: { type: 'step_progress', execution_id: 88, step_id: 3, step_name: 'deploy', status: 'running' } },
      ]);
      const page = await TestClient.connect(svc.ws(`/ws/execution/88?token=${token}`));
      // The page sends get_status as soon as the socket opens: both the greeting snapshot and the reply must read right.
      page.send({ type: 'get_status' });
      const greeting = await page.next('execution_status');
      const reply = await page.next('execution_status');
      for (const frame of [greeting, reply]) {
        const seen = readAsUseWebSocket(frame);
        expect(seen).toEqual({
          status: 'running',
          pipelineName: 'deploy',
          totalSteps: 3,
          successfulSteps: 1,
          failedSteps: 1,
          message: 'Deploying',
          steps: [
            { stepId: 1, stepName: 'checkout', status: 'success', executionTime: 1.5, output: 'Cloning', errorMessage: undefined },
            { stepId: 2, stepName: 'test', status: 'failed', executionTime: undefined, output: undefined, errorMessage: 'exit 1' },
            { stepId: 3, stepName: 'deploy', status: 'running', executionTime: undefined, output: undefined, errorMessage: undefined },
          ],
        });
        // Every field Django published for the execution is kept, not only the listed ones.
        expect(frame).toMatchObject({ trigger_type: 'manual', pipeline_id: 4, data: { trigger_type: 'manual', status: 'running' } });
      }
      page.close();
    });

    it('answers subscribe with subscribed (and subscription_confirmed on pipeline)', async () => {
      const e = await TestClient.connect(svc.ws(`/ws/execution/5?token=${token}`));
      e.send({ type: 'subscribe', events: ['log_entry'] });
      expect(await e.next('subscribed')).toMatchObject({ events: ['log_entry'], execution_id: '5' });
      const p = await TestClient.connect(svc.ws(`/ws/pipeline/5?token=${token}`));
      p.send({ type: 'subscribe', events: ['pipeline_update'] });
      await p.next('subscribed');
      expect(await p.next('subscription_confirmed')).toMatchObject({ pipeline_id: 5 });
      e.close();
      p.close();
    });
  });

  describe('bad input', () => {
    it('answers frames that are not JSON or not understood with error frames and keeps the socket', async () => {
      const c = await TestClient.connect(svc.ws(`/ws/execution/42?token=${token}`));
      c.send('not json');
      expect(await c.next('error')).toMatchObject({ code: 'invalid_json', message: 'Invalid JSON format' });
      c.send('[1,2]');
      expect(await c.next('error')).toMatchObject({ code: 'invalid_frame' });
      c.send({ type: 'nonsense' });
      expect(await c.next('error')).toMatchObject({ code: 'unknown_type' });
      c.send({ type: 'subscribe', events: 'x' });
      expect(await c.next('error')).toMatchObject({ code: 'invalid_frame' });
      c.send({ type: 'ping' });
      await c.next('pong');
      c.close();
    });

    it('closes 1009 on an oversized frame, 1008 on a binary frame and on a ping flood, and keeps serving others', async () => {
      const bystander = await TestClient.connect(svc.ws(`/ws/execution/8?token=${token}`));
      await bystander.next('execution_status');
      const big = await TestClient.connect(svc.ws(`/ws/execution/8?token=${token}`));
      big.send(JSON.stringify({ type: 'ping', pad: 'x'.repeat(10_000) }));
      expect((await big.closedWith()).code).toBe(1009);
      const bin = await TestClient.connect(svc.ws(`/ws/execution/8?token=${token}`));
      await bin.next('connection');
      bin.ws.send(Buffer.from([1, 2, 3]), { binary: true });
      expect(await bin.closedWith()).toEqual({ code: 1008, reason: 'binary_frame_not_supported' });
      const flood = await TestClient.connect(svc.ws(`/ws/execution/8?token=${token}`));
      await flood.next('connection');
      for (let i = 0; i < 200; i++) flood.send({ type: 'ping' });
      expect(await flood.closedWith()).toEqual({ code: 1008, reason: 'rate_limited' });
      const badUtf8 = await TestClient.connect(svc.ws(`/ws/execution/8?token=${token}`));
      await badUtf8.next('connection');
      badUtf8.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
      expect((await badUtf8.closedWith()).code).toBe(1007);
      await svc.publish({ channel: 'execution.8', event: { type: 'log_entry', message: 'still here' } });
      expect(await bystander.next('log_entry')).toMatchObject({ message: 'still here' });
      bystander.close();
    });
  });

  describe('publish API', () => {
    const post = (body: string, auth?: string): Promise<Response> =>
      fetch(`${svc.url}/api/v1/publish`, { method: 'POST', headers: { 'content-type': 'application/json', ...(auth === undefined ? {} : { authorization: auth }) }, body });

    it('refuses a missing or wrong key with 401', async () => {
      expect((await post('{}')).status).toBe(401);
      expect((await post('{}', 'Bearer wrong-key-xxxxx')).status).toBe(401);
    });

    it.each([
      ['not JSON', '{nope', /not valid JSON/],
      ['no channel', '{"event":{"type":"x"}}', /channel/],
      ['a bad channel', '{"channel":"execution.abc","event":{"type":"x"}}', /channel/],
      ['no type', '{"channel":"system","event":{"a":1}}', /event\.type/],
      ['an empty list', '[]', /./],
    ])('answers 400 with the reason for %s', async (_n, body, reason) => {
      const res = await post(body, 'Bearer test-publish-key-0123');
      expect(res.status).toBe(400);
      expect(((await res.json()) as { message: string }).message).toMatch(reason);
    });

    it('answers 413 to a body over the limit', async () => {
      const res = await post(JSON.stringify({ channel: 'system', event: { type: 'x', pad: 'y'.repeat(2_000_000) } }), 'Bearer test-publish-key-0123');
      expect(res.status).toBe(413);
    });
  });

});

describe('the first frames of a socket', () => {
  let svc: Svc;
  const token = mintToken({ userId: 8 });
  beforeAll(async () => {
    // The smallest send bound: the frames written in the upgrade's turn (connection, recovery, replayed events)
    // wait together in the corked socket, several times this many bytes.
    svc = await startService({ WS_SEND_BUFFER_BYTES: '1024' });
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  it('delivers a resume larger than WS_SEND_BUFFER_BYTES to a client that reads, without closing it 4008', async () => {
    const live = await TestClient.connect(svc.ws(`/ws/execution/91?token=${token}`));
    await live.next('connection');
    await svc.publish({ channel: 'execution.91', event: { type: 'marker' } });
    const marker = await live.next('marker');
    const events = Array.from({ length: 20 }, (_, i) => ({ channel: 'execution.91', event: { type: 'log_entry', line: i, text: 'x'.repeat(200) } }));
    await svc.publish(events);
    await live.collect((f) => f.type === 'log_entry', 20);
    const resumed = await TestClient.connect(svc.ws(`/ws/execution/91?token=${token}&since=${String(marker.position)}`));
    expect(await resumed.next('recovery')).toMatchObject({ recovered: true, missed: 20 });
    const replayed = await resumed.collect((f) => f.type === 'log_entry', 20);
    expect(replayed.map((f) => f.line)).toEqual(events.map((e) => e.event.line));
    expect(resumed.closed).toBeUndefined();
    live.close();
    resumed.close();
  });
});

describe('AUTH_REQUIRED=false', () => {
  let svc: Svc;
  beforeAll(async () => {
    svc = await startService({ AUTH_REQUIRED: 'false' });
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  it('lets a socket without a token in as anonymous', async () => {
    const c = await TestClient.connect(svc.ws('/ws/monitor'));
    expect(await c.next()).toMatchObject({ type: 'connection', authenticated: false, user_id: null });
    c.close();
  });

  it('still refuses a bad token: never a silent fall-back to anonymous', async () => {
    const c = await TestClient.connect(svc.ws(`/ws/monitor?token=${mintToken({ expiresIn: -100 })}`));
    expect(await c.closedWith()).toEqual({ code: 4001, reason: 'token_expired' });
  });
});

/**
 * How AnsFlow's execution page reads an `execution_status` frame (frontend/src/hooks/useWebSocket.ts, which its
 * PipelineExecutionWebSocket hands the whole frame): the frame's own fields first, then an `execution` object's;
 * never `data`. Re-expressed here, field by field, to test the service against it.
 */
function readAsUseWebSocket(frame: Record<string, unknown>): Record<string, unknown> {
  const execData = (frame.execution ?? frame) as Record<string, unknown>;
  const pick = (key: string): unknown => frame[key] ?? execData[key];
  const steps = (frame.steps ?? execData.steps) as Record<string, unknown>[] | undefined;
  return {
    status: execData.status ?? frame.status,
    pipelineName: pick('pipeline_name'),
    totalSteps: pick('total_steps'),
    successfulSteps: pick('successful_steps'),
    failedSteps: pick('failed_steps'),
    message: pick('message'),
    steps: (steps ?? []).map((step, index) => ({
      stepId: step.id ?? index,
      stepName: step.name ?? step.step_name,
      status: step.status ?? 'pending',
      executionTime: step.execution_time,
      output: step.output ?? step.logs,
      errorMessage: step.error_message,
    })),
  };
}
