/**
 * The container image, built from a clean clone of the repository with the Dockerfile as shipped, and run.
 *
 * No Docker engine runs here, and no registry but npm's is reachable: podman (Debian's) builds the Dockerfile
 * against a STAND-IN for `node:20-bookworm-slim` (Debian bookworm minbase + this machine's Node 20 + user `node`
 * uid 1000, made by test/support/standin-node-image.sh), not the official image. See test/support/podman-image.sh
 * for what podman needs on this machine. The container uses the host network to reach the machine's RabbitMQ.
 *
 * Skipped, with the reason printed, where podman cannot run (not installed, not root); REQUIRE_IMAGE_TEST=1 (set
 * by .ci/run) turns the skip into a failure. The build takes minutes on a busy machine: the suite prints its times.
 */
import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from './support/broker';
import { deleteBrokerObjects, Publisher, RABBITMQ_URL } from './support/cluster';
import { mintToken, TEST_SECRET } from './support/tokens';
import { TestClient, type Frame } from './support/ws-client';

const ROOT = path.resolve(__dirname, '..');
const TAG = 'localhost/ansflow-realtime:test';

interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs = 60_000): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1;
      resolve({ code, stdout, stderr: err !== null && code === -1 ? `${stderr}${err.message}` : stderr, ms: Date.now() - started });
    });
  });
}

/** Why the image cannot be built here, or undefined when it can. */
function whyNotRunnable(): string | undefined {
  if (process.getuid?.() !== 0) return 'the stand-in base image is made with debootstrap, which needs root';
  for (const [tool, pkg] of [
    ['podman', 'podman'],
    ['runc', 'runc'],
    ['debootstrap', 'debootstrap'],
  ]) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' });
    } catch {
      return `${tool} is not installed (Debian package ${pkg}; .ci/run installs it)`;
    }
  }
  return undefined;
}

const notRunnable = whyNotRunnable();
if (notRunnable !== undefined && process.env.REQUIRE_IMAGE_TEST === '1') {
  throw new Error(`REQUIRE_IMAGE_TEST=1 but the image cannot be built here: ${notRunnable}`);
}
if (notRunnable !== undefined) {
  console.warn(`SKIPPED test/image.e2e-spec.ts (container image): ${notRunnable}`);
}
const describeImage = notRunnable === undefined ? describe : describe.skip;

/** Host pid of the service process: the only child of the container's PID 1 (tini). */
function servicePid(tiniPid: number): number {
  const children = fs.readFileSync(`/proc/${tiniPid}/task/${tiniPid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean);
  if (children.length !== 1) throw new Error(`expected one child of tini (${tiniPid}), found [${children.join(' ')}]`);
  return Number(children[0]);
}

function uidOf(pid: number): number {
  const m = /^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no Uid line in /proc/${pid}/status`);
  return Number(m[1]);
}

