import { Module } from '@nestjs/common';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { ExecutionEndpoint } from './execution.endpoint';
import { ExecutionGateway } from './execution.gateway';

@Module({ imports: [RealtimeCoreModule], providers: [ExecutionEndpoint, ExecutionGateway] })
export class ExecutionModule {}
