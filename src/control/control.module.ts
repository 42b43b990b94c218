import { Module } from '@nestjs/common';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { ExecutionControl } from './execution-control.service';

/** Stop / restart of executions, forwarded to Django: used by the execution and monitor endpoints. */
@Module({ imports: [RealtimeCoreModule], providers: [ExecutionControl], exports: [ExecutionControl] })
export class ControlModule {}
