import { OnGatewayConnection, WebSocketGateway } from '@nestjs/websockets';
import type WebSocket from 'ws';
import type { UpgradeRequest } from '../gateway/client-connection';
import { SessionService } from '../gateway/session.service';
import { ProjectEndpoint } from './project.endpoint';

@WebSocketGateway({ path: '/ws/project/:id' })
export class ProjectGateway implements OnGatewayConnection {
  constructor(
    private readonly sessions: SessionService,
    private readonly endpoint: ProjectEndpoint,
  ) {}

  handleConnection(ws: WebSocket, req: UpgradeRequest): void {
    this.sessions.open(this.endpoint, ws, req);
  }
}
