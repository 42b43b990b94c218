import { Global, Module } from '@nestjs/common';
import { AuthGuard } from '../auth/auth.guard';
import { ChannelAuthorizer } from '../auth/channel-authorizer';
import { DjangoTokenVerifier } from '../auth/django-token.verifier';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { Hub } from '../hub/hub';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import { ConnectionRegistry } from './connection-registry';
import { SessionService } from './session.service';
import { ServiceState } from '../health/service-state';

/** The shared core every endpoint module uses: the hub, the auth guard, the connection registry and sessions. */
@Global()
@Module({
  providers: [
    RealtimeMetrics,
    {
      provide: Hub,
      inject: [APP_CONFIG, RealtimeMetrics],
      useFactory: (config: AppConfig, metrics: RealtimeMetrics) => {
        const hub = new Hub(
          {
            history: { size: config.HISTORY_SIZE, ttlMs: config.HISTORY_TTL_SECONDS * 1000, maxChannels: config.HISTORY_MAX_CHANNELS, maxBytes: config.HISTORY_MAX_BYTES },
            dedupWindow: config.DEDUP_WINDOW,
            batchWindowMs: config.BATCH_WINDOW_MS,
            batchMaxEvents: config.BATCH_MAX_EVENTS,
            externalPositions: config.RABBITMQ_URL !== undefined,
          },
          metrics,
        );
        metrics.watchHistory(hub.history, config.HISTORY_MAX_BYTES);
        return hub;
      },
    },
    DjangoTokenVerifier,
    AuthGuard,
    ChannelAuthorizer,
    ConnectionRegistry,
    SessionService,
    ServiceState,
  ],
  exports: [RealtimeMetrics, Hub, DjangoTokenVerifier, AuthGuard, ChannelAuthorizer, ConnectionRegistry, SessionService, ServiceState],
})
export class RealtimeCoreModule {}
