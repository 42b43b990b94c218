import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { availableCores } from '../cluster/available-cores';

const bool = z.enum(['true', 'false', '1', '0', 'yes', 'no'], { message: 'must be true or false' }).transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (min: number) => z.coerce.number().int().min(min);
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v));

/** The keys the README's quick start exports for local use: accepted in development and tests, refused in production. */
export const QUICKSTART_KEY = 'dev-only-not-a-secret';
export const QUICKSTART_PUBLISH_KEY = 'dev-only-publish-key';

/** Signing keys that must never be accepted outside tests (Django's template default and friends). */
const PLACEHOLDER_KEYS = new Set(['', 'changeme', 'change-me', 'secret', 'your-secret-key', 'django-insecure']);

/**
 * The environment, validated once at start-up. Every variable is documented in the README's configuration table;
 * nothing else in `src/` reads `process.env`.
 */
const EnvSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  SERVICE_NAME: z.string().min(1).default('ansflow-realtime'),
  PORT: int(0).max(65535).default(8001),
  HOST: z.string().min(1).default('0.0.0.0'),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  WORKERS: z
    .string()
    .trim()
    .regex(/^(auto|[1-9]\d{0,2})$/, 'must be auto or a whole number from 1 to 999')
    .default('1'),

  DJANGO_SECRET_KEY: optionalString,
  JWT_ALGORITHM: z.enum(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'ES256', 'ES384', 'ES512']).default('HS256'),
  JWT_VERIFYING_KEY: optionalString,
  JWT_AUDIENCE: optionalString,
  JWT_ISSUER: optionalString,
  JWT_LEEWAY_SECONDS: int(0).max(300).default(5),
  AUTH_REQUIRED: bool.default(true),
  AUTH_FRAME_TIMEOUT_MS: int(100).max(60_000).default(5000),

  PUBLISH_API_KEY: optionalString,
  PUBLISH_MAX_BODY_BYTES: int(1024).default(1_048_576),
  PUBLISH_MAX_BATCH: int(1).default(1000),

  RABBITMQ_URL: optionalString,
  RABBITMQ_EXCHANGE: z.string().min(1).default('ansflow.realtime'),
  RABBITMQ_STREAM_PORT: int(1).max(65535).default(5552),
  BROKER_MAX_MESSAGE_BYTES: int(64).default(262_144),
  STREAM_MAX_AGE: z
    .string()
    .regex(/^\d+[YMDhms]$/, 'must look like 24h, 7D or 30m')
    .default('24h'),
  STREAM_MAX_BYTES: int(1_000_000).default(2_000_000_000),
  STREAM_DIGEST_EVENTS: int(0).max(100_000).default(2000),
  STREAM_TAIL_READER: z.enum(['amqp', 'stream']).default('amqp'),

  HISTORY_SIZE: int(0).default(1000),
  HISTORY_TTL_SECONDS: int(0).default(900),
  HISTORY_MAX_CHANNELS: int(1).default(20_000),
  HISTORY_MAX_BYTES: int(0).default(134_217_728),
  DEDUP_WINDOW: int(0).default(100_000),

  WS_MAX_CONNECTIONS: int(1).default(19_500),
  WS_MAX_CONNECTIONS_PER_USER: int(1).default(200),
  WS_MAX_CONNECTIONS_PER_IP: int(1).default(2000),
  WS_MAX_FRAME_BYTES: int(128).default(65_536),
  WS_MAX_FRAMES_PER_SECOND: int(1).default(50),
  WS_SEND_BUFFER_BYTES: int(1024).default(1_048_576),
  WS_HEARTBEAT_INTERVAL_MS: int(100).default(25_000),
  WS_HEARTBEAT_TIMEOUT_MS: int(100).default(10_000),
  MONITOR_MAX_SUBSCRIPTIONS: int(1).default(200),
  BATCH_WINDOW_MS: int(0).max(100).default(5),
  BATCH_MAX_EVENTS: int(1).default(100),
  ALLOWED_ORIGINS: optionalString,

  AUTHZ_MODE: z.enum(['token', 'django']).default('token'),
  AUTHZ_DJANGO_URL: optionalString,
  AUTHZ_ALLOW_TTL_SECONDS: int(0).default(60),
  AUTHZ_DENY_TTL_SECONDS: int(0).default(10),
  AUTHZ_TIMEOUT_MS: int(50).default(2000),
  AUTHZ_FAIL_OPEN: bool.default(false),

  DJANGO_API_URL: optionalString,
  CONTROL_TIMEOUT_MS: int(50).default(5000),
  CONTROL_MAX_PER_SECOND: int(1).default(3),

  SHUTDOWN_TIMEOUT_MS: int(100).default(10_000),
});

type Env = z.infer<typeof EnvSchema>;

