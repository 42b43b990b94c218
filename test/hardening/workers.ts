import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export type WorkerReply = Record<string, unknown> & { cmd: string };

/** A forked conn-worker.js: many client sockets in another process, driven by request/reply over IPC. */
export class ConnWorker {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<string, (r: WorkerReply) => void>();

  constructor() {
    this.child = fork(join(__dirname, 'conn-worker.js'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.child.on('message', (m: WorkerReply) => {
      const w = this.waiting.get(m.cmd);
      this.waiting.delete(m.cmd);
      w?.(m);
    });
  }

  request(cmd: string, args: Record<string, unknown> = {}, timeoutMs = 60_000): Promise<WorkerReply> {
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`worker ${cmd} timed out`)), timeoutMs);
      this.waiting.set(cmd, (r) => {
        clearTimeout(t);
        resolve(r);
      });
      this.child.send({ cmd, ...args });
    });
  }

  async exit(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const gone = new Promise((r) => this.child.once('exit', r));
    await this.request('exit', {}, 5000).catch(() => this.child.kill('SIGKILL'));
    await gone;
  }
}
