import { Injectable } from '@nestjs/common';
import type { ClientConnection } from '../gateway/client-connection';
import { connectionFrame, type EndpointDefinition } from '../gateway/endpoint';
import { Hub } from '../hub/hub';

/** `/ws/system`: system-wide notifications (and the user's own, on `user.{id}`). */
@Injectable()
export class SystemEndpoint implements EndpointDefinition {
  readonly kind = 'system' as const;

  constructor(private readonly hub: Hub) {}

  channels(): string[] {
    return ['system'];
  }

  greet(conn: ClientConnection): void {
    conn.sendJson(connectionFrame(conn, 'Connected to system notifications', this.hub.latestPosition));
  }
}
