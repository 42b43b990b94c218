import { Body, Controller, HttpCode, HttpException, HttpStatus, Inject, Post, Headers } from '@nestjs/common';
import { timingSafeEqual } from 'node:crypto';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import { EVENT_SINK, SinkUnavailableError, type EventSink } from './event-sink';
import { PublishBody } from './publish.schema';

/**
 * `POST /api/v1/publish`: publishing without a broker (and, with one, through it). Authenticated with the shared
 * `PUBLISH_API_KEY` (a service credential, not a user token).
 */
@Controller('api/v1')
export class PublishController {
  private readonly key: Buffer | undefined;

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(EVENT_SINK) private readonly sink: EventSink,
    private readonly metrics: RealtimeMetrics,
  ) {
    this.key = config.PUBLISH_API_KEY === undefined ? undefined : Buffer.from(config.PUBLISH_API_KEY);
  }

  @Post('publish')
  @HttpCode(HttpStatus.ACCEPTED)
  async publish(@Headers('authorization') authorization: string | undefined, @Body() body: unknown): Promise<{ accepted: number }> {
    try {
      this.authenticate(authorization);
      const parsed = PublishBody.safeParse(body);
      if (!parsed.success) {
        const single = !Array.isArray(body);
        const reason = parsed.error.issues.map((i) => `${(single ? i.path.slice(1) : i.path).join('.') || 'body'}: ${i.message}`).join('; ');
        throw new HttpException({ statusCode: 400, error: 'Bad Request', message: reason }, 400);
      }
      const items = parsed.data;
      if (items.length > this.config.PUBLISH_MAX_BATCH) {
        throw new HttpException({ statusCode: 400, error: 'Bad Request', message: `at most ${this.config.PUBLISH_MAX_BATCH} events per request` }, 400);
      }
      try {
        await this.sink.publish(items.map((i) => ({ channel: i.channel, event: i.event, messageId: i.message_id })));
      } catch (err) {
        if (err instanceof SinkUnavailableError) throw new HttpException({ statusCode: 503, error: 'Service Unavailable', message: err.message }, 503);
        throw err;
      }
      this.metrics.publishRequests.inc({ status: '202' });
      return { accepted: items.length };
    } catch (err) {
      if (err instanceof HttpException) this.metrics.publishRequests.inc({ status: String(err.getStatus()) });
      throw err;
    }
  }

  private authenticate(header: string | undefined): void {
    if (this.key === undefined) {
      throw new HttpException({ statusCode: 503, error: 'Service Unavailable', message: 'publish API disabled: PUBLISH_API_KEY is not set' }, 503);
    }
    const given = typeof header === 'string' && /^bearer /i.test(header) ? Buffer.from(header.slice(7).trim()) : undefined;
    if (given === undefined || given.length !== this.key.length || !timingSafeEqual(given, this.key)) {
      throw new HttpException({ statusCode: 401, error: 'Unauthorized', message: 'missing or wrong publish API key' }, 401);
    }
  }
}
