import type { IncomingHttpHeaders } from 'node:http';
import WebSocket from 'ws';

export type Frame = Record<string, unknown> & { type: string };

/**
 * A real WebSocket client that records every frame and close, with waits that have deadlines (no sleeps).
 */
export class TestClient {
  readonly frames: Frame[] = [];
  closed: { code: number; reason: string } | undefined;
  /** The headers of the server's 101 response (e.g. X-Ansflow-Worker with WORKERS > 1). */
  upgradeHeaders: IncomingHttpHeaders = {};
  private cursor = 0;
  private waiters: (() => void)[] = [];

  private constructor(readonly ws: WebSocket) {
    ws.once('upgrade', (res) => (this.upgradeHeaders = res.headers));
    ws.on('message', (data: WebSocket.RawData) => {
      this.frames.push(JSON.parse(Buffer.isBuffer(data) ? data.toString('utf8') : Buffer.concat(Array.isArray(data) ? data : [Buffer.from(data)]).toString('utf8')) as Frame);
      this.wake();
    });
    ws.on('close', (code: number, reason: Buffer) => {
      this.closed = { code, reason: reason.toString() };
      this.wake();
    });
    ws.on('error', () => this.wake());
  }

  static connect(url: string, options: WebSocket.ClientOptions & { protocols?: string[] } = {}): Promise<TestClient> {
    const { protocols, ...rest } = options;
    const ws = new WebSocket(url, protocols, rest);
    const client = new TestClient(ws);
    return new Promise((resolve, reject) => {
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
      ws.once('error', reject);
    });
  }

  send(frame: unknown): void {
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The next frame not yet taken (optionally of a type, skipping others), within `ms`. */
  async next(type?: string, ms = 5000): Promise<Frame> {
    const deadline = Date.now() + ms;
    for (;;) {
      while (this.cursor < this.frames.length) {
        const f = this.frames[this.cursor++];
        if (type === undefined || f.type === type) return f;
      }
      if (this.closed !== undefined) throw new Error(`closed ${this.closed.code} ${this.closed.reason} while waiting for ${type ?? 'a frame'}`);
      await this.wait(deadline, `frame ${type ?? ''}`);
    }
  }

  /** Wait until `n` frames matching `pred` have arrived in total. */
  async collect(pred: (f: Frame) => boolean, n: number, ms = 10000): Promise<Frame[]> {
    const deadline = Date.now() + ms;
    for (;;) {
      const got = this.frames.filter(pred);
      if (got.length >= n) return got;
      if (this.closed !== undefined) throw new Error(`closed ${this.closed.code} ${this.closed.reason} with ${got.length}/${n} frames`);
      await this.wait(deadline, `${n} frames (have ${got.length})`);
    }
  }

  async closedWith(ms = 8000): Promise<{ code: number; reason: string }> {
    const deadline = Date.now() + ms;
    while (this.closed === undefined) await this.wait(deadline, 'close');
    return this.closed;
  }

  close(): void {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close();
  }

  private wait(deadline: number, what: string): Promise<void> {
    const left = deadline - Date.now();
    if (left <= 0) return Promise.reject(new Error(`timed out waiting for ${what}; frames: ${JSON.stringify(this.frames.slice(-5))}`));
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      }, left);
      const done = (): void => {
        clearTimeout(t);
        resolve();
      };
      this.waiters.push(done);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }
}
