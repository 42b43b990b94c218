import { Module } from '@nestjs/common';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { MonitorEndpoint } from './monitor.endpoint';
import { MonitorGateway } from './monitor.gateway';

@Module({ imports: [RealtimeCoreModule], providers: [MonitorEndpoint, MonitorGateway] })
export class MonitorModule {}
