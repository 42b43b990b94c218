import { startService } from '../support/service';
import { mintToken } from '../support/tokens';
import { TestClient } from '../support/ws-client';

export type Svc = Awaited<ReturnType<typeof startService>>;

/** One sample of the Prometheus text format: `name{labels} value`, labels matched as a subset. */
export async function metric(svc: Svc, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${svc.url}/metrics`)).text();
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map<string, string>();
    for (const pair of (m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have.set(pair[1], pair[2]);
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) {
      sum += Number(m[3]);
      found = true;
    }
  }
  if (!found) throw new Error(`no sample ${name}${JSON.stringify(labels)}`);
  return sum;
}

/** Poll `probe` until it returns true or the deadline passes (the service exposes no push for these states). */
export async function until(what: string, probe: () => boolean | Promise<boolean>, ms = 10_000, every = 20): Promise<void> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await probe()) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A socket that is open (greeted with `connection`) on `path` for `userId`. */
export async function connected(svc: Svc, path: string, userId: number | string = 1, query = ''): Promise<TestClient> {
  const c = await TestClient.connect(svc.ws(`${path}?token=${mintToken({ userId })}${query}`));
  await c.next('connection');
  return c;
}

/**
 * The well-behaved client every hostile test ends with: connects, publishes through the API and receives the event.
 * Returns once the round trip worked; throws otherwise.
 */
export async function wellBehaved(svc: Svc, executionId = 999): Promise<void> {
  const c = await connected(svc, `/ws/execution/${executionId}`, 1);
  try {
    const marker = `probe-${Math.random().toString(36).slice(2)}`;
    const res = await svc.publish({ channel: `execution.${executionId}`, event: { type: 'log_entry', message: marker } });
    if (res.status !== 202) throw new Error(`publish answered ${res.status}`);
    await c.collect((f) => f.type === 'log_entry' && f.message === marker, 1, 5000);
    c.send({ type: 'ping' });
    await c.next('pong');
  } finally {
    c.close();
  }
}
