import 'reflect-metadata';
import { bootstrap } from './bootstrap';
import { ConfigError } from './config/config';

async function main(): Promise<void> {
  let service;
  try {
    service = await bootstrap();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(78); // EX_CONFIG
    }
    throw err;
  }
  const { logger } = service;
  const shutdown = (): Promise<void> => service.shutdown();
  let signalled = false;
  const onSignal = (signal: string): void => {
    if (signalled) return;
    signalled = true;
    logger.info({ signal }, 'signal received');
    void shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('unhandledRejection', (err) => logger.error({ err }, 'unhandled rejection'));
}

void main();
