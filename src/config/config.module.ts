import { DynamicModule, Global, Module } from '@nestjs/common';
import type { Logger } from 'pino';
import { LOGGER } from '../common/logger';
import { AppInfo } from './app-info';
import { APP_CONFIG, type AppConfig } from './config';

/** Provides the configuration validated by `bootstrap()` and the process logger to every module. */
@Global()
@Module({})
export class ConfigModule {
  static forRoot(config: AppConfig, logger: Logger): DynamicModule {
    return {
      module: ConfigModule,
      providers: [{ provide: APP_CONFIG, useValue: config }, { provide: LOGGER, useValue: logger }, AppInfo],
      exports: [APP_CONFIG, LOGGER, AppInfo],
    };
  }
}
