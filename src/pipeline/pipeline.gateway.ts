import { OnGatewayConnection, WebSocketGateway } from '@nestjs/websockets';
import type WebSocket from 'ws';
import type { UpgradeRequest } from '../gateway/client-connection';
import { SessionService } from '../gateway/session.service';
import { PipelineEndpoint } from './pipeline.endpoint';

@WebSocketGateway({ path: '/ws/pipeline/:id' })
export class PipelineGateway implements OnGatewayConnection {
  constructor(
    private readonly sessions: SessionService,
    private readonly endpoint: PipelineEndpoint,
  ) {}

  handleConnection(ws: WebSocket, req: UpgradeRequest): void {
    this.sessions.open(this.endpoint, ws, req);
  }
}