export interface AppConfig extends Omit<Env, 'DJANGO_SECRET_KEY' | 'ALLOWED_ORIGINS'> {
  /** The key tokens are verified with: the HMAC secret, or the PEM public key for RS/ES algorithms. */
  jwtKey: string;
  /** True when no key was configured in development and a random one was generated (no token will verify). */
  jwtKeyGenerated: boolean;
  /** `undefined` = any origin; otherwise the exact origins allowed to open a browser socket. */
  allowedOrigins: Set<string> | undefined;
  /** WORKERS resolved: processes serving the port (1 = one process, no cluster; `auto` = availableCores()). */
  workers: number;
  /** RABBITMQ_URL split at commas: the addresses of one cluster's nodes (empty: embedded mode, no broker). */
  brokerUrls: string[];
  version: string;
}

/** Thrown at start-up; its message names every bad variable. */
export class ConfigError extends Error {
  constructor(public readonly problems: string[]) {
    super(`Invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env, version = '0.0.0'): AppConfig {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`));
  }
  const e = parsed.data;
  const problems: string[] = [];
  let jwtKey: string;
  let jwtKeyGenerated = false;
  if (e.JWT_ALGORITHM.startsWith('HS')) {
    if (e.DJANGO_SECRET_KEY === undefined && e.NODE_ENV === 'development') {
      // A fresh `npm start` must run; with a random key no token verifies, which is the safe failure.
      jwtKey = randomBytes(32).toString('hex');
      jwtKeyGenerated = true;
    } else if (e.DJANGO_SECRET_KEY === undefined || PLACEHOLDER_KEYS.has(e.DJANGO_SECRET_KEY.toLowerCase())) {
      problems.push('DJANGO_SECRET_KEY: required (Django SECRET_KEY that signs the access tokens); placeholder values are refused');
      jwtKey = '';
    } else {
      if (e.NODE_ENV === 'production' && e.DJANGO_SECRET_KEY === QUICKSTART_KEY) {
        problems.push('DJANGO_SECRET_KEY: the README quick start key is for trying the service locally, never in production');
      }
      jwtKey = e.DJANGO_SECRET_KEY;
    }
  } else if (e.JWT_VERIFYING_KEY === undefined) {
    problems.push(`JWT_VERIFYING_KEY: required with JWT_ALGORITHM=${e.JWT_ALGORITHM} (PEM public key)`);
    jwtKey = '';
  } else {
    jwtKey = e.JWT_VERIFYING_KEY.replace(/\\n/g, '\n');
  }
  if (e.PUBLISH_API_KEY !== undefined && e.PUBLISH_API_KEY.length < 8) {
    problems.push('PUBLISH_API_KEY: at least 8 characters');
  }
  if (e.DJANGO_API_URL !== undefined && !/^https?:\/\/[^/?#]+/.test(e.DJANGO_API_URL)) {
    problems.push("DJANGO_API_URL: must start with http:// or https:// (Django's base URL, e.g. http://django:8000)");
  }
  if (e.NODE_ENV === 'production' && e.PUBLISH_API_KEY === QUICKSTART_PUBLISH_KEY) {
    problems.push('PUBLISH_API_KEY: the README quick start key is for trying the service locally, never in production');
  }
  if (e.AUTHZ_MODE === 'django' && e.AUTHZ_DJANGO_URL === undefined) {
    problems.push('AUTHZ_DJANGO_URL: required with AUTHZ_MODE=django');
  }
  // Several nodes of one cluster, comma-separated: the service connects to one that answers and fails over.
  const brokerUrls = (e.RABBITMQ_URL ?? '')
    .split(',')
    .map((u) => u.trim())
    .filter((u) => u !== '');
  for (const u of brokerUrls) {
    if (!/^amqps?:\/\/[^/?#]+/.test(u)) problems.push('RABBITMQ_URL: each comma-separated address must start with amqp:// or amqps://');
  }
  // Without a broker every worker would have its own hub: an event published to one worker's API would reach only
  // that worker's sockets. With one, each worker reads the whole stream, as separate instances do.
  if (e.WORKERS !== '1' && brokerUrls.length === 0) problems.push('WORKERS: more than one worker (or auto) requires RABBITMQ_URL');
  if (problems.length > 0) throw new ConfigError(problems);

  const { DJANGO_SECRET_KEY: _secret, ALLOWED_ORIGINS, ...rest } = e;
  void _secret;
  return {
    ...rest,
    jwtKey,
    jwtKeyGenerated,
    brokerUrls,
    workers: e.WORKERS === 'auto' ? availableCores() : Number(e.WORKERS),
    allowedOrigins:
      ALLOWED_ORIGINS === undefined || ALLOWED_ORIGINS.trim() === '*'
        ? undefined
        : new Set(
            ALLOWED_ORIGINS.split(',')
              .map((o) => o.trim())
              .filter((o) => o !== ''),
          ),
    version,
  };
}

/** Nest injection token for the validated configuration. */
export const APP_CONFIG = Symbol('APP_CONFIG');
