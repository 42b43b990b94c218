import { bootstrap, type RunningService } from '../../src/bootstrap';
import { TEST_SECRET } from './tokens';

export const PUBLISH_KEY = 'test-publish-key-0123';

/** Start the real service in this process on a free port, as `main.ts` does. */
export async function startService(env: Record<string, string> = {}): Promise<RunningService & { ws: (path: string) => string; publish: (body: unknown) => Promise<Response> }> {
  const svc = await bootstrap({
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    DJANGO_SECRET_KEY: TEST_SECRET,
    PUBLISH_API_KEY: PUBLISH_KEY,
    ...env,
  });
  const ws = (path: string): string => `ws://127.0.0.1:${svc.port}${path}`;
  const publish = (body: unknown): Promise<Response> =>
    fetch(`${svc.url}/api/v1/publish`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${PUBLISH_KEY}` },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    });
  return { ...svc, ws, publish };
}
