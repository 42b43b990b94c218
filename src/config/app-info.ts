import { Inject, Injectable } from '@nestjs/common';
import { APP_CONFIG, type AppConfig } from './config';

/** Name and version as reported in frames and on /health. */
@Injectable()
export class AppInfo {
  readonly service: string;
  readonly version: string;
  constructor(@Inject(APP_CONFIG) config: AppConfig) {
    this.service = config.SERVICE_NAME;
    this.version = config.version;
  }
}
