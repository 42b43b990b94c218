import { OnGatewayConnection, WebSocketGateway } from '@nestjs/websockets';
import type WebSocket from 'ws';
import type { UpgradeRequest } from '../gateway/client-connection';
import { SessionService } from '../gateway/session.service';
import { MonitorEndpoint } from './monitor.endpoint';

@WebSocketGateway({ path: '/ws/monitor' })
export class MonitorGateway implements OnGatewayConnection {
  constructor(
    private readonly sessions: SessionService,
    private readonly endpoint: MonitorEndpoint,
  ) {}

  handleConnection(ws: WebSocket, req: UpgradeRequest): void {
    this.sessions.open(this.endpoint, ws, req);
  }
}
