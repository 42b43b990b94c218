import { Module } from '@nestjs/common';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { SystemEndpoint } from './system.endpoint';
import { SystemGateway } from './system.gateway';

@Module({ imports: [RealtimeCoreModule], providers: [SystemEndpoint, SystemGateway] })
export class SystemModule {}
