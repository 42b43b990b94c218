// First: holds V8's young generation at its initial size while the modules load (bootstrap() releases it).
import './common/hold-young-generation';
import 'reflect-metadata';
import cluster from 'node:cluster';
import { WorkerSupervisor } from './cluster/worker-supervisor';
import { createLogger } from './common/logger';
import { loadNestWithDeferredDateFormat } from './common/nest-date-format';
import { releaseYoungGeneration } from './common/young-generation';
import { ConfigError, loadConfig, type AppConfig } from './config/config';

/** Runs `stop` once on SIGTERM or SIGINT, then exits with the code it resolves to (1 if it fails). */
function onSignals(log: { info: (o: object, m: string) => void; error: (o: object, m: string) => void }, stop: () => Promise<number>): void {
  let signalled = false;
  const onSignal = (signal: string): void => {
    if (signalled) return;
    signalled = true;
    log.info({ signal }, 'signal received');
    void stop().then(
      (code) => process.exit(code),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
}

/** One full instance of the service: the whole process (WORKERS=1) or one worker of the cluster. */
async function runInstance(): Promise<void> {
  // Loaded here, not at the top: the primary of a cluster never needs Nest.
  loadNestWithDeferredDateFormat();
  const { bootstrap } = await import('./bootstrap');
  const service = await bootstrap();
  const { logger } = service;
  onSignals(logger, () => service.shutdown().then(() => 0));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
}

/** WORKERS > 1: this process only supervises; every worker runs `runInstance` on the shared port. */
function runPrimary(config: AppConfig): void {
  const logger = createLogger(config.LOG_LEVEL, config.SERVICE_NAME);
  const supervisor = new WorkerSupervisor(config.workers, config.SHUTDOWN_TIMEOUT_MS, logger);
  onSignals(logger, () => supervisor.stop());
  supervisor.start();
  releaseYoungGeneration(); // the primary's start-up is done too (the workers release their own in bootstrap())
}

async function main(): Promise<void> {
  try {
    // Validated before anything starts, so a bad variable stops the primary once rather than every worker.
    const config = cluster.isPrimary ? loadConfig() : undefined;
    if (config !== undefined && config.workers > 1) return runPrimary(config);
    await runInstance();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
}

void main();
