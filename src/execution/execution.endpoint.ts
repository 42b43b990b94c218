import { Injectable } from '@nestjs/common';
import type { ClientConnection } from '../gateway/client-connection';
import { connectionFrame, type ClientFrame, type EndpointDefinition } from '../gateway/endpoint';
import { ClientFrameType } from '../hub/frame-types';
import { executionStatusFrame } from '../hub/execution-snapshots';
import { Hub } from '../hub/hub';
import { AppInfo } from '../config/app-info';
import { ExecutionControl } from '../control/execution-control.service';

/** `/ws/execution/{id}`: one pipeline execution; the page gets the current snapshot first. */
@Injectable()
export class ExecutionEndpoint implements EndpointDefinition {
  readonly kind = 'execution' as const;

  constructor(
    private readonly hub: Hub,
    private readonly app: AppInfo,
    private readonly control: ExecutionControl,
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

  async handleFrame(conn: ClientConnection, frame: ClientFrame): Promise<boolean> {
    switch (frame.type) {
      case ClientFrameType.GetStatus:
        this.sendStatus(conn);
        return true;
      case ClientFrameType.ControlCommand:
        // The execution page's Stop / Restart: the execution is the path's.
        await this.control.handle(conn, frame, { pathId: idOf(conn) });
        return true;
      default:
        return false;
    }
  }

  subscribedExtras(conn: ClientConnection): Record<string, unknown> {
    return { execution_id: String(idOf(conn)) };
  }

  private sendStatus(conn: ClientConnection): void {
    conn.sendJson(executionStatusFrame(this.hub.snapshots.get(idOf(conn)), this.hub.latestPosition));
  }
}

function idOf(conn: ClientConnection): number {
  return conn.ctx.id ?? 0;
}
