import { Inject, Injectable } from '@nestjs/common';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { AppInfo } from '../config/app-info';
import type { ClientConnection } from '../gateway/client-connection';
import { ConnectionRegistry } from '../gateway/connection-registry';
import { connectionFrame, now, type ClientFrame, type EndpointDefinition } from '../gateway/endpoint';
import { SessionService } from '../gateway/session.service';
import { ExecutionControl } from '../control/execution-control.service';
import { executionStatusFrame } from '../hub/execution-snapshots';
import { ErrorCode, ServerFrameType } from '../hub/frame-types';
import { Hub } from '../hub/hub';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';

const EXECUTION_ID = /^[1-9]\d{0,15}$/;

/**
 * `/ws/monitor`: the global monitor. Reads `monitor` and `system`, and follows executions on request
 * (`subscribe_execution` / `unsubscribe_execution`, at most MONITOR_MAX_SUBSCRIPTIONS per socket).
 */
@Injectable()
export class MonitorEndpoint implements EndpointDefinition {
  readonly kind = 'monitor' as const;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly hub: Hub,
    private readonly app: AppInfo,
    private readonly sessions: SessionService,
    private readonly registry: ConnectionRegistry,
    private readonly metrics: RealtimeMetrics,
    private readonly control: ExecutionControl,
  ) {}

  channels(): string[] {
    return ['monitor', 'system'];
  }

  greet(conn: ClientConnection): void {
    conn.sendJson(connectionFrame(conn, 'Connected to global monitor', this.hub.latestPosition, { service: this.app.service }));
    conn.sendJson({
      type: ServerFrameType.SystemStatus,
      data: { status: 'healthy', timestamp: now(), active_connections: this.registry.size, service: this.app.service },
    });
  }

  async handleFrame(conn: ClientConnection, frame: ClientFrame): Promise<boolean> {
    switch (frame.type) {
      case 'subscribe_execution':
        await this.follow(conn, frame);
        return true;
      case 'unsubscribe_execution': {
        const id = executionIdOf(frame);
        if (id === undefined) {
          this.sessions.sendError(conn, ErrorCode.InvalidFrame, '"executionId" must be a positive integer');
          return true;
        }
        conn.followed.delete(id);
        this.sessions.unfollow(conn, `execution.${id}`);
        conn.sendJson({ type: ServerFrameType.Unsubscribed, execution_id: id, timestamp: now() });
        return true;
      }
      case 'control_command':
        // The layout's monitor client names the execution in the frame.
        await this.control.handle(conn, frame, 'frame');
        return true;
      default:
        return false;
    }
  }

  private async follow(conn: ClientConnection, frame: ClientFrame): Promise<void> {
    const id = executionIdOf(frame);
    if (id === undefined) {
      this.sessions.sendError(conn, ErrorCode.InvalidFrame, '"executionId" must be a positive integer');
      return;
    }
    const rawSince = frame.since ?? undefined;
    const since = typeof rawSince === 'number' && Number.isSafeInteger(rawSince) && rawSince >= 0 ? rawSince : undefined;
    if (rawSince !== undefined && since === undefined) {
      // A wrong `since` used to be ignored silently: the client believed it resumed and got a snapshot instead.
      this.sessions.sendError(conn, ErrorCode.InvalidFrame, '"since" must be a position (a non-negative integer)');
      return;
    }
    if (!conn.followed.has(id) && conn.followed.size >= this.config.MONITOR_MAX_SUBSCRIPTIONS) {
      this.metrics.limitHits.inc({ limit: 'monitor_subscriptions' });
      this.sessions.sendError(conn, ErrorCode.TooManySubscriptions, `At most ${this.config.MONITOR_MAX_SUBSCRIPTIONS} executions per monitor socket`);
      return;
    }
    const result = await this.sessions.follow(conn, `execution.${id}`, since, () => {
      conn.followed.add(id);
      conn.sendJson({ type: ServerFrameType.Subscribed, execution_id: id, timestamp: now() });
    });
    if (result.status === 'forbidden') {
      this.sessions.sendError(conn, ErrorCode.Forbidden, `Not allowed to follow execution ${id}`);
      return;
    }
    if (result.status === 'ok' && result.recovered !== true) {
      conn.sendJson(executionStatusFrame(this.hub.snapshots.get(id), this.hub.latestPosition));
    }
  }
}

function executionIdOf(frame: ClientFrame): number | undefined {
  const raw = frame.executionId ?? frame.execution_id;
  const text = typeof raw === 'number' ? String(raw) : raw;
  return typeof text === 'string' && EXECUTION_ID.test(text) ? Number(text) : undefined;
}
