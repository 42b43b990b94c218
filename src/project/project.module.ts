import { Module } from '@nestjs/common';
import { RealtimeCoreModule } from '../gateway/realtime-core.module';
import { ProjectEndpoint } from './project.endpoint';
import { ProjectGateway } from './project.gateway';

@Module({ imports: [RealtimeCoreModule], providers: [ProjectEndpoint, ProjectGateway] })
export class ProjectModule {}
