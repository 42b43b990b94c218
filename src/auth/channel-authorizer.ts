import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { LOGGER } from '../common/logger';
import { APP_CONFIG, type AppConfig } from '../config/config';
import { RealtimeMetrics } from '../metrics/realtime-metrics.service';
import type { Principal } from './principal';

interface CachedDecision {
  allow: boolean;
  untilMs: number;
}

/**
 * Decides whether a principal may read a channel. `AUTHZ_MODE=token`: any authenticated user (or anonymous
 * socket when AUTH_REQUIRED=false) may read any channel but another user's `user.{id}`. `AUTHZ_MODE=django`:
 * Django answers `GET {AUTHZ_DJANGO_URL}?channel=...` with `{"allow": bool, "ttl": seconds}` for every channel but the
 * user's own (so its policy can restrict `monitor` and `system` too), called with the user's token; answers are cached
 * per user and channel for min(Django's ttl, our TTL for allow or deny); an unreachable Django means deny unless
 * AUTHZ_FAIL_OPEN=true.
 */
@Injectable()
export class ChannelAuthorizer {
  private readonly cache = new Map<string, CachedDecision>();
  private readonly inflight = new Map<string, Promise<boolean>>();

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly metrics: RealtimeMetrics,
  ) {}

  /** Resolves true when `principal` may read `channel`. Never rejects. */
  async mayRead(principal: Principal | undefined, channel: string): Promise<boolean> {
    if (channel.startsWith('user.')) {
      // A user channel is readable by its user only, whatever the mode.
      const allow = principal !== undefined && channel === `user.${principal.userId}`;
      this.metrics.authz.inc({ decision: allow ? 'allow' : 'deny', source: 'token' });
      return allow;
    }
    if (this.config.AUTHZ_MODE === 'token' || principal === undefined) {
      // Anonymous sockets exist only with AUTH_REQUIRED=false, which means "no per-user checks" for them.
      this.metrics.authz.inc({ decision: 'allow', source: 'token' });
      return true;
    }
    const key = `${principal.userId}\u0000${channel}`;
    const cached = this.cache.get(key);
    if (cached !== undefined && cached.untilMs > Date.now()) {
      this.metrics.authz.inc({ decision: cached.allow ? 'allow' : 'deny', source: 'cache' });
      return cached.allow;
    }
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      pending = this.askDjango(principal, channel, key).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private async askDjango(principal: Principal, channel: string, key: string): Promise<boolean> {
    const url = new URL(this.config.AUTHZ_DJANGO_URL ?? '');
    url.searchParams.set('channel', channel);
    try {
      const res = await fetch(url, {
        headers: { authorization: `Bearer ${principal.token}`, accept: 'application/json' },
        signal: AbortSignal.timeout(this.config.AUTHZ_TIMEOUT_MS),
      });
      let allow = false;
      let djangoTtl: number | undefined;
      if (res.ok) {
        const body: unknown = await res.json();
        const answer = typeof body === 'object' && body !== null ? (body as { allow?: unknown; ttl?: unknown }) : {};
        allow = answer.allow === true;
        if (typeof answer.ttl === 'number' && Number.isFinite(answer.ttl) && answer.ttl >= 0) djangoTtl = answer.ttl;
      } else if (res.status >= 500) {
        throw new Error(`Django answered ${res.status}`);
      }
      // Django may shorten the cache (e.g. for a membership about to change), never lengthen it past our bound.
      const bound = allow ? this.config.AUTHZ_ALLOW_TTL_SECONDS : this.config.AUTHZ_DENY_TTL_SECONDS;
      const ttl = Math.min(bound, djangoTtl ?? bound) * 1000;
      this.remember(key, allow, ttl);
      this.metrics.authz.inc({ decision: allow ? 'allow' : 'deny', source: 'django' });
      this.logger.info({ user: principal.userId, channel, allow, status: res.status }, 'channel authorization');
      return allow;
    } catch (err) {
      const allow = this.config.AUTHZ_FAIL_OPEN;
      this.metrics.authz.inc({ decision: allow ? 'allow' : 'deny', source: 'django_unreachable' });
      this.logger.warn({ user: principal.userId, channel, allow, err: err instanceof Error ? err.message : String(err) }, 'Django authorization unreachable');
      return allow;
    }
  }

  private remember(key: string, allow: boolean, ttlMs: number): void {
    if (ttlMs <= 0) return;
    if (this.cache.size >= 100_000) {
      const oldest = this.cache.keys().next();
      if (oldest.done !== true) this.cache.delete(oldest.value);
    }
    this.cache.set(key, { allow, untilMs: Date.now() + ttlMs });
  }
}
