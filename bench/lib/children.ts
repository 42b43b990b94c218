import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

/** A forked child (client worker or publisher) spoken to by request/reply over the IPC channel. */
export class Child<Command extends object, Reply extends { ev: string }> {
  private readonly proc: ChildProcess;
  private waiters: { ev: string; resolve: (r: Reply) => void; reject: (e: Error) => void }[] = [];
  /** Messages nobody waits for (e.g. progress reports) go here. */
  onUnsolicited: (r: Reply) => void = () => undefined;
  /** Settles when the child has said `ready` (it may do so before anyone asks). */
  readonly ready: Promise<void>;
  private markReady: () => void = () => undefined;

  constructor(script: string, name: string) {
    // The children are compiled next to this file's parent folder (bench/dist/lib → bench/dist).
    this.proc = fork(join(__dirname, '..', script), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.ready = new Promise((resolve) => (this.markReady = resolve));
    this.proc.on('message', (msg: Reply) => {
      if (msg.ev === 'ready') return this.markReady();
      const i = this.waiters.findIndex((w) => w.ev === msg.ev);
      if (i < 0) return this.onUnsolicited(msg);
      const [w] = this.waiters.splice(i, 1);
      w.resolve(msg);
    });
    this.proc.on('exit', (code, signal) => {
      const err = new Error(`${name} exited (${code ?? signal})`);
      for (const w of this.waiters.splice(0)) w.reject(err);
    });
  }

  get pid(): number {
    return this.proc.pid ?? -1;
  }

  /** Resolves with the next message of kind `ev` (register before sending, so a fast reply is not lost). */
  next<E extends Reply['ev']>(ev: E, timeoutMs = 600_000): Promise<Extract<Reply, { ev: E }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${ev}`)), timeoutMs);
      this.waiters.push({
        ev,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r as Extract<Reply, { ev: E }>);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
    });
  }

  send(cmd: Command): void {
    this.proc.send(cmd);
  }

  call<E extends Reply['ev']>(cmd: Command, ev: E, timeoutMs?: number): Promise<Extract<Reply, { ev: E }>> {
    const reply = this.next(ev, timeoutMs);
    this.send(cmd);
    return reply;
  }

  kill(): void {
    if (this.proc.exitCode === null) this.proc.kill('SIGKILL');
  }
}
