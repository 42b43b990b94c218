import { Injectable } from '@nestjs/common';
import type { ClientConnection } from '../gateway/client-connection';
import { connectionFrame, type EndpointDefinition } from '../gateway/endpoint';
import { Hub } from '../hub/hub';

/** `/ws/project/{id}`: one project's updates. */
@Injectable()
export class ProjectEndpoint implements EndpointDefinition {
  readonly kind = 'project' as const;

  constructor(private readonly hub: Hub) {}

  channels(conn: ClientConnection): string[] {
    return [`project.${conn.ctx.id ?? 0}`];
  }

  greet(conn: ClientConnection): void {
    conn.sendJson(connectionFrame(conn, `Connected to project ${conn.ctx.id ?? 0}`, this.hub.latestPosition, { project_id: conn.ctx.id }));
  }
}
