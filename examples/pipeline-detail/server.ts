/**
 * The demo's web server: serves the page, the built client, and `/token`, which mints access tokens the way
 * Django's simplejwt does (HS256 with the shared secret). It stands in for the AnsFlow backend, so it
 * listens on 127.0.0.1 only: anyone who can reach `/token` gets a token.
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { extname, join, normalize, sep } from 'node:path';
import { sign, verify } from 'jsonwebtoken';
import { repoRoot } from './service';

/** A simplejwt-shaped access token for `userId`, valid `ttlSeconds` (negative: already expired). */
export function mintToken(secret: string, userId = 1, ttlSeconds = 3600): string {
  const now = Math.floor(Date.now() / 1000);
  return sign({ token_type: 'access', exp: now + ttlSeconds, iat: now, jti: randomBytes(16).toString('hex'), user_id: userId }, secret, { algorithm: 'HS256' });
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.map': 'application/json',
  '.ts': 'text/plain; charset=utf-8',
  '.png': 'image/png',
};

export interface PageServerOptions {
  port: number;
  secret: string;
  /** Lifetime of tokens minted at `/token` (seconds). */
  tokenTtlSeconds?: number;
}

/** A stop or restart that reached the stand-in for Django's execution actions. */
export interface ControlRequest {
  executionId: number;
  action: 'cancel' | 'retry';
  userId: unknown;
}

const CONTROL_PATH = /^\/api\/v1\/cicd\/executions\/(\d+)\/(cancel|retry)\/$/;

/**
 * Emits `page` when the page itself is requested and `token` each time `/token` mints one (the tests count
 * refreshes with it). It also stands in for Django's `POST /api/v1/cicd/executions/{id}/cancel/` and `/retry/`
 * (point the service's DJANGO_API_URL here): it checks the bearer token, answers as AnsFlow does (200 / 201) and
 * emits `control` with a ControlRequest, so that the demo can play Django's part and stop or rerun the run.
 */
export class PageServer extends EventEmitter {
  private server: Server | null = null;
  private readonly root = repoRoot();
  tokensMinted = 0;

  constructor(private readonly options: PageServerOptions) {
    super();
  }

  get url(): string {
    return `http://127.0.0.1:${this.options.port}`;
  }

  start(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((error: unknown) => {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(error instanceof Error ? error.message : 'error');
      });
    });
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.options.port, '127.0.0.1', () => resolve());
    });
  }

  stop(): Promise<void> {
    const server = this.server;
    this.server = null;
    if (server === null) return Promise.resolve();
    server.closeAllConnections();
    return new Promise((resolve) => server.close(() => resolve()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    const control = CONTROL_PATH.exec(path);
    if (control !== null && req.method === 'POST') {
      this.control(req, res, Number(control[1]), control[2] === 'cancel' ? 'cancel' : 'retry');
      return;
    }
    if (path === '/token') {
      this.tokensMinted++;
      this.emit('token');
      const token = mintToken(this.options.secret, 1, this.options.tokenTtlSeconds ?? 3600);
      res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify({ token }));
      return;
    }
    const file = this.resolve(path);
    if (file === null) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
      return;
    }
    let body: Buffer;
    try {
      body = await readFile(file);
    } catch {
      res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found (built? run npm run build:client): ${path}`);
      return;
    }
    if (path === '/' || path === '/index.html') this.emit('page');
    res.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-cache' }).end(body);
  }

  private control(req: IncomingMessage, res: ServerResponse, executionId: number, action: 'cancel' | 'retry'): void {
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
    };
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    let userId: unknown;
    try {
      const claims = verify(token ?? '', this.options.secret, { algorithms: ['HS256'] });
      userId = typeof claims === 'object' ? claims.user_id : undefined;
    } catch {
      json(401, { detail: 'Given token not valid for any token type' });
      return;
    }
    this.emit('control', { executionId, action, userId } satisfies ControlRequest);
    // The demo reruns the same execution id (AnsFlow's retry creates a new one).
    if (action === 'cancel') json(200, { message: 'Pipeline execution cancelled successfully', execution: { id: executionId, status: 'cancelled' } });
    else json(201, { message: 'Pipeline execution retried successfully', execution: { id: executionId, status: 'pending' } });
  }

  /** URL path → file, confined to the page's folder and the built client. */
  private resolve(path: string): string | null {
    const page = join(this.root, 'examples', 'pipeline-detail');
    if (path === '/' || path === '/index.html') return join(page, 'index.html');
    if (path === '/app.js' || path === '/app.js.map') return join(page, 'dist', path.slice(1));
    if (path.startsWith('/client/')) {
      const base = join(this.root, 'client', 'dist');
      const file = normalize(join(base, path.slice('/client/'.length)));
      return file.startsWith(base + sep) ? file : null;
    }
    return null;
  }
}
