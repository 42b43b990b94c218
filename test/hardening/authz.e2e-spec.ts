import { ChannelAuthorizer } from '../../src/auth/channel-authorizer';
import { startService } from '../support/service';
import { mintToken, TEST_SECRET } from '../support/tokens';
import { TestClient } from '../support/ws-client';
import { useDjangoProject } from '../support/django-project';
import { metric, until, type Svc } from './support';

/**
 * AUTHZ_MODE=django against the real authorize view of integrations/django, served by Debian's Django in a child
 * process (a throw-away project in a temp dir, SQLite, data made by a `manage.py shell` snippet).
 */
interface Ids {
  alice: number;
  bob: number;
  carol: number;
  p1: number;
  p2: number;
  pipeline1: number;
  execution1: number;
}

const ALLOW_TTL_S = 2;
const DENY_TTL_S = 1;

const SETUP = `
import json
from django.contrib.auth import get_user_model
from realtime_testapp.models import Pipeline, PipelineExecution, Project
U = get_user_model()
alice = U.objects.create_user("alice", password="x")
bob = U.objects.create_user("bob", password="x")
carol = U.objects.create_user("carol", password="x")
p1 = Project.objects.create(name="alice's", owner=alice)
p2 = Project.objects.create(name="carol's", owner=carol)
pl = Pipeline.objects.create(name="build", project=p1)
ex = PipelineExecution.objects.create(pipeline=pl)
print(json.dumps({"alice": alice.pk, "bob": bob.pk, "carol": carol.pk, "p1": p1.pk, "p2": p2.pk, "pipeline1": pl.pk, "execution1": ex.pk}))
`;

/** Opens a socket and resolves with the first thing that happens: greeted (`open`) or closed (code, reason). */
async function attempt(svc: Svc, path: string, userId: number): Promise<{ open: true; client: TestClient } | { open: false; code: number; reason: string }> {
  const c = await TestClient.connect(svc.ws(`${path}?token=${mintToken({ userId })}`));
  try {
    await c.next('connection', 5000);
    return { open: true, client: c };
  } catch {
    const closed = await c.closedWith();
    return { open: false, code: closed.code, reason: closed.reason };
  }
}

async function expectRefused(svc: Svc, path: string, userId: number): Promise<void> {
  const r = await attempt(svc, path, userId);
  if (r.open) {
    r.client.close();
    throw new Error(`${path} for user ${userId} was allowed`);
  }
  expect({ code: r.code, reason: r.reason }).toEqual({ code: 4003, reason: 'forbidden' });
}

async function expectAllowed(svc: Svc, path: string, userId: number): Promise<void> {
  const r = await attempt(svc, path, userId);
  if (!r.open) throw new Error(`${path} for user ${userId} closed ${r.code} ${r.reason}`);
  r.client.close();
}

const authz = (svc: Svc, decision: string, source: string): Promise<number> => metric(svc, 'websocket_authz_decisions_total', { decision, source });

