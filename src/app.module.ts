import { DynamicModule, Module } from '@nestjs/common';
import { PrometheusModule } from '@willsoto/nestjs-prometheus';
import type { Logger } from 'pino';
import { ConfigModule } from './config/config.module';
import type { AppConfig } from './config/config';
import { ExecutionModule } from './execution/execution.module';
import { RealtimeCoreModule } from './gateway/realtime-core.module';
import { HealthModule } from './health/health.module';
import { MessagingModule } from './messaging/messaging.module';
import { MetricsController } from './metrics/metrics.controller';
import { MonitorModule } from './monitor/monitor.module';
import { PipelineModule } from './pipeline/pipeline.module';
import { ProjectModule } from './project/project.module';
import { PublishModule } from './publish/publish.module';
import { SystemModule } from './system/system.module';

@Module({})
export class AppModule {
  static forRoot(config: AppConfig, logger: Logger): DynamicModule {
    const ingest = config.RABBITMQ_URL === undefined ? PublishModule.direct() : MessagingModule.forRoot(config);
    return {
      module: AppModule,
      imports: [
        ConfigModule.forRoot(config, logger),
        RealtimeCoreModule,
        PrometheusModule.register({ path: '/metrics', defaultMetrics: { enabled: true }, controller: MetricsController }),
        ingest,
        HealthModule,
        MonitorModule,
        ExecutionModule,
        PipelineModule,
        ProjectModule,
        SystemModule,
      ],
    };
  }
}
