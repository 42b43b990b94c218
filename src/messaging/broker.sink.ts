import { AmqpConnection } from '@golevelup/nestjs-rabbitmq';
import { Inject, Injectable, OnApplicationBootstrap } from '@nestjs/common';
import type { ChannelWrapper } from 'amqp-connection-manager';
import { randomUUID } from 'node:crypto';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import { SinkUnavailableError, type EventSink, type OutgoingEvent } from '../publish/event-sink';

/**
 * With a broker, the publish API goes through the exchange like Django does: every instance then sees the event,
 * with one stream position. Publisher confirms: the API answers 202 only once the broker has the events.
 */
@Injectable()
export class BrokerSink implements EventSink, OnApplicationBootstrap {
  private channel: ChannelWrapper | undefined;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly amqp: AmqpConnection,
    private readonly metrics: RealtimeMetrics,
  ) {}

  onApplicationBootstrap(): void {
    this.channel = this.amqp.managedConnection.createChannel({ confirm: true, publishTimeout: 5000 });
  }

  async publish(events: OutgoingEvent[]): Promise<void> {
    const channel = this.channel;
    if (channel === undefined || !this.amqp.managedConnection.isConnected()) {
      throw new SinkUnavailableError('broker unreachable: try again shortly');
    }
    const at = Date.now();
    try {
      await Promise.all(
        events.map((e) =>
          channel.publish(this.config.RABBITMQ_EXCHANGE, e.channel, Buffer.from(JSON.stringify(e.event)), {
            persistent: true,
            contentType: 'application/json',
            messageId: e.messageId ?? randomUUID(),
            timestamp: Math.floor(at / 1000),
            headers: { 'x-published-at-ms': at },
          }),
        ),
      );
    } catch (err) {
      throw new SinkUnavailableError(`broker did not confirm: ${err instanceof Error ? err.message : String(err)}`);
    }
    this.metrics.published.inc({ source: 'api' }, events.length);
  }
}
