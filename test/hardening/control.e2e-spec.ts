import { freePort } from '../support/broker';
import { startService } from '../support/service';
import { mintToken, TEST_SECRET } from '../support/tokens';
import { TestClient, type Frame } from '../support/ws-client';
import { useDjangoProject } from '../support/django-project';
import { metric, type Svc } from './support';

/**
 * Stop / Restart (`control_command`) forwarded to a real Django: Debian's Django and simplejwt serving cancel and
 * retry views that behave like AnsFlow's (test/support/django-project.ts). Every outcome is asserted on the
 * `control_command_result` frame the socket receives, on both sockets that send commands: the execution page's
 * (`/ws/execution/{id}`, the id is the path's) and the layout's monitor (`execution_id` in the frame).
 */
interface Ids {
  alice: number;
  bob: number;
  executions: number[];
}

const POOL = 24;
const SETUP = `
import json
from django.contrib.auth import get_user_model
from realtime_testapp.models import Pipeline, PipelineExecution, Project
U = get_user_model()
alice = U.objects.create_user("alice", password="x")
bob = U.objects.create_user("bob", password="x")
project = Project.objects.create(name="alice's", owner=alice)
pipeline = Pipeline.objects.create(name="build", project=project)
ex = [PipelineExecution.objects.create(pipeline=pipeline, status="running").pk for _ in range(${POOL})]
print(json.dumps({"alice": alice.pk, "bob": bob.pk, "executions": ex}))
`;
const TIMEOUT_MS = 2500;
const MAX_PER_SECOND = 3;
/** Django is a Python process on a shared machine: answers get a generous deadline. */
const REPLY_MS = 20_000;

type SocketKind = 'execution' | 'monitor';

/** A socket of `kind` that will command execution `id`; the token is alice's unless said otherwise. */
async function commander(
  svc: Svc,
  kind: SocketKind,
  id: number,
  token: string | undefined,
): Promise<{ c: TestClient; command: (command: unknown, extra?: Record<string, unknown>) => void }> {
  const query = token === undefined ? '' : `?token=${token}`;
  const c = await TestClient.connect(svc.ws(kind === 'execution' ? `/ws/execution/${id}${query}` : `/ws/monitor${query}`));
  await c.next('connection', REPLY_MS);
  const command = (cmd: unknown, extra: Record<string, unknown> = {}): void =>
    c.send({ type: 'control_command', command: cmd, ...(kind === 'monitor' ? { execution_id: id } : {}), ...extra });
  return { c, command };
}

