import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import jwt from 'jsonwebtoken';
import { ensureBuilt } from './support/cluster';

/**
 * The README's quick start, run as written (issue 14, point 4): the blocks marked `<!-- quickstart:NAME -->` are
 * read from README.md, so the README and this test cannot drift. Three changes, and only these:
 * - `npm ci` is skipped: the dependencies of this checkout are installed already;
 * - `npm start` (nest build, then node dist/main) runs the compiled service directly: the test suite has built it
 *   (test/support/cluster.ts compiles src when it is newer), and rebuilding dist/ here would cost a minute;
 * - port 8001 becomes a free port (PORT for the service and the token command, the URL for curl), since 8001 may be
 *   taken on a shared machine.
 * Each block runs in its own bash (one per terminal) with only PATH, HOME and PORT from outside.
 */
jest.setTimeout(120_000);

const ROOT = join(__dirname, '..');

function block(readme: string, name: string): string {
  const m = new RegExp(`<!-- quickstart:${name}\\b[^>]*-->\\s*\`\`\`sh\\n([\\s\\S]*?)\`\`\``).exec(readme);
  if (m === null) throw new Error(`README.md has no quickstart:${name} block`);
  return m[1];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
}

/** A terminal: one bash running a block, its output kept, killed with its whole process group at the end. */
class Terminal {
  output = '';
  readonly proc: ChildProcess;
  readonly exited: Promise<number | null>;

