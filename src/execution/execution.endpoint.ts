import { Injectable } from '@nestjs/common';
import type { ClientConnection } from '../gateway/client-connection';
import { connectionFrame, type ClientFrame, type EndpointDefinition } from '../gateway/endpoint';
import { ServerFrameType } from '../hub/frame-types';
import { Hub } from '../hub/hub';
import { AppInfo } from '../config/app-info';

/** `/ws/execution/{id}`: one pipeline execution; the page gets the current snapshot first. */
@Injectable()
export class ExecutionEndpoint implements EndpointDefinition {
  readonly kind = 'execution' as const;

  constructor(
    private readonly hub: Hub,
    private readonly app: AppInfo,
  ) {}

  channels(conn: ClientConnection): string[] {
    return [`execution.${idOf(conn)}`];
  }

  greet(conn: ClientConnection): void {
    const id = idOf(conn);
    conn.sendJson(connectionFrame(conn, `Connected to execution ${id}`, this.hub.latestPosition, { service: this.app.service, execution_id: String(id) }));
  }

  afterSubscribe(conn: ClientConnection, recovered: boolean | undefined): void {
    // After a complete recovery the client has every event it missed: a snapshot would only repeat them.
    if (recovered !== true) this.sendStatus(conn);
  }

  handleFrame(conn: ClientConnection, frame: ClientFrame): boolean {
    if (frame.type !== 'get_status') return false;
    this.sendStatus(conn);
    return true;
  }

  subscribedExtras(conn: ClientConnection): Record<string, unknown> {
    return { execution_id: String(idOf(conn)) };
  }

  private sendStatus(conn: ClientConnection): void {
    conn.sendJson({ type: ServerFrameType.ExecutionStatus, data: this.hub.snapshots.get(idOf(conn)), position: this.hub.latestPosition });
  }
}

function idOf(conn: ClientConnection): number {
  return conn.ctx.id ?? 0;
}
