import { Injectable } from '@nestjs/common';
import type { ClientConnection } from '../gateway/client-connection';
import { connectionFrame, now, type EndpointDefinition } from '../gateway/endpoint';
import { ServerFrameType } from '../hub/frame-types';
import { Hub } from '../hub/hub';

/** `/ws/pipeline/{id}`: one pipeline's updates. */
@Injectable()
export class PipelineEndpoint implements EndpointDefinition {
  readonly kind = 'pipeline' as const;

  constructor(private readonly hub: Hub) {}

  channels(conn: ClientConnection): string[] {
    return [`pipeline.${conn.ctx.id ?? 0}`];
  }

  greet(conn: ClientConnection): void {
    conn.sendJson(connectionFrame(conn, `Connected to pipeline ${conn.ctx.id ?? 0}`, this.hub.latestPosition, { pipeline_id: conn.ctx.id }));
  }

  afterSubscribed(conn: ClientConnection, events: string[]): void {
    // Today's pipeline page waits for `subscription_confirmed` after `subscribed`.
    conn.sendJson({ type: ServerFrameType.SubscriptionConfirmed, pipeline_id: conn.ctx.id, events, timestamp: now() });
  }
}