  constructor(
    readonly name: string,
    script: string,
    env: Record<string, string>,
  ) {
    this.proc = spawn('bash', ['-e', '-c', script], { cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc.stdout?.on('data', (d: Buffer) => (this.output += d.toString('utf8')));
    this.proc.stderr?.on('data', (d: Buffer) => (this.output += d.toString('utf8')));
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
  }

  async waitFor(pattern: RegExp, ms = 60_000): Promise<RegExpExecArray> {
    const deadline = Date.now() + ms;
    for (;;) {
      const m = pattern.exec(this.output);
      if (m !== null) return m;
      if (this.proc.exitCode !== null) throw new Error(`${this.name} exited (${this.proc.exitCode}) before printing ${pattern}:\n${this.output}`);
      if (Date.now() > deadline) throw new Error(`${this.name} did not print ${pattern} within ${ms} ms:\n${this.output}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  kill(): void {
    try {
      if (this.proc.pid !== undefined && this.proc.exitCode === null) process.kill(-this.proc.pid, 'SIGTERM');
    } catch {
      // Already gone.
    }
  }
}

describe('README quick start', () => {
  const terminals: Terminal[] = [];

  afterAll(async () => {
    for (const t of terminals) t.kill();
    await Promise.all(terminals.map((t) => t.exited));
  });

  it('goes from the commands it shows to a live event on a socket', async () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const main = ensureBuilt();
    const port = await freePort();
    const env = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', PORT: String(port) };
    const adapt = (script: string): string =>
      script
        .split('\n')
        .filter((line) => !/^npm ci\b/.test(line.trim()))
        .map((line) => line.replace(/^npm start\b/, `node ${main}`).replace(/\b8001\b/g, String(port)))
        .join('\n');

    const service = new Terminal('service', adapt(block(readme, 'service')), env);
    terminals.push(service);
    await service.waitFor(/ansflow-realtime listening/);
    // In development it says how to get a token.
    await service.waitFor(/get a token with `npm run -s token -- --user 1/);

    const listen = new Terminal('listen', adapt(block(readme, 'listen')), env);
    terminals.push(listen);
    // The token command's two lines, then the socket's first frames.
    const [, token] = await listen.waitFor(/^(ey[\w-]+\.[\w-]+\.[\w-]+)\n/m);
    await listen.waitFor(new RegExp(`^ws://127\\.0\\.0\\.1:${port}/ws/execution/1\\?token=ey`, 'm'));
    const hello = JSON.parse((await listen.waitFor(/^\{"type":"connection".*$/m))[0]) as Record<string, unknown>;
    expect(hello).toMatchObject({ authenticated: true, endpoint: 'execution' });
    expect(String(hello.user_id)).toBe('1');
    expect(jwt.decode(token)).toMatchObject({ token_type: 'access', user_id: 1 });

    const publish = new Terminal('publish', adapt(block(readme, 'publish')), env);
    terminals.push(publish);
    expect(await publish.exited).toBe(0);
    expect(publish.output).toMatch(/"accepted":1/);

    const event = JSON.parse((await listen.waitFor(/^\{"type":"log_entry".*$/m))[0]) as Record<string, unknown>;
    expect(event).toMatchObject({ type: 'log_entry', execution_id: 1, message: 'hello', channel: 'execution.1', position: expect.any(Number) });
  });
});

describe('npm run token', () => {
  const run = (args: string[], env: Record<string, string>): ReturnType<typeof spawnSync> =>
    spawnSync('npm', ['run', '-s', 'token', '--', ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      encoding: 'utf8',
    });

  it('mints a simplejwt access token with DJANGO_SECRET_KEY (header, claims, lifetime) and a ws:// URL on PORT', () => {
    const key = 'some-django-secret-key-0123456789';
    const r = run(['--user', '42', '--ttl', '600', '--endpoint', 'pipeline/7'], { DJANGO_SECRET_KEY: key, PORT: '9123' });
    expect(r.status).toBe(0);
    const [token, url] = String(r.stdout).trim().split('\n');
    expect(url).toBe(`ws://127.0.0.1:9123/ws/pipeline/7?token=${token}`);
    const decoded = jwt.verify(token, key, { algorithms: ['HS256'], complete: true });
    expect(decoded.header).toEqual({ alg: 'HS256', typ: 'JWT' });
    const claims = decoded.payload as Record<string, unknown>;
    expect(Object.keys(claims)).toEqual(['token_type', 'exp', 'iat', 'jti', 'user_id']);
    expect(claims).toMatchObject({ token_type: 'access', user_id: 42 });
    expect((claims.exp as number) - (claims.iat as number)).toBe(600);
    expect(claims.jti).toMatch(/^[0-9a-f]{32}$/);
  });

  it('is accepted by djangorestframework-simplejwt itself, whose own access tokens carry the same header and claims', () => {
    const key = 'some-django-secret-key-0123456789';
    const minted = run(['--user', '7'], { DJANGO_SECRET_KEY: key });
    const token = String(minted.stdout).split('\n')[0];
    // Debian's Django and simplejwt (.ci/run installs them): AccessToken(token) verifies signature, exp and token_type.
    const script = [
      'import json, sys, django, jwt',
      'from django.conf import settings',
      "settings.configure(SECRET_KEY=sys.argv[1], INSTALLED_APPS=['django.contrib.contenttypes', 'django.contrib.auth'], USE_TZ=True)",
      'django.setup()',
      'from rest_framework_simplejwt.tokens import AccessToken',
      'theirs = AccessToken()',
      "theirs['user_id'] = 7",
      "print(json.dumps({'ours': AccessToken(sys.argv[2]).payload, 'keys': list(theirs.payload), 'header': jwt.get_unverified_header(str(theirs))}))",
    ].join('\n');
    const py = (secret: string): ReturnType<typeof spawnSync> => spawnSync('/usr/bin/python3', ['-c', script, secret, token], { encoding: 'utf8' });
    const ok = py(key);
    expect(ok.stderr).toBe('');
    const out = JSON.parse(String(ok.stdout)) as { ours: Record<string, unknown>; keys: string[]; header: Record<string, unknown> };
    expect(out.ours).toMatchObject({ token_type: 'access', user_id: 7 });
    expect(Object.keys(out.ours)).toEqual(out.keys);
    expect(jwt.decode(token, { complete: true })?.header).toEqual(out.header);
    expect(String(py('another-key-0123456789').stderr)).toMatch(/TokenError: Token is invalid or expired/);
  });

  it('says what is missing instead of minting a token nobody verifies', () => {
    const noKey = run(['--user', '1'], {});
    expect(noKey.status).toBe(2);
    expect(String(noKey.stderr)).toMatch(/DJANGO_SECRET_KEY is not set/);
    const noUser = run([], { DJANGO_SECRET_KEY: 'k'.repeat(32) });
    expect(noUser.status).toBe(2);
    expect(String(noUser.stderr)).toMatch(/--user is required/);
    const rsa = run(['--user', '1'], { DJANGO_SECRET_KEY: 'k'.repeat(32), JWT_ALGORITHM: 'RS256' });
    expect(rsa.status).toBe(2);
    expect(String(rsa.stderr)).toMatch(/private key/);
  });
});