async function waitForStatus(url: string, status: number, ms: number, logs: () => Promise<string>): Promise<void> {
  const end = Date.now() + ms;
  let last = 'no answer';
  while (Date.now() < end) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      if (res.status === status) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not answer ${status} within ${ms} ms (last: ${last})\n--- container logs ---\n${await logs()}`);
}

describeImage('container image (podman, stand-in node:20-bookworm-slim base)', () => {
  const dir = notRunnable === undefined ? fs.mkdtempSync(path.join(os.tmpdir(), 'ansflow-image-')) : '';
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CONTAINERS_CONF: path.join(dir, 'podman', 'containers.conf'),
    CONTAINERS_STORAGE_CONF: path.join(dir, 'podman', 'storage.conf'),
  };
  const podman = (args: string[], timeoutMs = 60_000): Promise<RunResult> => run('podman', args, env, timeoutMs);
  const exchange = `test.image.${randomBytes(4).toString('hex')}`;
  const name = `ansflow-image-test-${randomBytes(4).toString('hex')}`;
  const clients: TestClient[] = [];
  let publisher: Publisher | undefined;
  let port = 0;
  let built = false;
  const logs = async (): Promise<string> => {
    const r = await podman(['logs', '--tail', '40', name]);
    return `${r.stdout}${r.stderr}`;
  };

  beforeAll(async () => {
    const started = Date.now();
    // A clean clone of what is committed: the build sees no untracked file, no node_modules, no dist.
    const clone = path.join(dir, 'clone');
    const cloned = await run('git', ['clone', '--quiet', '--no-hardlinks', ROOT, clone], process.env);
    if (cloned.code !== 0) throw new Error(`git clone failed: ${cloned.stderr}`);
    const build = await run(path.join(ROOT, 'test/support/podman-image.sh'), [path.join(dir, 'podman'), clone, TAG], process.env, 1_800_000);
    if (build.code !== 0) throw new Error(`image build failed (${build.code}):\n${build.stdout.slice(-6000)}\n${build.stderr.slice(-4000)}`);
    built = true;
    const mb = async (image: string): Promise<string> =>
      (Number((await podman(['image', 'inspect', image, '--format', '{{.Size}}'])).stdout.trim()) / 1e6).toFixed(0);
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    console.log(
      `image ${TAG}: ${await mb(TAG)} MB, on a STAND-IN node:20-bookworm-slim of ${await mb('node:20-bookworm-slim')} MB (base, clone and build: ${seconds} s)`,
    );

    port = await freePort();
    const containerEnv = {
      PORT: String(port),
      HOST: '127.0.0.1',
      RABBITMQ_URL,
      RABBITMQ_EXCHANGE: exchange,
      DJANGO_SECRET_KEY: TEST_SECRET,
      PUBLISH_API_KEY: 'image-test-publish-key',
      SHUTDOWN_TIMEOUT_MS: '10000',
    };
    // The host network reaches the machine's RabbitMQ on 127.0.0.1 and exposes the port without a bridge.
    const started2 = await podman([
      'run',
      '--detach',
      '--name',
      name,
      '--network',
      'host',
      ...Object.entries(containerEnv).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
      TAG,
    ]);
    if (started2.code !== 0) throw new Error(`podman run failed: ${started2.stderr}`);
    await waitForStatus(`http://127.0.0.1:${port}/health/ready`, 200, 60_000, logs);
  }, 1_900_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await publisher?.close();
    if (notRunnable === undefined) {
      await podman(['rm', '--force', '--time', '0', name]);
      // Unmounts and removes everything in this suite's own storage (and only there: CONTAINERS_STORAGE_CONF).
      await podman(['system', 'reset', '--force'], 120_000);
      fs.rmSync(dir, { recursive: true, force: true });
      await deleteBrokerObjects(exchange).catch(() => undefined);
    }
  }, 180_000);

  it('keeps the HEALTHCHECK (docker format) and runs as the image user', async () => {
    expect(built).toBe(true);
    const r = await podman(['image', 'inspect', TAG, '--format', '{{json .Config.Healthcheck}} {{.Config.User}}']);
    expect(r.stdout).toContain('/health/live');
    expect(r.stdout).toContain('AbortSignal.timeout');
    expect(r.stdout.trim().endsWith(' node')).toBe(true);
  });

  it('serves /health/live and /health from the container, connected to the machine RabbitMQ', async () => {
    const live = await fetch(`http://127.0.0.1:${port}/health/live`);
    expect(live.status).toBe(200);
    const health = await fetch(`http://127.0.0.1:${port}/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ status: 'healthy', environment: 'production', checks: { broker: { status: 'up' } } });
  });

  it('runs the service as uid 1000, unable to write its own files', async () => {
    const inspect = await podman(['inspect', name, '--format', '{{.State.Pid}}']);
    const tini = Number(inspect.stdout.trim());
    expect(fs.readFileSync(`/proc/${tini}/cmdline`, 'utf8').split('\0')[0]).toBe('/usr/bin/tini');
    const pid = servicePid(tini);
    expect(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, 2)).toEqual(['node', 'dist/main']);
    expect(uidOf(pid)).toBe(1000);
    // `podman exec` runs as the image's USER, as the service does.
    const attempt = await podman([
      'exec',
      name,
      'sh',
      '-c',
      'id -u; for f in /app/dist/main.js /app/package.json /app/node_modules/ws/package.json; do if echo x >> "$f"; then echo "WROTE $f"; fi; done; touch /app/dist/new 2>/dev/null && echo "CREATED /app/dist/new"; true',
    ]);
    expect(attempt.stdout.trim().split('\n')).toEqual(['1000']);
    expect(attempt.stderr).toMatch(/Permission denied/);
  });

  it('delivers an event published to the exchange to a socket on the container', async () => {
    const token = mintToken({ userId: 1 });
    const client = await TestClient.connect(`ws://127.0.0.1:${port}/ws/execution/4242?token=${token}`);
    clients.push(client);
    await client.next('execution_status', 15_000);
    // Connected only now: the build takes minutes, and a broker connection idle that long is one more thing to lose.
    publisher = await Publisher.connect(exchange);
    await publisher.publish('execution.4242', { type: 'log_entry', execution_id: 4242, seq: 1, level: 'info', message: 'from the image test' });
    const [event] = await client.collect((f: Frame) => f.channel === 'execution.4242' && f.seq === 1, 1, 15_000);
    expect(event).toMatchObject({ type: 'log_entry', message: 'from the image test' });
    client.close();
  });

  it('passes its HEALTHCHECK, and fails it while the service process is stopped (SIGSTOP)', async () => {
    // One probe may miss podman's 3 s --timeout on a loaded machine (a fresh node process starts for each), as the
    // engine's --retries=3 allows; a passing health check is one that passes within a few attempts.
    const passes = async (): Promise<RunResult> => {
      let last: RunResult | undefined;
      for (let attempt = 0; attempt < 10; attempt++) {
        last = await podman(['healthcheck', 'run', name]);
        if (last.code === 0) break;
      }
      return last!;
    };
    const ok = await passes();
    expect({ code: ok.code, stderr: ok.stderr.replace(/.*systemd.*\n?/g, '') }).toEqual({ code: 0, stderr: '' });

    const tini = Number((await podman(['inspect', name, '--format', '{{.State.Pid}}'])).stdout.trim());
    const pid = servicePid(tini);
    const probe = JSON.parse((await podman(['image', 'inspect', TAG, '--format', '{{json .Config.Healthcheck.Test}}'])).stdout) as string[];
    expect(probe[0]).toBe('CMD');
    process.kill(pid, 'SIGSTOP');
    try {
      const failed = await podman(['healthcheck', 'run', name]);
      expect(failed.code).not.toBe(0);
      // The probe itself gives up (AbortSignal.timeout) instead of hanging, whatever the engine's own timeout.
      const direct = await podman(['exec', name, ...probe.slice(1)], 30_000);
      // (a hung probe would be killed by run()'s 30 s timeout: code -1, not the probe's own exit 1)
      expect(direct.code).toBe(1);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    // Resumed, the service answers again. (podman 4.3's `healthcheck run` right after the stop/resume has been seen
    // to keep exiting 125 for a minute and more here while the service answered: logged, not asserted.)
    await waitForStatus(`http://127.0.0.1:${port}/health/live`, 200, 30_000, logs);
    const again = await podman(['healthcheck', 'run', name]);
    console.log(`healthcheck after SIGCONT: exit ${again.code} ${again.stderr.replace(/.*systemd.*\n?/g, '').trim()}`);
  }, 180_000);

  it('on SIGTERM (podman stop) closes an open socket with 1001 and exits 0 within the grace period', async () => {
    const token = mintToken({ userId: 1 });
    const client = await TestClient.connect(`ws://127.0.0.1:${port}/ws/execution/4243?token=${token}`);
    clients.push(client);
    await client.next('execution_status', 15_000);
    // 15 s grace, as the compose file's stop_grace_period: past it podman would SIGKILL (exit 137), so exit 0
    // means the service finished its own shutdown within the grace period.
    const stop = await podman(['stop', '--time', '15', name], 60_000);
    expect(stop.code).toBe(0);
    await expect(client.closedWith(10_000)).resolves.toEqual({ code: 1001, reason: 'server_shutting_down' });
    const state = await podman(['inspect', name, '--format', '{{.State.ExitCode}} {{.State.Status}}']);
    expect(state.stdout.trim()).toBe('0 exited');
    expect(await logs()).toContain('shutdown complete');
  });
});
