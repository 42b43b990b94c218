import { Controller, Get, Inject, Res } from '@nestjs/common';
import { PrometheusController } from '@willsoto/nestjs-prometheus';
import type { Response } from 'express';
import { register } from 'prom-client';
import { clusterMetrics, currentWorker, joinClusterMetrics } from '../cluster/cluster-messages';
import { APP_CONFIG, type AppConfig } from '../config/config';

/**
 * `GET /metrics`. One process: its registry. A worker of `WORKERS=N`: the sum over all workers, gathered by the
 * primary (docs/adr/0005-workers.md), so a scrape through the shared port sees the whole host whichever worker
 * answers.
 */
@Controller()
export class MetricsController extends PrometheusController {
  private readonly inCluster: boolean;

  constructor(@Inject(APP_CONFIG) config: AppConfig) {
    super();
    this.inCluster = currentWorker(config.workers) !== undefined;
    if (this.inCluster) joinClusterMetrics();
  }

  @Get()
  override async index(@Res({ passthrough: true }) response: Response): Promise<string> {
    response.header('Content-Type', register.contentType);
    if (!this.inCluster) return register.metrics();
    try {
      return await clusterMetrics();
    } catch (err) {
      response.status(503);
      return `# metrics of the workers unavailable: ${err instanceof Error ? err.message : String(err)}\n`;
    }
  }
}
