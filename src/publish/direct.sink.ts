import { Injectable } from '@nestjs/common';
import { Hub } from '../hub/hub';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import type { EventSink, OutgoingEvent } from './event-sink';

/** No broker: events go straight into this instance's hub. */
@Injectable()
export class DirectSink implements EventSink {
  constructor(
    private readonly hub: Hub,
    private readonly metrics: RealtimeMetrics,
  ) {}

  publish(events: OutgoingEvent[]): Promise<void> {
    const at = Date.now();
    for (const e of events) {
      if (this.hub.publish(e.channel, e.event, { messageId: e.messageId, publishedAtMs: at }) !== undefined) this.metrics.published.inc({ source: 'api' });
    }
    return Promise.resolve();
  }
}
