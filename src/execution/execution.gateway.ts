import { OnGatewayConnection, WebSocketGateway } from '@nestjs/websockets';
import type WebSocket from 'ws';
import type { UpgradeRequest } from '../gateway/client-connection';
import { SessionService } from '../gateway/session.service';
import { ExecutionEndpoint } from './execution.endpoint';

@WebSocketGateway({ path: '/ws/execution/:id' })
export class ExecutionGateway implements OnGatewayConnection {
  constructor(
    private readonly sessions: SessionService,
    private readonly endpoint: ExecutionEndpoint,
  ) {}

  handleConnection(ws: WebSocket, req: UpgradeRequest): void {
    this.sessions.open(this.endpoint, ws, req);
  }
}
