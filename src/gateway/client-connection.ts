import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket from 'ws';
import type { Principal } from '../auth/principal';
import { CloseCode, CloseReason, type CloseCodeValue } from '../common/close-codes';
import type { Subscriber } from '../hub/hub-event';
import type { EndpointKind } from '../metrics/metric-names';
import { textFrame } from './ws-frame';

/** What the upgrade router found out about a connection before handing it to a gateway. */
export interface UpgradeContext {
  kind: EndpointKind;
  /** The path id (`/ws/execution/42` → 42); undefined on monitor and system. */
  id: number | undefined;
  /** Undefined when no token came with the upgrade (an `auth` frame may follow, or the socket is anonymous). */
  principal: Principal | undefined;
  /** `?since=`: resume after this position. */
  since: number | undefined;
  /** `?batch=1`: the client accepts `batch` frames. */
  batch: boolean;
  ip: string;
  /** The request path without its query string (which may hold a token): safe to log. */
  path: string;
  /**
   * The TCP socket the upgrade came on, which `ws` writes its frames to: prepared frames are written to it directly
   * (see `ws-frame.ts`). `ws` writes to it synchronously (no compression), so frames keep their order.
   */
  socket: Duplex;
}

/** The request object a gateway receives; the router attaches its findings. */
export interface UpgradeRequest extends IncomingMessage {
  realtime?: UpgradeContext;
}

/** `waiting`: authenticated, waiting for its authorization or for the instance to finish a stream replay. */
export type ConnectionState = 'pending_auth' | 'waiting' | 'open' | 'closed';

/**
 * One client socket: the hub's subscriber. It writes prepared frames, and closes the socket with 4008 when the
 * client reads too slowly (its send buffer passes the bound) instead of letting the server's memory grow.
 * Timers live in the registry's sweep, not here.
 */
export class ClientConnection implements Subscriber {
  readonly kind: EndpointKind;
  readonly batch: boolean;
  readonly openedAtMs = Date.now();
  state: ConnectionState = 'pending_auth';
  /** The instance was replaying the stream when this socket opened: it waits for the catch-up (SessionService). */
  openedDuringReplay = false;
  principal: Principal | undefined;
  /** Channels this socket is subscribed to in the hub. */
  readonly channels = new Set<string>();
  /** Monitor sockets: executions followed with `subscribe_execution`. */
  readonly followed = new Set<number>();
  /** Inbound frames in the current one-second window (rate limit). */
  framesInWindow = 0;
  windowStartMs = 0;
  /** Last time anything arrived from the client (frame or pong): heartbeat. */
  lastSeenMs = Date.now();
  pingSentMs: number | undefined;
  /**
   * When the next heartbeat ping is due. The first one falls anywhere in the first interval, so the pings of
   * sockets that connected together are spread over the interval instead of going out in one burst (a ping round
   * of 1,000 sockets in one tick was one write after another for tens of milliseconds, in front of live events).
   */
  nextPingMs = Number.MAX_SAFE_INTEGER;
  closeCode: number | undefined;
  /** The user this connection is counted under for the per-user limit. */
  countedUser: string | undefined;

  constructor(
    readonly ws: WebSocket,
    readonly ctx: UpgradeContext,
    private readonly sendBufferBytes: number,
    private readonly onTooSlow: (conn: ClientConnection) => void,
  ) {
    this.kind = ctx.kind;
    this.batch = ctx.batch;
    this.principal = ctx.principal;
  }

  get userId(): string | undefined {
    return this.principal?.userId;
  }

  write(frame: Buffer): boolean {
    const ws = this.ws;
    if (ws.readyState !== WebSocket.OPEN || this.state === 'closed') return false;
    if (ws.bufferedAmount + frame.length > this.sendBufferBytes && !this.flushCorked(frame.length)) {
      this.onTooSlow(this);
      return false;
    }
    this.ctx.socket.write(textFrame(frame));
    return true;
  }

  /**
   * Frames written in the upgrade's turn wait in the corked socket (upgrade-router.adapter.ts) and count in
   * `bufferedAmount` without the client being slow at all: a large resume could pass the bound there. Hand them to
   * the kernel first; whether the frame then fits is the usual test.
   */
  private flushCorked(bytes: number): boolean {
    const socket = this.ctx.socket;
    if (socket.writableCorked === 0) return false;
    while (socket.writableCorked > 0) socket.uncork();
    return this.ws.bufferedAmount + bytes <= this.sendBufferBytes;
  }

  /** Send a frame built for this socket alone (replies, greetings). */
  sendJson(frame: Record<string, unknown>): boolean {
    return this.write(Buffer.from(JSON.stringify(frame)));
  }

  /** Close with a code and reason; the socket is torn down if the close handshake does not finish. */
  close(code: CloseCodeValue, reason: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    this.closeCode = code;
    const ws = this.ws;
    if (ws.readyState === WebSocket.OPEN || ws.readyState === WebSocket.CONNECTING) {
      ws.close(code, reason);
      // A client that stopped reading never answers the close frame: do not keep its socket.
      setTimeout(() => ws.terminate(), code === CloseCode.TooSlow ? 100 : 2000).unref();
    }
  }

  closeTooSlow(): void {
    this.close(CloseCode.TooSlow, CloseReason.TooSlow);
  }
}
