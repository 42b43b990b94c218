import { Module } from '@nestjs/common';
import { ControlModule } from '../control/control.module';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { ExecutionEndpoint } from './execution.endpoint';
import { ExecutionGateway } from './execution.gateway';

@Module({ imports: [RealtimeCoreModule, ControlModule], providers: [ExecutionEndpoint, ExecutionGateway] })
export class ExecutionModule {}