describe('channel authorization, AUTHZ_MODE=django against the real Django view', () => {
  const django = useDjangoProject<Ids>(TEST_SECRET, SETUP);

  describe('Django up', () => {
    let svc: Svc;
    beforeAll(async () => {
      svc = await startService({
        AUTHZ_MODE: 'django',
        AUTHZ_DJANGO_URL: django.project.authorizeUrl,
        AUTHZ_ALLOW_TTL_SECONDS: String(ALLOW_TTL_S),
        AUTHZ_DENY_TTL_SECONDS: String(DENY_TTL_S),
      });
    });
    afterAll(async () => {
      await svc.shutdown();
    });

    it('lets the project owner in on execution, pipeline and project sockets; refuses another user with 4003', async () => {
      const djangoAllow = await authz(svc, 'allow', 'django');
      const djangoDeny = await authz(svc, 'deny', 'django');
      for (const path of [`/ws/execution/${django.ids.execution1}`, `/ws/pipeline/${django.ids.pipeline1}`, `/ws/project/${django.ids.p1}`]) {
        await expectAllowed(svc, path, django.ids.alice);
        await expectRefused(svc, path, django.ids.bob);
      }
      expect(await authz(svc, 'allow', 'django')).toBe(djangoAllow + 3);
      expect(await authz(svc, 'deny', 'django')).toBe(djangoDeny + 3);
    });

    it('refuses a valid token of a user Django does not know (401 from Django means deny)', async () => {
      await expectRefused(svc, `/ws/project/${django.ids.p1}`, 9999);
    });

    it('answers a monitor subscribe_execution of a forbidden execution with an error frame forbidden', async () => {
      const bob = await TestClient.connect(svc.ws(`/ws/monitor?token=${mintToken({ userId: django.ids.bob })}`));
      await bob.next('connection');
      bob.send({ type: 'subscribe_execution', executionId: django.ids.execution1 });
      expect(await bob.next('error')).toMatchObject({ type: 'error', code: 'forbidden' });
      expect(bob.frames.some((f) => f.type === 'subscribed')).toBe(false);
      // The socket stays usable.
      bob.send({ type: 'ping' });
      await bob.next('pong');
      expect(bob.closed).toBeUndefined();

      const alice = await TestClient.connect(svc.ws(`/ws/monitor?token=${mintToken({ userId: django.ids.alice })}`));
      await alice.next('connection');
      alice.send({ type: 'subscribe_execution', executionId: django.ids.execution1 });
      expect(await alice.next('subscribed')).toMatchObject({ execution_id: django.ids.execution1 });
      await alice.next('execution_status');
      // An event of the execution reaches alice and not bob.
      expect((await svc.publish({ channel: `execution.${django.ids.execution1}`, event: { type: 'log_entry', message: 'secret' } })).status).toBe(202);
      await alice.next('log_entry');
      bob.send({ type: 'ping' });
      await bob.next('pong');
      expect(bob.frames.some((f) => f.type === 'log_entry')).toBe(false);
      alice.close();
      bob.close();
    });

    it('keeps a deny for AUTHZ_DENY_TTL_SECONDS and an allow for AUTHZ_ALLOW_TTL_SECONDS', async () => {
      const path = `/ws/project/${django.ids.p2}`;
      // Deny, cached: bob is made a member right after the deny, but the cached answer holds until the deny TTL.
      const t0 = Date.now();
      await expectRefused(svc, path, django.ids.bob);
      await django.project.admin({ add: [django.ids.p2, django.ids.bob] });
      const cacheDeny = await authz(svc, 'deny', 'cache');
      await expectRefused(svc, path, django.ids.bob);
      expect(await authz(svc, 'deny', 'cache')).toBe(cacheDeny + 1);
      let allowedAfter = 0;
      await until(
        'bob is let in once the deny expired',
        async () => {
          const r = await attempt(svc, path, django.ids.bob);
          if (r.open) r.client.close();
          allowedAfter = Date.now() - t0;
          return r.open;
        },
        5000,
        100,
      );
      expect(allowedAfter).toBeGreaterThanOrEqual(DENY_TTL_S * 1000);

      // Allow, cached: bob is removed, the cached allow holds until the allow TTL.
      const t1 = Date.now();
      await expectAllowed(svc, path, django.ids.bob);
      await django.project.admin({ remove: [django.ids.p2, django.ids.bob] });
      const cacheAllow = await authz(svc, 'allow', 'cache');
      await expectAllowed(svc, path, django.ids.bob);
      expect(await authz(svc, 'allow', 'cache')).toBe(cacheAllow + 1);
      let refusedAfter = 0;
      await until(
        'bob is refused once the allow expired',
        async () => {
          const r = await attempt(svc, path, django.ids.bob);
          if (r.open) r.client.close();
          refusedAfter = Date.now() - t1;
          return !r.open;
        },
        8000,
        100,
      );
      expect(refusedAfter).toBeGreaterThanOrEqual(ALLOW_TTL_S * 1000);
      console.log(`deny cached for ${allowedAfter} ms (TTL ${DENY_TTL_S} s), allow cached for ${refusedAfter} ms (TTL ${ALLOW_TTL_S} s)`);
    });

    it("never lets a user read another user's user.{id} channel", async () => {
      // Every endpoint of alice's, and bob on the monitor: an event on user.{bob} reaches bob only.
      const aliceSockets = await Promise.all(
        [`/ws/execution/${django.ids.execution1}`, `/ws/pipeline/${django.ids.pipeline1}`, `/ws/project/${django.ids.p1}`, '/ws/monitor', '/ws/system'].map(
          async (p) => {
            const c = await TestClient.connect(svc.ws(`${p}?token=${mintToken({ userId: django.ids.alice })}`));
            await c.next('connection');
            return c;
          },
        ),
      );
      const bob = await TestClient.connect(svc.ws(`/ws/system?token=${mintToken({ userId: django.ids.bob })}`));
      await bob.next('connection');
      await svc.publish({ channel: `user.${django.ids.bob}`, event: { type: 'system_notification', level: 'info', title: 'for bob', message: 'private' } });
      await svc.publish({ channel: `user.${django.ids.alice}`, event: { type: 'system_notification', level: 'info', title: 'for alice', message: 'private' } });
      await bob.collect((f) => f.title === 'for bob', 1);
      for (const c of aliceSockets) {
        // Events reach a socket in publish order: once alice's later event arrived, bob's would have too.
        await c.collect((f) => f.title === 'for alice', 1);
        expect(c.frames.some((f) => f.title === 'for bob')).toBe(false);
        c.close();
      }
      bob.close();
      // The authorizer refuses user.{other} whatever the mode, and Django's default policy agrees.
      const authorizer = svc.app.get(ChannelAuthorizer);
      const alice = { userId: String(django.ids.alice), expiresAtMs: Date.now() + 60_000, token: mintToken({ userId: django.ids.alice }) };
      expect(await authorizer.mayRead(alice, `user.${django.ids.bob}`)).toBe(false);
      expect(await authorizer.mayRead(alice, `user.${django.ids.alice}`)).toBe(true);
      expect(await authorizer.mayRead(undefined, `user.${django.ids.bob}`)).toBe(false);
      const res = await fetch(`${django.project.authorizeUrl}?channel=user.${django.ids.bob}`, { headers: { authorization: `Bearer ${alice.token}` } });
      expect(await res.json()).toMatchObject({ allow: false });
    });

    it('denies (4003) when Django is down, and counts it as django_unreachable', async () => {
      await django.project.stop();
      const unreachable = await authz(svc, 'deny', 'django_unreachable');
      // carol's own project: allowed by the policy, never asked before, so not cached.
      await expectRefused(svc, `/ws/project/${django.ids.p2}`, django.ids.carol);
      expect(await authz(svc, 'deny', 'django_unreachable')).toBe(unreachable + 1);
    });
  });

  describe('Django down, AUTHZ_FAIL_OPEN=true', () => {
    let svc: Svc;
    beforeAll(async () => {
      if (django.project.port === 0) return;
      svc = await startService({ AUTHZ_MODE: 'django', AUTHZ_DJANGO_URL: django.project.authorizeUrl, AUTHZ_FAIL_OPEN: 'true', AUTHZ_TIMEOUT_MS: '500' });
    });
    afterAll(async () => {
      await svc?.shutdown();
    });

    it('allows, and counts the decision as django_unreachable', async () => {
      const before = await authz(svc, 'allow', 'django_unreachable');
      await expectAllowed(svc, `/ws/project/${django.ids.p2}`, django.ids.bob);
      expect(await authz(svc, 'allow', 'django_unreachable')).toBe(before + 1);
    });
  });
});
