import { Injectable } from '@nestjs/common';
import type { ClientConnection } from '../gateway/client-connection';
import { connectionFrame, now, type ClientFrame, type EndpointDefinition } from '../gateway/endpoint';
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

  handleFrame(conn: ClientConnection, frame: ClientFrame): boolean {
    if (frame.type !== 'subscribe') return false;
    const raw = frame.events;
    // A wrong `events` falls through to the common handler, which answers invalid_frame as every other endpoint does.
    if (raw !== undefined && !(Array.isArray(raw) && raw.length <= 100 && raw.every((e) => typeof e === 'string'))) return false;
    const events = (raw ?? []);
    // Today's pipeline page waits for `subscription_confirmed`; `subscribed` keeps the reply uniform across endpoints.
    conn.sendJson({ type: ServerFrameType.Subscribed, events, timestamp: now() });
    conn.sendJson({ type: ServerFrameType.SubscriptionConfirmed, pipeline_id: conn.ctx.id, events, timestamp: now() });
    return true;
  }
}
