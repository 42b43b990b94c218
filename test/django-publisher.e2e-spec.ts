/**
 * The Django-side publisher (integrations/django) against the real RabbitMQ and the real service: a whole simulated
 * pipeline run published by `examples/simulate_run.py` (Debian's /usr/bin/python3 with python3-pika) reaches the
 * WebSocket clients of its execution, pipeline, project and user in publish order, every field equal.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { deleteBrokerObjects, RABBITMQ_URL, uniqueExchange, waitForStatus } from './support/broker';
import { startService } from './support/service';
import { mintToken } from './support/tokens';
import { TestClient, type Frame } from './support/ws-client';

type Svc = Awaited<ReturnType<typeof startService>>;

interface Line {
  seq: number;
  channel: string;
  type: string;
  message_id: string;
  event: Record<string, unknown> & { type: string };
}

const PYTHON = '/usr/bin/python3';
const SCRIPT = path.resolve(__dirname, '..', 'integrations/django/examples/simulate_run.py');

function simulateRun(args: string[]): Promise<{ code: number | null; lines: Line[]; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(PYTHON, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString('utf8')));
    child.stderr.on('data', (b: Buffer) => (err += b.toString('utf8')));
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`simulate_run did not finish within 60 s; stderr: ${err}`));
    }, 60_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(t);
      const lines = out
        .split('\n')
        .filter((l) => l.trim() !== '')
        .map((l) => JSON.parse(l) as Line);
      resolve({ code, lines, stderr: err });
    });
  });
}

describe('Django publisher (integrations/django) → RabbitMQ → service → WebSocket', () => {
  const ex = uniqueExchange('django');
  let svc: Svc;

  beforeAll(async () => {
    svc = await startService({ RABBITMQ_URL, RABBITMQ_EXCHANGE: ex });
    await waitForStatus(`${svc.url}/health/ready`, 200, 30_000);
  });
  afterAll(async () => {
    await svc?.shutdown();
    await deleteBrokerObjects(ex);
  });

  it('a whole simulated run reaches each socket in publish order with every field equal', async () => {
    const [execution, pipeline, project, user] = [4242, 77, 33, 9];
    const token = mintToken({ userId: user });
    const sockets: Record<string, TestClient> = {};
    for (const [channel, p] of [
      [`execution.${execution}`, `/ws/execution/${execution}`],
      [`pipeline.${pipeline}`, `/ws/pipeline/${pipeline}`],
      [`project.${project}`, `/ws/project/${project}`],
      [`user.${user}`, '/ws/system'],
    ] as const) {
      const c = await TestClient.connect(svc.ws(`${p}?token=${token}`));
      await c.next('connection');
      sockets[channel] = c;
    }

    const steps = 3;
    const logLines = 4;
    const run = await simulateRun([
      '--url',
      RABBITMQ_URL,
      '--exchange',
      ex,
      '--execution-id',
      String(execution),
      '--pipeline-id',
      String(pipeline),
      '--project-id',
      String(project),
      '--user-id',
      String(user),
      '--steps',
      String(steps),
      '--log-lines',
      String(logLines),
      '--delay',
      '0',
    ]);
    expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 0, stderr: '' });
    // As the README counts them: 2 + steps × (log_lines + 3) + 4, plus the user notification.
    expect(run.lines).toHaveLength(2 + steps * (logLines + 3) + 4 + 1);
    expect(run.lines.map((l) => l.seq)).toEqual(run.lines.map((_, i) => i));

    for (const [channel, c] of Object.entries(sockets)) {
      const sent = run.lines.filter((l) => l.channel === channel);
      expect(sent.length).toBeGreaterThan(0);
      const got = await c.collect((f: Frame) => f.channel === channel, sent.length, 20_000);
      // Exactly the run's events, in order, each with the publisher's fields unchanged plus channel and position.
      expect(got.map((f) => f.type)).toEqual(sent.map((l) => l.type));
      expect(got).toEqual(sent.map((l) => ({ ...l.event, channel, position: expect.any(Number) as number })));
      const positions = got.map((f) => f.position as number);
      expect([...positions].sort((a, b) => a - b)).toEqual(positions);
      expect(new Set(positions).size).toBe(positions.length);
    }
    // The execution socket also reads its user's channel: it got the notification too, and nothing else.
    const exec = sockets[`execution.${execution}`];
    await exec.collect((f) => f.channel === `user.${user}`, 1);
    const channelsSeen = [...new Set(exec.frames.filter((f) => typeof f.channel === 'string').map((f) => f.channel))];
    expect(channelsSeen.sort()).toEqual([`execution.${execution}`, `user.${user}`].sort());
    for (const c of Object.values(sockets)) c.close();
  });
});
