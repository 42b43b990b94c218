import { ConfigError, loadConfig } from './config';

describe('loadConfig', () => {
  it('has working defaults in development without any variable', () => {
    const c = loadConfig({});
    expect(c.PORT).toBe(8001);
    expect(c.AUTH_REQUIRED).toBe(true);
    expect(c.jwtKeyGenerated).toBe(true);
  });

  it('ignores a variable it no longer reads (RABBITMQ_PREFETCH, whatever its value): old environments still start', () => {
    expect(loadConfig({ RABBITMQ_PREFETCH: '0' })).not.toHaveProperty('RABBITMQ_PREFETCH');
  });

  it('names every bad variable at once', () => {
    try {
      loadConfig({ PORT: 'abc', AUTH_REQUIRED: 'maybe', JWT_LEEWAY_SECONDS: '-1', DJANGO_SECRET_KEY: 'x'.repeat(40) });
      throw new Error('accepted');
    } catch (err) {
      expect(err).toBeInstanceOf(ConfigError);
      const msg = (err as Error).message;
      for (const name of ['PORT', 'AUTH_REQUIRED', 'JWT_LEEWAY_SECONDS']) expect(msg).toContain(name);
    }
  });

  it('refuses a missing or placeholder signing key in production', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(/DJANGO_SECRET_KEY/);
    expect(() => loadConfig({ NODE_ENV: 'production', DJANGO_SECRET_KEY: 'changeme' })).toThrow(/DJANGO_SECRET_KEY/);
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_ALGORITHM: 'RS256' })).toThrow(/JWT_VERIFYING_KEY/);
  });

  it('parses the origin allowlist', () => {
    expect(loadConfig({ ALLOWED_ORIGINS: 'https://a.example, https://b.example' }).allowedOrigins).toEqual(new Set(['https://a.example', 'https://b.example']));
    expect(loadConfig({ ALLOWED_ORIGINS: '*' }).allowedOrigins).toBeUndefined();
  });

  it('splits RABBITMQ_URL into node addresses and names a bad one', () => {
    expect(loadConfig({ RABBITMQ_URL: 'amqp://a:5672, amqp://b:5673,' }).brokerUrls).toEqual(['amqp://a:5672', 'amqp://b:5673']);
    expect(loadConfig({}).brokerUrls).toEqual([]);
    expect(() => loadConfig({ RABBITMQ_URL: 'amqp://a:5672,http://b' })).toThrow(/RABBITMQ_URL/);
  });

  it('takes DJANGO_API_URL as an http(s) base URL and names a bad one', () => {
    expect(loadConfig({ DJANGO_API_URL: 'http://django:8000' }).DJANGO_API_URL).toBe('http://django:8000');
    expect(loadConfig({}).DJANGO_API_URL).toBeUndefined();
    expect(() => loadConfig({ DJANGO_API_URL: 'django:8000' })).toThrow(/DJANGO_API_URL/);
    expect(() => loadConfig({ CONTROL_MAX_PER_SECOND: '0' })).toThrow(/CONTROL_MAX_PER_SECOND/);
  });

  it('resolves WORKERS (a number, or auto = the cores available) and requires a broker for more than one', () => {
    expect(loadConfig({}).workers).toBe(1);
    expect(loadConfig({ WORKERS: '3', RABBITMQ_URL: 'amqp://a' }).workers).toBe(3);
    expect(loadConfig({ WORKERS: 'auto', RABBITMQ_URL: 'amqp://a' }).workers).toBeGreaterThanOrEqual(1);
    expect(() => loadConfig({ WORKERS: '0', RABBITMQ_URL: 'amqp://a' })).toThrow(/WORKERS: must be auto or a whole number/);
    expect(() => loadConfig({ WORKERS: 'many', RABBITMQ_URL: 'amqp://a' })).toThrow(/WORKERS/);
    expect(() => loadConfig({ WORKERS: '2' })).toThrow(/WORKERS: more than one worker \(or auto\) requires RABBITMQ_URL/);
  });

  it('refuses the quick start keys in production', () => {
    expect(loadConfig({ DJANGO_SECRET_KEY: 'dev-only-not-a-secret' }).jwtKey).toBe('dev-only-not-a-secret');
    expect(() => loadConfig({ NODE_ENV: 'production', DJANGO_SECRET_KEY: 'dev-only-not-a-secret' })).toThrow(/DJANGO_SECRET_KEY/);
    expect(() => loadConfig({ NODE_ENV: 'production', DJANGO_SECRET_KEY: 'x'.repeat(40), PUBLISH_API_KEY: 'dev-only-publish-key' })).toThrow(/PUBLISH_API_KEY/);
  });
});
