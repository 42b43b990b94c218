import { Module } from '@nestjs/common';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { PipelineEndpoint } from './pipeline.endpoint';
import { PipelineGateway } from './pipeline.gateway';

@Module({ imports: [RealtimeCoreModule], providers: [PipelineEndpoint, PipelineGateway] })
export class PipelineModule {}
