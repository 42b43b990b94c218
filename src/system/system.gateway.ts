import { OnGatewayConnection, WebSocketGateway } from '@nestjs/websockets';
import type WebSocket from 'ws';
import type { UpgradeRequest } from '../gateway/client-connection';
import { SessionService } from '../gateway/session.service';
import { SystemEndpoint } from './system.endpoint';

@WebSocketGateway({ path: '/ws/system' })
export class SystemGateway implements OnGatewayConnection {
  constructor(
    private readonly sessions: SessionService,
    private readonly endpoint: SystemEndpoint,
  ) {}

  handleConnection(ws: WebSocket, req: UpgradeRequest): void {
    this.sessions.open(this.endpoint, ws, req);
  }
}
