import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import WebSocket from 'ws';
import { ChannelAuthorizer } from '../auth/channel-authorizer';
import { DjangoTokenVerifier } from '../auth/django-token.verifier';
import { AuthError } from '../auth/principal';
import { CloseCode, CloseReason } from '../common/close-codes';
import { LOGGER } from '../common/logger';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { ClientFrameType, ErrorCode, ServerFrameType } from '../hub/frame-types';
import { Hub } from '../hub/hub';
import { isChannel } from '../hub/hub-event';
import { ServiceState } from '../health/service-state';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import { ClientConnection, type UpgradeRequest } from './client-connection';
import { ConnectionRegistry } from './connection-registry';
import { now, type ClientFrame, type EndpointDefinition } from './endpoint';

/**
 * How long a resume may wait for this instance to read the stream up to the client's position (it comes from an
 * instance that was ahead, usually by milliseconds). Past it the recovery is answered with what is known.
 */
const RESUME_CATCH_UP_MS = 2000;

export interface FollowResult {
  status: 'ok' | 'forbidden' | 'closed';
  /** With `since`: whether the recovery was complete. */
  recovered?: boolean;
}

/**
 * The protocol every endpoint shares: the life of a socket from the gateway's `handleConnection` to its close
 * (auth frame, channel authorization, subscription with resume, ping/pong, rate limit, errors). Gateways stay thin;
 * this service never lets an exception escape into Nest's connection stream (that would kill the process).
 */
