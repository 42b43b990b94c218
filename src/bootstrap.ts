import { NestFactory } from '@nestjs/core';
import type { NestExpressApplication } from '@nestjs/platform-express';
// The adapter's own file, not the package's index: that also loads multer and busboy (23 modules, ~1.2 MB of heap)
// for file uploads the service does not take. Nest loads the index only when it is not given an adapter.
import { ExpressAdapter } from '@nestjs/platform-express/adapters/express-adapter';
import express, { type NextFunction, type Request, type Response } from 'express';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import type { Logger } from 'pino';
import { register } from 'prom-client';
import { AppModule } from './app.module';
import { currentWorker } from './cluster/cluster-messages';
import { CloseCode, CloseReason } from './common/close-codes';
import { createLogger, PinoNestLogger } from './common/logger';
import { releaseYoungGeneration } from './common/young-generation';
import { loadConfig, QUICKSTART_KEY, type AppConfig } from './config/config';
import { ConnectionRegistry } from './gateway/connection-registry';
import { UpgradeRouterAdapter } from './gateway/upgrade-router.adapter';
import { ServiceState } from './health/service-state';
import { Hub } from './hub/hub';
import { BrokerConsumer } from './messaging/broker-consumer.service';
import { RealtimeMetrics } from './metrics/realtime-metrics.service';

export interface RunningService {
  app: NestExpressApplication;
  config: AppConfig;
  logger: Logger;
  port: number;
  /** `http://host:port` */
  url: string;
  /** The shutdown sequence (SIGTERM): readiness 503, refuse upgrades, close sockets 1001, stop the consumer, close. */
  shutdown(): Promise<void>;
}

function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { version?: string };
    return pkg.version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/**
 * Builds and starts the service exactly as production does; tests call it with their own environment.
 * Throws `ConfigError` (naming every bad variable) before anything listens.
 */
