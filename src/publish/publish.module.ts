import { DynamicModule, Module, type Provider } from '@nestjs/common';
import { DirectSink } from './direct.sink';
import { EVENT_SINK } from './event-sink';
import { PublishController } from './publish.controller';

/** The publish API; the sink behind it is chosen by the ingest mode. */
@Module({})
export class PublishModule {
  /** No broker: the API feeds this instance's hub. */
  static direct(): DynamicModule {
    return PublishModule.withSink({ provide: EVENT_SINK, useClass: DirectSink });
  }

  static withSink(sink: Provider, imports: DynamicModule['imports'] = []): DynamicModule {
    return { module: PublishModule, imports, controllers: [PublishController], providers: [sink] };
  }
}
