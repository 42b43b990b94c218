import { Controller, Get, HttpCode, Inject, Res } from '@nestjs/common';
import type { Response } from 'express';
import { currentWorker } from '../cluster/cluster-messages';
import { AppInfo } from '../config/app-info';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { ConnectionRegistry } from '../gateway/connection-registry';
import { Hub } from '../hub/hub';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import { ServiceState } from './service-state';

interface ReadyBody {
  status: 'ok' | 'error';
  info: Record<string, unknown>;
  error: Record<string, unknown>;
  details: Record<string, unknown>;
}

/**
 * Probes. `/health/live`: the process and its event loop answer (no dependency: a broker outage must not get the
 * container killed). `/health/ready`: take traffic (broker connected and caught up when configured; not shutting
 * down). `/health`: the full picture for humans and the runbook (`jq .websocket`). No token, no user data.
 */
@Controller('health')
export class HealthController {
  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    private readonly state: ServiceState,
    private readonly registry: ConnectionRegistry,
    private readonly hub: Hub,
    private readonly app: AppInfo,
    private readonly metrics: RealtimeMetrics,
  ) {
    this.worker = currentWorker(config.workers);
  }

  private readonly worker: { id: number; pid: number } | undefined;

  @Get()
  async overview(@Res({ passthrough: true }) res: Response): Promise<Record<string, unknown>> {
    const serving = !this.state.shuttingDown;
    res.status(serving ? 200 : 503);
    const lastEventAt = this.hub.lastEventAt;
    const delivered = await this.metrics.eventsSent.get();
    return {
      status: !serving ? 'shutting_down' : this.state.ready ? 'healthy' : 'degraded',
      service: this.app.service,
      version: this.app.version,
      environment: this.config.NODE_ENV,
      timestamp: new Date().toISOString(),
      uptime_seconds: Math.round((Date.now() - this.state.startedAtMs) / 1000),
      // WORKERS > 1: the worker that answered (every figure below is its own); null when one process serves.
      worker: this.worker === undefined ? null : { ...this.worker, workers: this.config.workers },
      checks: {
        broker: this.brokerCheck(),
        shutdown: { status: this.state.shuttingDown ? 'in_progress' : 'no' },
      },
      websocket: {
        connections: this.registry.size,
        by_endpoint: this.registry.countsByKind(),
        max_connections: this.config.WS_MAX_CONNECTIONS,
        subscribed_channels: this.hub.channelCount,
        messages_delivered: delivered.values.reduce((sum, v) => sum + v.value, 0),
        events_published: this.hub.publishedCount,
        last_event_age_seconds: lastEventAt === undefined ? null : (Date.now() - lastEventAt) / 1000,
        latest_position: this.hub.latestPosition,
      },
      history: {
        events: this.hub.history.size,
        bytes: this.hub.history.bytes,
        max_bytes: this.config.HISTORY_MAX_BYTES,
        evicted: { ...this.hub.history.evicted },
      },
    };
  }

  @Get('live')
  @HttpCode(200)
  live(): { status: string; timestamp: string } {
    return { status: 'ok', timestamp: new Date().toISOString() };
  }

  /**
   * The body keeps the shape `@nestjs/terminus` gave it (`status`, `info`, `error`, `details`), written here
   * instead: terminus and its dependencies cost ~50 modules and a few MB of idle memory for two checks.
   */
  @Get('ready')
  ready(@Res({ passthrough: true }) res: Response): ReadyBody {
    const { status, ...detail } = this.brokerCheck();
    const checks: Record<string, { status: 'up' | 'down' } & Record<string, unknown>> = {
      shutdown: this.state.shuttingDown ? { status: 'down', message: 'shutting down' } : { status: 'up' },
      broker: { status: status === 'down' ? 'down' : 'up', ...detail, state: status },
    };
    const up = Object.fromEntries(Object.entries(checks).filter(([, c]) => c.status === 'up'));
    const down = Object.fromEntries(Object.entries(checks).filter(([, c]) => c.status === 'down'));
    const ok = Object.keys(down).length === 0;
    res.status(ok ? 200 : 503);
    return { status: ok ? 'ok' : 'error', info: up, error: down, details: checks };
  }

  /**
   * `position`: the stream offset read up to; `node`: the node (host:port) the stream reader is connected to;
   * `amqp_node`: the node the AMQP connection (declarations, dead letters, publish API) uses. Both say where the
   * instance went after a failover; null while disconnected.
   */
  private brokerCheck(): {
    status: 'up' | 'down' | 'disabled';
    caught_up?: boolean;
    message?: string;
    position?: number;
    node?: string | null;
    amqp_node?: string | null;
  } {
    if (!this.state.brokerConfigured) return { status: 'disabled', message: 'no RABBITMQ_URL: embedded mode' };
    const position = this.hub.latestPosition;
    const nodes = { node: this.state.brokerNode() ?? null, amqp_node: this.state.amqpNode ?? null };
    if (!this.state.brokerConnected) return { status: 'down', caught_up: false, message: 'not connected', position, ...nodes };
    if (!this.state.brokerCaughtUp) return { status: 'down', caught_up: false, message: 'replaying the event stream', position, ...nodes };
    return { status: 'up', caught_up: true, position, ...nodes };
  }
}
