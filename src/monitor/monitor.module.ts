import { Module } from '@nestjs/common';
import { ControlModule } from '../control/control.module';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { MonitorEndpoint } from './monitor.endpoint';
import { MonitorGateway } from './monitor.gateway';

@Module({ imports: [RealtimeCoreModule, ControlModule], providers: [MonitorEndpoint, MonitorGateway] })
export class MonitorModule {}