export async function bootstrap(env: NodeJS.ProcessEnv = process.env): Promise<RunningService> {
  const config = loadConfig(env, packageVersion());
  const worker = currentWorker(config.workers);
  // Workers of WORKERS=N share stdout: each line says which one wrote it.
  const root = createLogger(config.LOG_LEVEL, config.SERVICE_NAME);
  const logger = worker === undefined ? root : root.child({ worker: worker.id });
  if (config.jwtKeyGenerated) {
    logger.warn(
      `DJANGO_SECRET_KEY is not set: using a random key, so no token will verify (set it to Django's SECRET_KEY; to try the service locally, ` +
        `start it with DJANGO_SECRET_KEY=${QUICKSTART_KEY} and mint a token with the same variable: README, Quick start)`,
    );
  }
  // prom-client's registry is process-wide: a test that starts the app twice must not register metrics twice.
  register.clear();
  const app = await NestFactory.create<NestExpressApplication>(AppModule.forRoot(config, logger), new ExpressAdapter(), {
    bodyParser: false,
    logger: new PinoNestLogger(logger),
  });
  // Start-up's one-off allocations are done once the app is built and, with a broker, the stream's replay is over
  // (its garbage is short-lived: with the young generation held through it, RSS after replaying 300,000 events
  // was 233-254 MB instead of 287-297 MB). From then on traffic sizes the young generation (common/young-generation.ts).
  void app.get(ServiceState).whenCaughtUp().then(releaseYoungGeneration);
  app.use(express.json({ limit: config.PUBLISH_MAX_BODY_BYTES, strict: false }));
  const metrics = app.get(RealtimeMetrics);
  app.use((err: Error & { status?: number; type?: string }, _req: Request, res: Response, next: NextFunction) => {
    // Body-parser errors: answer in JSON with the reason, not Express's HTML page.
    if (err.type === 'entity.too.large') {
      metrics.limitHits.inc({ limit: 'publish_body_size' });
      metrics.publishRequests.inc({ status: '413' });
      res.status(413).json({ statusCode: 413, error: 'Payload Too Large', message: `body larger than ${config.PUBLISH_MAX_BODY_BYTES} bytes` });
    } else if (err.type === 'entity.parse.failed') {
      metrics.publishRequests.inc({ status: '400' });
      res.status(400).json({ statusCode: 400, error: 'Bad Request', message: `body is not valid JSON: ${err.message}` });
    } else if (typeof err.status === 'number' && err.status >= 400 && err.status < 500) {
      res.status(err.status).json({ statusCode: err.status, error: 'Bad Request', message: err.message });
    } else next(err);
  });
  const adapter = new UpgradeRouterAdapter(app);
  app.useWebSocketAdapter(adapter);
  if (worker !== undefined) {
    // The primary hands connections to every worker that listens, ready or not: a worker (a replacement above all,
    // while the others serve) joins the shared port once it has caught up with the stream, so a resume never lands
    // on a worker with an empty history; bounded, so a broker outage does not keep the port closed.
    await app.init();
    const state = app.get(ServiceState);
    const deadline = Date.now() + WORKER_JOIN_WAIT_MS;
    while (!state.ready && Date.now() < deadline) await sleep(50);
  }
  await app.listen(config.PORT, config.HOST);
  const address = app.getHttpServer().address() as AddressInfo;
  const port = address.port;
  const url = `http://${config.HOST === '0.0.0.0' || config.HOST === '::' ? '127.0.0.1' : config.HOST}:${port}`;
  logger.info(
    { port, host: config.HOST, broker: config.RABBITMQ_URL !== undefined, authRequired: config.AUTH_REQUIRED, authz: config.AUTHZ_MODE, worker: worker?.id },
    'ansflow-realtime listening',
  );
  if (config.NODE_ENV === 'development' && !config.jwtKeyGenerated && (worker === undefined || worker.id === 1)) {
    logger.info(
      `development: get a token with \`npm run -s token -- --user 1 [--ttl 3600]\` (signed with the same DJANGO_SECRET_KEY); it prints the ws:// URL to open`,
    );
  }

  let shuttingDown: Promise<void> | undefined;
  const shutdown = (): Promise<void> => {
    shuttingDown ??= runShutdown(app, adapter, config, logger);
    return shuttingDown;
  };
  return { app, config, logger, port, url, shutdown };
}

async function runShutdown(app: NestExpressApplication, adapter: UpgradeRouterAdapter, config: AppConfig, logger: Logger): Promise<void> {
  const started = Date.now();
  const state = app.get(ServiceState);
  const registry = app.get(ConnectionRegistry);
  state.shuttingDown = true;
  adapter.stopAccepting();
  const open = registry.size;
  logger.info({ sockets: open }, 'shutting down: refusing upgrades, closing sockets with 1001');
  app.get(Hub).flush();
  for (const conn of registry.connections()) conn.close(CloseCode.GoingAway, CloseReason.ShuttingDown);
  const consumer = config.RABBITMQ_URL === undefined ? undefined : app.get(BrokerConsumer, { strict: false });
  const deadline = started + config.SHUTDOWN_TIMEOUT_MS;
  const stopConsumer = consumer?.stop() ?? Promise.resolve();
  await Promise.race([stopConsumer, sleep(Math.max(0, deadline - Date.now()))]);
  // Wait for the close handshakes (bounded), then cut whatever is left.
  while (registry.size > 0 && Date.now() < deadline - 200) await sleep(25);
  for (const conn of registry.connections()) conn.ws.terminate();
  const http = app.getHttpServer();
  await Promise.race([app.close(), sleep(Math.max(100, deadline - Date.now()))]);
  http.closeAllConnections();
  logger.info({ ms: Date.now() - started, sockets: open }, 'shutdown complete');
}

/** How long a worker may wait for the stream before it joins the port anyway (WORKERS > 1). */
const WORKER_JOIN_WAIT_MS = 15_000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}
