import { type INestApplicationContext } from '@nestjs/common';
import { AbstractWsAdapter } from '@nestjs/websockets';
import type { IncomingMessage, Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import { WebSocketServer } from 'ws';
import { APP_PROTOCOL, AuthGuard, BEARER_PROTOCOL_PREFIX } from '../auth/auth.guard';
import { currentWorker } from '../cluster/cluster-messages';
import { AuthError } from '../auth/principal';
import { CloseCode, CloseReason, type CloseCodeValue } from '../common/close-codes';
import { LOGGER, redactUrl } from '../common/logger';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { ENDPOINT_KINDS, type EndpointKind } from '../metrics/metric-names';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import type { UpgradeRequest } from './client-connection';
import { ConnectionRegistry } from './connection-registry';

interface Route {
  kind: EndpointKind;
  /** Matches the path; group 1 is the id segment when the route has one. */
  pattern: RegExp;
  hasId: boolean;
  server: WebSocketServer;
}

const ID = /^[1-9]\d{0,15}$/;
/** Response header of the upgrade naming the worker that accepted the socket (WORKERS > 1). */
export const WORKER_HEADER = 'X-Ansflow-Worker';

/**
 * Routes WebSocket upgrades by path pattern (`@nestjs/platform-ws` matches gateway paths exactly, which cannot
 * express `/ws/execution/{id}`). Each gateway declares `path: '/ws/<kind>/:id'` or `'/ws/<kind>'`; this adapter
 * owns the one `upgrade` listener of the HTTP server and, before a gateway sees the socket, checks the path, the id,
 * the origin, the connection limits and the token. Refusals complete the upgrade and close with a code and reason,
 * because a browser cannot read the HTTP status of a failed upgrade. Client frames do not go through Nest's
 * message machinery (`bindMessageHandlers` is a no-op): the session service reads them directly.
 */
export class UpgradeRouterAdapter extends AbstractWsAdapter {
  private readonly routes: Route[] = [];
  private readonly refusals: WebSocketServer;
  private readonly config: AppConfig;
  private readonly logger: Logger;
  private readonly metrics: RealtimeMetrics;
  private readonly guard: AuthGuard;
  private readonly registry: ConnectionRegistry;
  private listening = false;
  private accepting = true;

  constructor(app: INestApplicationContext) {
    super(app);
    this.config = app.get(APP_CONFIG);
    this.logger = app.get(LOGGER);
    this.metrics = app.get(RealtimeMetrics);
    this.guard = app.get(AuthGuard);
    this.registry = app.get(ConnectionRegistry);
    this.refusals = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: 1024, handleProtocols: selectProtocol });
  }

  /** Called by Nest once per gateway. */
  create(_port: number, options?: { path?: string }): WebSocketServer {
    const path = options?.path;
    const match = path === undefined ? null : /^\/ws\/([a-z]+)(\/:id)?$/.exec(path);
    const kind = match?.[1] as EndpointKind | undefined;
    if (match === null || kind === undefined || !ENDPOINT_KINDS.includes(kind)) {
      throw new Error(`UpgradeRouterAdapter: gateway path must be /ws/<kind>[/:id], got ${String(path)}`);
    }
    const hasId = match[2] !== undefined;
    const server = new WebSocketServer({
      noServer: true,
      // Compression costs CPU per socket and cannot share one prepared frame between subscribers.
      perMessageDeflate: false,
      maxPayload: this.config.WS_MAX_FRAME_BYTES,
      handleProtocols: (offered: Set<string>) => selectProtocol(offered),
      // The registry tracks the sockets; ws's own set cost a closure, a context and a listener per socket.
      clientTracking: false,
    });
    const worker = currentWorker(this.config.workers);
    if (worker !== undefined) {
      // WORKERS > 1: which worker holds the socket, for whoever debugs a deployment (and the tests); no frame changes.
      server.on('headers', (headers: string[]) => headers.push(`${WORKER_HEADER}: ${worker.id}`));
    }
    this.routes.push({ kind, hasId, server, pattern: new RegExp(`^/ws/${kind}${hasId ? '/([^/]*)' : ''}/?$`) });
    this.listen();
    return server;
  }

  override bindClientConnect(server: WebSocketServer, callback: (...args: unknown[]) => void): void {
    server.on('connection', callback);
  }

  override bindClientDisconnect(): void {
    // SessionService handles the close on the socket directly and no gateway implements handleDisconnect: Nest's
    // hook would add a closure and a listener to every socket for a Subject that nobody reads.
  }

  bindMessageHandlers(): void {
    // Frames are handled by SessionService on the socket directly: no per-message Nest machinery on the hot path.
  }

  override async close(server: WebSocketServer): Promise<void> {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  /** Refuse new upgrades from now on (shutdown). */
  stopAccepting(): void {
    this.accepting = false;
  }

  private listen(): void {
    if (this.listening) return;
    this.listening = true;
    const http = this.httpServer as HttpServer;
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      try {
        this.route(req, socket, head);
      } catch (err) {
        this.logger.error({ err, path: redactUrl(req.url) }, 'upgrade failed');
        socket.destroy();
      }
    });
  }

  private route(req: UpgradeRequest, socket: Duplex, head: Buffer): void {
    socket.on('error', destroyOnError);
    if (!this.accepting) {
      socket.end('HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const raw = req.url ?? '/';
    const q = raw.indexOf('?');
    const path = q === -1 ? raw : raw.slice(0, q);
    const query = new URLSearchParams(q === -1 ? '' : raw.slice(q + 1));
    let route: Route | undefined;
    let idText: string | undefined;
    for (const r of this.routes) {
      const m = r.pattern.exec(path);
      if (m !== null) {
        route = r;
        idText = m[1];
        break;
      }
    }
    const kind = route?.kind ?? 'system';
    if (route === undefined) return this.refuse(req, socket, head, kind, CloseCode.NotFound, CloseReason.UnknownPath);
    let id: number | undefined;
    if (route.hasId) {
      if (idText === undefined || !ID.test(idText)) return this.refuse(req, socket, head, kind, CloseCode.NotFound, CloseReason.InvalidId);
      id = Number(idText);
    }
    const origin = req.headers.origin;
    if (this.config.allowedOrigins !== undefined && origin !== undefined && !this.config.allowedOrigins.has(origin)) {
      return this.refuse(req, socket, head, kind, CloseCode.Forbidden, CloseReason.OriginNotAllowed);
    }
    if (this.registry.size >= this.config.WS_MAX_CONNECTIONS) {
      this.metrics.limitHits.inc({ limit: 'connections' });
      return this.refuse(req, socket, head, kind, CloseCode.TooManyConnections, CloseReason.TooManyConnections);
    }
    const ip = req.socket.remoteAddress ?? 'unknown';
    if (this.registry.ipCount(ip) >= this.config.WS_MAX_CONNECTIONS_PER_IP) {
      this.metrics.limitHits.inc({ limit: 'connections_per_ip' });
      return this.refuse(req, socket, head, kind, CloseCode.TooManyConnections, CloseReason.TooManyIpConnections);
    }
    let principal;
    try {
      principal = this.guard.authenticate(req);
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      this.metrics.authFailures.inc({ endpoint: kind, reason: err.reason });
      this.logger.info({ endpoint: kind, reason: err.reason, detail: err.detail, ip }, 'token refused at upgrade');
      return this.refuse(req, socket, head, kind, CloseCode.Unauthorized, err.reason);
    }
    const sinceText = query.get('since');
    const since = sinceText !== null && /^\d{1,16}$/.test(sinceText) ? Number(sinceText) : undefined;
    req.realtime = { kind, id, principal, since, batch: query.get('batch') === '1', ip, path, socket };
    // The 101, the `connection` frame and the endpoint's first frames (the execution snapshot) leave in one write:
    // the session sends them in this turn's microtasks, before the check phase. Written one by one they were three
    // syscalls per connect (strace: 62 µs of write time, one writev 36 µs), each waking the client, which on a busy
    // machine may preempt this process between them.
    socket.cork();
    setImmediate(uncork, socket);
    route.server.handleUpgrade(req, socket, head, (ws) => route.server.emit('connection', ws, req));
  }

  private refuse(req: IncomingMessage, socket: Duplex, head: Buffer, kind: EndpointKind, code: CloseCodeValue, reason: string): void {
    this.metrics.closed.inc({ endpoint: kind, code: String(code) });
    this.logger.debug({ path: redactUrl(req.url), code, reason }, 'upgrade refused');
    this.refusals.handleUpgrade(req, socket, head, (ws) => {
      ws.on('error', () => ws.terminate());
      ws.close(code, reason);
      setTimeout(() => ws.terminate(), 2000).unref();
    });
  }
}

/**
 * A function of its own rather than a closure in `route()`: closures of one call share its context, and the
 * upgrade callback's context holds `req`, so an error listener there kept every request (headers, URL with the
 * token) for as long as its socket stayed open, ~1.5 KB of heap per connection that every scavenge copied.
 */
function destroyOnError(this: Duplex): void {
  this.destroy();
}

function uncork(socket: Duplex): void {
  socket.uncork();
}

function selectProtocol(offered: Set<string>): string | false {
  if (offered.has(APP_PROTOCOL)) return APP_PROTOCOL;
  for (const p of offered) if (!p.startsWith(BEARER_PROTOCOL_PREFIX)) return p;
  return false;
}
