import { RabbitMQModule } from '@golevelup/nestjs-rabbitmq';
import { DynamicModule, Module } from '@nestjs/common';
import type { AppConfig } from '../config/config';
import { PublishModule } from '../publish/publish.module';
import { EVENT_SINK } from '../publish/event-sink';
import { BrokerConsumer } from './broker-consumer.service';
import { BrokerSink } from './broker.sink';

/** RabbitMQ ingest (and the publish API through the broker), used when RABBITMQ_URL is set. */
@Module({})
export class MessagingModule {
  static forRoot(config: AppConfig): DynamicModule {
    const rabbit = RabbitMQModule.forRoot({
      uri: config.brokerUrls,
      exchanges: [{ name: config.RABBITMQ_EXCHANGE, type: 'topic', options: { durable: true } }],
      // Never block start-up on the broker: the service serves sockets and reports "not ready" until it connects.
      connectionInitOptions: { wait: false },
      connectionManagerOptions: {
        heartbeatIntervalInSeconds: 5,
        reconnectTimeInSeconds: 1,
        // Without TCP_NODELAY, Nagle's algorithm adds ~20 ms to every small message.
        connectionOptions: { noDelay: true },
      },
      registerHandlers: false,
      enableControllerDiscovery: false,
    });
    return {
      module: MessagingModule,
      imports: [rabbit, PublishModule.withSink({ provide: EVENT_SINK, useExisting: BrokerSink }, [rabbit])],
      providers: [BrokerConsumer, BrokerSink],
      exports: [BrokerConsumer, BrokerSink],
      global: true,
    };
  }
}
