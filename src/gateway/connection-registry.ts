import { Inject, Injectable, OnModuleDestroy } from '@nestjs/common';
import type { Logger } from 'pino';
import { CloseCode, CloseReason } from '../common/close-codes';
import { LOGGER } from '../common/logger';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { ENDPOINT_KINDS, type EndpointKind } from '../metrics/metric-names';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import type { ClientConnection } from './client-connection';

/**
 * Every open connection, with counts per endpoint kind, user and IP for the limits, and one sweep timer for all
 * of them (heartbeat, token expiry, auth deadline) instead of timers per socket.
 */
@Injectable()
export class ConnectionRegistry implements OnModuleDestroy {
  private readonly all = new Set<ClientConnection>();
  private readonly byUser = new Map<string, number>();
  private readonly byIp = new Map<string, number>();
  private readonly byKind = new Map<EndpointKind, number>(ENDPOINT_KINDS.map((k) => [k, 0]));
  private readonly sweepTimer: NodeJS.Timeout;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly metrics: RealtimeMetrics,
  ) {
    const tick = Math.min(500, config.WS_HEARTBEAT_INTERVAL_MS, config.AUTH_FRAME_TIMEOUT_MS);
    this.sweepTimer = setInterval(() => this.sweep(), tick);
    this.sweepTimer.unref();
    metrics.connectionsLimit.set(config.WS_MAX_CONNECTIONS);
  }

  onModuleDestroy(): void {
    clearInterval(this.sweepTimer);
  }

  get size(): number {
    return this.all.size;
  }

  countsByKind(): Record<EndpointKind, number> {
    return Object.fromEntries(this.byKind) as Record<EndpointKind, number>;
  }

  connections(): IterableIterator<ClientConnection> {
    return this.all.values();
  }

  ipCount(ip: string): number {
    return this.byIp.get(ip) ?? 0;
  }

  userCount(userId: string): number {
    return this.byUser.get(userId) ?? 0;
  }

  add(conn: ClientConnection): void {
    conn.nextPingMs = Date.now() + Math.random() * this.config.WS_HEARTBEAT_INTERVAL_MS;
    this.all.add(conn);
    this.byKind.set(conn.kind, (this.byKind.get(conn.kind) ?? 0) + 1);
    bump(this.byIp, conn.ctx.ip, 1);
    this.metrics.connectionOpened(conn.kind);
  }

  /** Count a user's connection once it is known (at the upgrade or on a later `auth` frame). */
  addUser(conn: ClientConnection, userId: string): void {
    if (conn.countedUser !== undefined) return;
    conn.countedUser = userId;
    bump(this.byUser, userId, 1);
  }

  remove(conn: ClientConnection, code: number): void {
    if (!this.all.delete(conn)) return;
    this.byKind.set(conn.kind, (this.byKind.get(conn.kind) ?? 1) - 1);
    bump(this.byIp, conn.ctx.ip, -1);
    if (conn.countedUser !== undefined) bump(this.byUser, conn.countedUser, -1);
    this.metrics.connectionClosed(conn.kind, code);
  }

  private sweep(): void {
    const now = Date.now();
    const interval = this.config.WS_HEARTBEAT_INTERVAL_MS;
    for (const conn of this.all) {
      if (conn.state === 'closed') continue;
      if (conn.state === 'pending_auth') {
        if (now - conn.openedAtMs >= this.config.AUTH_FRAME_TIMEOUT_MS) {
          this.metrics.limitHits.inc({ limit: 'auth_deadline' });
          this.metrics.authFailures.inc({ endpoint: conn.kind, reason: CloseReason.TokenRequired });
          this.logger.info({ endpoint: conn.kind, ip: conn.ctx.ip }, 'auth frame deadline passed');
          conn.close(CloseCode.Unauthorized, CloseReason.TokenRequired);
        }
        continue;
      }
      if (conn.principal !== undefined && now >= conn.principal.expiresAtMs) {
        this.metrics.authFailures.inc({ endpoint: conn.kind, reason: CloseReason.TokenExpired });
        this.logger.info({ endpoint: conn.kind, user: conn.principal.userId }, 'token expired on an open socket');
        conn.close(CloseCode.Unauthorized, CloseReason.TokenExpired);
        continue;
      }
      if (conn.pingSentMs !== undefined && conn.lastSeenMs < conn.pingSentMs && now - conn.pingSentMs >= this.config.WS_HEARTBEAT_TIMEOUT_MS) {
        // Half-open TCP: no close frame will ever come. Terminate; the close handler does the bookkeeping.
        conn.state = 'closed';
        conn.closeCode = CloseCode.PolicyViolation;
        conn.ws.terminate();
        continue;
      }
      if (now >= conn.nextPingMs && conn.ws.readyState === 1 && (conn.pingSentMs === undefined || conn.lastSeenMs >= conn.pingSentMs)) {
        conn.pingSentMs = now;
        conn.nextPingMs = now + interval;
        conn.ws.ping();
      }
    }
  }
}

function bump(map: Map<string, number>, key: string, by: number): void {
  const n = (map.get(key) ?? 0) + by;
  if (n <= 0) map.delete(key);
  else map.set(key, n);
}