@Injectable()
export class SessionService {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly hub: Hub,
    private readonly registry: ConnectionRegistry,
    private readonly verifier: DjangoTokenVerifier,
    private readonly authorizer: ChannelAuthorizer,
    private readonly metrics: RealtimeMetrics,
    private readonly state: ServiceState,
  ) {}

  open(endpoint: EndpointDefinition, ws: WebSocket, req: UpgradeRequest): void {
    try {
      const ctx = req.realtime;
      if (ctx === undefined) {
        ws.close(CloseCode.InternalError, CloseReason.InternalError);
        return;
      }
      const conn = new ClientConnection(ws, ctx, this.config.WS_SEND_BUFFER_BYTES, (c) => this.tooSlow(c));
      // Decided now, not when the socket is authorized: a replay ending in between must still hold it (untilLive).
      conn.openedDuringReplay = !this.state.live;
      this.registry.add(conn);
      ws.on('message', (data: WebSocket.RawData, isBinary: boolean) => this.onMessage(endpoint, conn, data, isBinary));
      ws.on('pong', () => {
        conn.lastSeenMs = Date.now();
      });
      ws.on('error', (err: Error & { code?: string }) => this.onSocketError(conn, err));
      ws.on('close', (code: number) => this.onClose(conn, code));
      this.logger.debug({ endpoint: ctx.kind, path: ctx.path, ip: ctx.ip }, 'socket open');
      if (conn.principal !== undefined || !this.config.AUTH_REQUIRED) this.activate(endpoint, conn);
      // Otherwise the socket waits for an `auth` frame; the registry's sweep enforces the deadline.
    } catch (err) {
      this.logger.error({ err }, 'handleConnection failed');
      ws.close(CloseCode.InternalError, CloseReason.InternalError);
    }
  }

  /** Follow one more channel on an open socket (monitor's `subscribe_execution`), with optional resume. */
  async follow(conn: ClientConnection, channel: string, since: number | undefined, before: () => void): Promise<FollowResult> {
    if (!(await this.authorizer.mayRead(conn.principal, channel))) return { status: 'forbidden' };
    if (since !== undefined) await this.hub.waitForPosition(since, RESUME_CATCH_UP_MS);
    if (conn.state !== 'open') return { status: 'closed' };
    before();
    if (conn.channels.has(channel)) return { status: 'ok', recovered: undefined };
    return { status: 'ok', recovered: this.join(conn, [channel], since) };
  }

  unfollow(conn: ClientConnection, channel: string): void {
    this.hub.unsubscribe(conn, [channel]);
    conn.channels.delete(channel);
    this.metrics.subscribedChannels.set(this.hub.channelCount);
  }

  sendError(conn: ClientConnection, code: string, message: string): void {
    conn.sendJson({ type: ServerFrameType.Error, code, message, timestamp: now() });
  }

  private activate(endpoint: EndpointDefinition, conn: ClientConnection): void {
    const principal = conn.principal;
    if (principal !== undefined && this.registry.userCount(principal.userId) >= this.config.WS_MAX_CONNECTIONS_PER_USER) {
      this.metrics.limitHits.inc({ limit: 'connections_per_user' });
      conn.close(CloseCode.TooManyConnections, CloseReason.TooManyUserConnections);
      return;
    }
    // Count the user before the (asynchronous) channel authorization: counted only once authorized, concurrent
    // upgrades of one user all passed the check above while Django was being asked. A refused socket is uncounted
    // by the registry when it closes.
    if (principal !== undefined) this.registry.addUser(conn, principal.userId);
    const channels = endpoint.channels(conn);
    const since = conn.ctx.since;
    const resumable = (allowed: boolean): Promise<boolean> =>
      allowed && since !== undefined ? this.hub.waitForPosition(since, RESUME_CATCH_UP_MS).then(() => allowed) : Promise.resolve(allowed);
    void this.authorizeAll(conn, channels)
      .then((allowed) => (allowed ? this.untilLive(conn).then(() => allowed) : allowed))
      .then(resumable)
      .then((allowed) => {
        try {
          if (conn.state === 'closed') return;
          if (!allowed) {
            conn.close(CloseCode.Forbidden, CloseReason.Forbidden);
            return;
          }
          conn.state = 'open';
          endpoint.greet(conn);
          const userChannel = principal === undefined ? undefined : `user.${principal.userId}`;
          if (userChannel !== undefined && isChannel(userChannel)) channels.push(userChannel);
          const recovered = this.join(conn, channels, since);
          endpoint.afterSubscribe?.(conn, recovered);
        } catch (err) {
          this.logger.error({ err }, 'activating a socket failed');
          conn.close(CloseCode.InternalError, CloseReason.InternalError);
        }
      });
  }

  /**
   * While this instance replays the stream (start-up, or catching up after a broker reconnect), a socket gets
   * nothing yet: its `connection` frame, snapshot and subscription wait until the replay is over and then until
   * every event published before the socket came has passed through the hub (a sync marker), so no event older than
   * the socket reaches it as live and the position in its `connection` frame is exact (ADR 0003). Heartbeats and
   * the close of a waiting socket work as usual.
   */
  private async untilLive(conn: ClientConnection): Promise<void> {
    if (this.state.live && !conn.openedDuringReplay) return;
    conn.state = 'waiting';
    this.metrics.heldSockets.inc();
    try {
      await this.state.whenCaughtUp();
      await this.state.sync();
    } finally {
      this.metrics.heldSockets.dec();
    }
  }

  /** Subscribe `conn` to `channels` in the hub (replaying after `since`); returns whether the recovery was complete. */
  private join(conn: ClientConnection, channels: string[], since: number | undefined): boolean | undefined {
    const result = this.hub.subscribe(conn, channels, since, (recovered, missed) => this.sendRecovery(conn, since, recovered, missed));
    for (const c of channels) conn.channels.add(c);
    this.metrics.subscribedChannels.set(this.hub.channelCount);
    return result.recovered;
  }

  private async authorizeAll(conn: ClientConnection, channels: string[]): Promise<boolean> {
    for (const channel of channels) if (!(await this.authorizer.mayRead(conn.principal, channel))) return false;
    return true;
  }

  private sendRecovery(conn: ClientConnection, since: number | undefined, recovered: boolean, missed: number): void {
    this.metrics.recoveries.inc({ endpoint: conn.kind, recovered: String(recovered) });
    conn.sendJson({ type: ServerFrameType.Recovery, recovered, since, missed, position: this.hub.latestPosition, timestamp: now() });
  }

  private onMessage(endpoint: EndpointDefinition, conn: ClientConnection, data: WebSocket.RawData, isBinary: boolean): void {
    try {
      if (conn.state === 'closed') return;
      const t = Date.now();
      conn.lastSeenMs = t;
      this.metrics.framesReceived.inc({ endpoint: conn.kind });
      if (t - conn.windowStartMs >= 1000) {
        conn.windowStartMs = t;
        conn.framesInWindow = 0;
      }
      if (++conn.framesInWindow > this.config.WS_MAX_FRAMES_PER_SECOND) {
        this.metrics.limitHits.inc({ limit: 'frames_per_second' });
        conn.close(CloseCode.PolicyViolation, CloseReason.RateLimited);
        return;
      }
      if (isBinary) {
        conn.close(CloseCode.PolicyViolation, CloseReason.BinaryFrame);
        return;
      }
      let frame: unknown;
      try {
        frame = JSON.parse(rawToString(data));
      } catch {
        this.sendError(conn, ErrorCode.InvalidJson, 'Invalid JSON format');
        return;
      }
      if (typeof frame !== 'object' || frame === null || Array.isArray(frame) || typeof (frame as { type?: unknown }).type !== 'string') {
        this.sendError(conn, ErrorCode.InvalidFrame, 'A frame is a JSON object with a string "type"');
        return;
      }
      void this.dispatch(endpoint, conn, frame as ClientFrame).catch((err: unknown) => {
        this.logger.error({ err, endpoint: conn.kind }, 'frame handler failed');
        conn.close(CloseCode.InternalError, CloseReason.InternalError);
      });
    } catch (err) {
      this.logger.error({ err, endpoint: conn.kind }, 'frame handling failed');
      conn.close(CloseCode.InternalError, CloseReason.InternalError);
    }
  }

  private async dispatch(endpoint: EndpointDefinition, conn: ClientConnection, frame: ClientFrame): Promise<void> {
    switch (frame.type) {
      case ClientFrameType.Ping:
        conn.sendJson({ type: ServerFrameType.Pong, timestamp: now() });
        return;
      case ClientFrameType.Pong:
        return;
      case ClientFrameType.Auth:
        this.onAuthFrame(endpoint, conn, frame);
        return;
    }
    if (conn.state !== 'open') {
      this.sendError(conn, ErrorCode.InvalidFrame, 'Send {"type":"auth","token":...} first');
      return;
    }
    if (endpoint.handleFrame !== undefined && (await endpoint.handleFrame(conn, frame))) return;
    if (frame.type === ClientFrameType.Subscribe || frame.type === ClientFrameType.Unsubscribe) {
      // `events` is echoed for today's clients; a socket reads all events of its channels (filtering per socket
      // would cost the shared-frame fan-out).
      const events = frame.events;
      if (events !== undefined && !(Array.isArray(events) && events.every((e) => typeof e === 'string') && events.length <= 100)) {
        this.sendError(conn, ErrorCode.InvalidFrame, '"events" must be a list of at most 100 strings');
        return;
      }
      const echoed = events ?? [];
      if (frame.type === ClientFrameType.Unsubscribe) {
        conn.sendJson({ type: ServerFrameType.Unsubscribed, events: echoed, ...endpoint.subscribedExtras?.(conn), timestamp: now() });
        return;
      }
      conn.sendJson({ type: ServerFrameType.Subscribed, events: echoed, ...endpoint.subscribedExtras?.(conn), timestamp: now() });
      endpoint.afterSubscribed?.(conn, echoed);
      return;
    }
    this.sendError(conn, ErrorCode.UnknownType, `Unknown frame type "${frame.type.slice(0, 64)}"`);
  }

  private onAuthFrame(endpoint: EndpointDefinition, conn: ClientConnection, frame: ClientFrame): void {
    if (typeof frame.token !== 'string') {
      this.sendError(conn, ErrorCode.InvalidFrame, '"token" must be a string');
      return;
    }
    let principal;
    try {
      principal = this.verifier.verify(frame.token);
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      this.metrics.authFailures.inc({ endpoint: conn.kind, reason: err.reason });
      this.logger.info({ endpoint: conn.kind, reason: err.reason, detail: err.detail, ip: conn.ctx.ip }, 'auth frame refused');
      conn.close(CloseCode.Unauthorized, err.reason);
      return;
    }
    const previous = conn.principal;
    if (previous !== undefined && previous.userId !== principal.userId) {
      this.metrics.authFailures.inc({ endpoint: conn.kind, reason: CloseReason.TokenUserMismatch });
      this.logger.info({ endpoint: conn.kind, user: previous.userId }, 'auth frame for another user');
      conn.close(CloseCode.Unauthorized, CloseReason.TokenUserMismatch);
      return;
    }
    conn.principal = principal;
    const reply = {
      type: ServerFrameType.Authenticated,
      user_id: principal.userId,
      expires_at: new Date(principal.expiresAtMs).toISOString(),
      timestamp: now(),
    };
    if (conn.state === 'pending_auth') {
      conn.sendJson(reply);
      this.activate(endpoint, conn);
    } else if (previous === undefined) {
      // An anonymous socket (AUTH_REQUIRED=false) that authenticates: it gains its user channel.
      this.registry.addUser(conn, principal.userId);
      conn.sendJson(reply);
      const userChannel = `user.${principal.userId}`;
      if (isChannel(userChannel)) void this.follow(conn, userChannel, undefined, () => undefined);
    } else conn.sendJson(reply);
  }

  private tooSlow(conn: ClientConnection): void {
    this.metrics.droppedEvents(conn.kind, 'send_buffer_full', 1);
    this.logger.info({ endpoint: conn.kind, user: conn.userId, buffered: conn.ws.bufferedAmount }, 'closing a client that reads too slowly');
    conn.closeTooSlow();
  }

  private onSocketError(conn: ClientConnection, err: Error & { code?: string }): void {
    if (err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
      this.metrics.limitHits.inc({ limit: 'frame_size' });
      conn.closeCode = CloseCode.MessageTooBig;
    } else if (err.code === 'WS_ERR_INVALID_UTF8') conn.closeCode = CloseCode.InvalidPayload;
    this.logger.debug({ endpoint: conn.kind, code: err.code, message: err.message }, 'socket error');
  }

  private onClose(conn: ClientConnection, code: number): void {
    const closeCode = conn.closeCode ?? code;
    conn.state = 'closed';
    this.hub.unsubscribe(conn, conn.channels);
    conn.channels.clear();
    this.registry.remove(conn, closeCode);
    this.metrics.subscribedChannels.set(this.hub.channelCount);
    this.logger.debug({ endpoint: conn.kind, code: closeCode }, 'socket closed');
  }
}

function rawToString(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}