describe('control_command against the real Django (cancel / retry as the socket user)', () => {
  const django = useDjangoProject<Ids>(TEST_SECRET, SETUP);
  let svc: Svc;
  let next = 0;
  /** A fresh execution of alice's project, in `status`. */
  const execution = async (status: string): Promise<number> => {
    const id = django.ids.executions[next++];
    if (id === undefined) throw new Error('the pool of executions is exhausted: raise POOL');
    await django.project.admin({ status: [id, status] });
    return id;
  };
  const calls = async (): Promise<number> => (await django.project.admin({})).length;

  beforeAll(async () => {
    // AUTH_REQUIRED=false so that an anonymous socket exists to be refused.
    svc = await startService({
      AUTH_REQUIRED: 'false',
      DJANGO_API_URL: django.project.baseUrl,
      CONTROL_TIMEOUT_MS: String(TIMEOUT_MS),
      CONTROL_MAX_PER_SECOND: String(MAX_PER_SECOND),
    });
  });
  afterAll(async () => {
    await svc?.shutdown();
  });

  describe.each<SocketKind>(['execution', 'monitor'])('on the %s socket', (kind) => {
    it('stop on a running execution: Django cancels it (200), with the socket user’s token', async () => {
      const id = await execution('running');
      const token = mintToken({ userId: django.ids.alice });
      const { c, command } = await commander(svc, kind, id, token);
      command('stop');
      expect(await c.next('control_command_result', REPLY_MS)).toMatchObject({
        command: 'stop',
        execution_id: id,
        ok: true,
        status: 200,
        message: 'Pipeline execution cancelled successfully',
      });
      const call = (await django.project.admin({})).filter((x) => x.execution === id);
      expect(call).toEqual([{ execution: id, action: 'cancel', authorization: `Bearer ${token}` }]);
      c.close();
    });

    it('stop on a finished execution: Django’s 400 is relayed with its error', async () => {
      const id = await execution('success');
      const { c, command } = await commander(svc, kind, id, mintToken({ userId: django.ids.alice }));
      command('stop');
      const result = await c.next('control_command_result', REPLY_MS);
      expect(result).toMatchObject({ command: 'stop', execution_id: id, ok: false, status: 400, error: 'Cannot cancel execution with status "success"' });
      expect(result).not.toHaveProperty('code');
      c.close();
    });

    it('restart on a failed execution: Django retries it (201) and the new execution’s id comes back', async () => {
      const id = await execution('failed');
      const { c, command } = await commander(svc, kind, id, mintToken({ userId: django.ids.alice }));
      command('restart');
      const result = await c.next('control_command_result', REPLY_MS);
      expect(result).toMatchObject({ command: 'restart', execution_id: id, ok: true, status: 201, message: 'Pipeline execution retried successfully' });
      expect(typeof result.new_execution_id).toBe('number');
      expect(result.new_execution_id).toBeGreaterThan(Math.max(...django.ids.executions));
      c.close();
    });

    it('a user Django refuses: its 403 is relayed, the execution keeps running', async () => {
      const id = await execution('running');
      const { c, command } = await commander(svc, kind, id, mintToken({ userId: django.ids.bob }));
      command('stop');
      expect(await c.next('control_command_result', REPLY_MS)).toMatchObject({
        command: 'stop',
        execution_id: id,
        ok: false,
        status: 403,
        error: 'You do not have permission to perform this action.',
      });
      // Alice can still stop it: bob's attempt changed nothing.
      const alice = await commander(svc, kind, id, mintToken({ userId: django.ids.alice }));
      alice.command('stop');
      expect(await alice.c.next('control_command_result', REPLY_MS)).toMatchObject({ ok: true, status: 200 });
      c.close();
      alice.c.close();
    });

    it('an anonymous socket is answered authentication_required, and Django is not called', async () => {
      const id = await execution('running');
      const before = await calls();
      const { c, command } = await commander(svc, kind, id, undefined);
      command('stop');
      expect(await c.next('control_command_result', REPLY_MS)).toMatchObject({
        command: 'stop',
        execution_id: id,
        ok: false,
        status: null,
        code: 'authentication_required',
      });
      expect(await calls()).toBe(before);
      c.close();
    });

    it('a slow Django past CONTROL_TIMEOUT_MS is answered django_unavailable', async () => {
      const id = await execution('running');
      await django.project.admin({ slow: [id, (TIMEOUT_MS * 3) / 1000] });
      const { c, command } = await commander(svc, kind, id, mintToken({ userId: django.ids.alice }));
      command('stop');
      expect(await c.next('control_command_result', REPLY_MS)).toMatchObject({
        command: 'stop',
        execution_id: id,
        ok: false,
        status: null,
        code: 'django_unavailable',
      });
      c.close();
    });

    it('a flood of commands: past CONTROL_MAX_PER_SECOND each is answered rate_limited and never reaches Django', async () => {
      const id = await execution('success');
      const { c, command } = await commander(svc, kind, id, mintToken({ userId: django.ids.alice }));
      const before = await calls();
      const n = MAX_PER_SECOND * 4;
      for (let i = 0; i < n; i++) command('stop');
      const results = await c.collect((f) => f.type === 'control_command_result', n, REPLY_MS);
      const limited = results.filter((f) => f.code === 'rate_limited');
      const forwarded = results.filter((f) => f.status !== null);
      expect(limited.length).toBeGreaterThanOrEqual(1);
      expect(limited.length + forwarded.length).toBe(n);
      expect(forwarded.every((f) => f.status === 400)).toBe(true);
      // Exactly the forwarded ones reached Django.
      expect((await calls()) - before).toBe(forwarded.length);
      expect(c.closed).toBeUndefined();
      c.close();
    });

    it('a malformed command is answered invalid_frame without calling Django', async () => {
      const id = await execution('running');
      const { c, command } = await commander(svc, kind, id, mintToken({ userId: django.ids.alice }));
      const before = await calls();
      command('pause');
      expect(await c.next('control_command_result', REPLY_MS)).toMatchObject({ command: 'pause', ok: false, status: null, code: 'invalid_frame' });
      // Monitor: no execution_id; execution: another execution than the path's.
      if (kind === 'monitor') c.send({ type: 'control_command', command: 'stop' });
      else command('stop', { execution_id: id + 1 });
      expect(await c.next('control_command_result', REPLY_MS)).toMatchObject({
        command: 'stop',
        execution_id: null,
        ok: false,
        status: null,
        code: 'invalid_frame',
      });
      expect(await calls()).toBe(before);
      c.close();
    });
  });

  it('after an auth refresh the command carries the new token', async () => {
    const id = await execution('running');
    const first = mintToken({ userId: django.ids.alice });
    const refreshed = mintToken({ userId: django.ids.alice, expiresIn: 7200 });
    const { c, command } = await commander(svc, 'execution', id, first);
    c.send({ type: 'auth', token: refreshed });
    await c.next('authenticated', REPLY_MS);
    command('stop');
    expect(await c.next('control_command_result', REPLY_MS)).toMatchObject({ ok: true, status: 200 });
    const seen = (await django.project.admin({})).filter((x) => x.execution === id).map((x) => x.authorization);
    expect(seen).toEqual([`Bearer ${refreshed}`]);
    c.close();
  });

  it('counts commands by command and outcome', async () => {
    const ok = await metric(svc, 'realtime_control_commands_total', { command: 'stop', outcome: 'ok' });
    const refused = await metric(svc, 'realtime_control_commands_total', { command: 'stop', outcome: 'django_refused' });
    const limited = await metric(svc, 'realtime_control_commands_total', { command: 'stop', outcome: 'rate_limited' });
    const restarted = await metric(svc, 'realtime_control_commands_total', { command: 'restart', outcome: 'ok' });
    // From the tests above: two stops that Django carried out on each socket, one after an auth refresh.
    expect(ok).toBe(5);
    expect(refused).toBeGreaterThanOrEqual(4);
    expect(limited).toBeGreaterThanOrEqual(2);
    expect(restarted).toBe(2);
    const text = await (await fetch(`${svc.url}/metrics`)).text();
    expect(text).not.toContain('Bearer');
  });

  describe('Django down', () => {
    let down: Svc;
    beforeAll(async () => {
      down = await startService({ DJANGO_API_URL: `http://127.0.0.1:${await freePort()}`, CONTROL_TIMEOUT_MS: String(TIMEOUT_MS) });
    });
    afterAll(async () => {
      await down?.shutdown();
    });

    it.each<SocketKind>(['execution', 'monitor'])('%s socket: Django unreachable is answered django_unavailable', async (kind) => {
      const { c, command } = await commander(down, kind, 5, mintToken({ userId: 1 }));
      command('restart');
      const result: Frame = await c.next('control_command_result', REPLY_MS);
      expect(result).toMatchObject({ command: 'restart', execution_id: 5, ok: false, status: null, code: 'django_unavailable' });
      c.close();
    });
  });
});
