/**
 * Runs the built service (`node dist/main`) as a child process, for the demo and the end-to-end tests: the same
 * binary and start-up path as production, on a port of our choosing, and restartable on that same port.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';

/** The repository root: the nearest directory up from here whose package.json is this project's. */
export function repoRoot(from: string = __dirname): string {
  let dir = resolve(from);
  for (;;) {
    const manifest = join(dir, 'package.json');
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, 'utf8')) as { name?: string }).name === 'ansflow-realtime') {
      return dir;
    }
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`ansflow-realtime repository not found above ${from}`);
    dir = parent;
  }
}

/** A TCP port free right now (the OS picks it; we release it for the child to bind). */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address !== null ? resolvePort(address.port) : reject(new Error('no port'))));
    });
  });
}

export interface ServiceOptions {
  port: number;
  /** Environment of the service, on top of a minimal one (PATH, NODE_ENV, PORT, HOST). */
  env: Record<string, string>;
  /** Print the service's log lines (the demo does; tests keep them for failures). */
  echo?: boolean;
}

/** One service instance; `restart()` brings up a new process on the same port and environment. */
export class ServiceProcess {
  private child: ChildProcess | null = null;
  private output: string[] = [];

  constructor(private readonly options: ServiceOptions) {}

  get url(): string {
    return `http://127.0.0.1:${this.options.port}`;
  }

  get wsUrl(): string {
    return `ws://127.0.0.1:${this.options.port}`;
  }

  /** The last lines the service printed (for a test failure message). */
  get recentOutput(): string {
    return this.output.slice(-40).join('');
  }

  /** Start the process and resolve once `/health` answers 200 (or reject after `timeoutMs`). */
  async start(timeoutMs = 20_000): Promise<void> {
    const root = repoRoot();
    const main = join(root, 'dist', 'main.js');
    if (!existsSync(main)) throw new Error(`${main} missing: run \`npm run build\` first`);
    const child = spawn(process.execPath, [main], {
      cwd: root,
      env: { PATH: process.env.PATH ?? '', NODE_ENV: 'production', HOST: '127.0.0.1', ...this.options.env, PORT: String(this.options.port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    const keep = (chunk: Buffer): void => {
      const text = chunk.toString();
      this.output.push(text);
      if (this.output.length > 500) this.output.splice(0, 100);
      if (this.options.echo === true) process.stdout.write(text);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    const exited = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) =>
        reject(new Error(`service exited during start-up (code ${String(code)}, signal ${String(signal)}):\n${this.recentOutput}`)),
      ),
    );
    exited.catch(() => undefined); // only observed through the race below
    await Promise.race([this.waitHealthy(timeoutMs), exited]);
  }

  /** SIGTERM (the service's graceful path: sockets get 1001) and wait for the exit. */
  async stop(timeoutMs = 15_000): Promise<void> {
    const child = this.child;
    this.child = null;
    if (child === null || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  private async waitHealthy(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = 'no answer';
    while (Date.now() < deadline) {
      try {
        const response = await fetch(`${this.url}/health`, { signal: AbortSignal.timeout(1000) });
        if (response.status === 200) return;
        last = `HTTP ${response.status}`;
      } catch (error) {
        last = error instanceof Error ? error.message : String(error);
      }
      // Polling is the only signal a child gives that it listens; the interval bounds start-up detection lag.
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`service not healthy after ${timeoutMs} ms (${last}):\n${this.recentOutput}`);
  }
}
