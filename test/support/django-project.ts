import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './broker';

const PYTHON = '/usr/bin/python3';
const MODULE_ROOT = resolve(__dirname, '../../integrations/django');
/** The module's own test app: a minimal copy of AnsFlow's Project → Pipeline → PipelineExecution models. */
const TESTAPP_ROOT = join(MODULE_ROOT, 'tests');

/** Whether Debian's Django and simplejwt are importable by /usr/bin/python3. */
export async function djangoAvailable(): Promise<boolean> {
  try {
    await promisify(execFile)(PYTHON, ['-c', 'import django, rest_framework_simplejwt']);
    return true;
  } catch {
    return false;
  }
}

/** A request the test cancel/retry views received (the Authorization header as sent). */
export interface ControlCall {
  execution: number;
  action: 'cancel' | 'retry';
  authorization: string;
}

/**
 * A minimal Django project around the integration module, as its README says to mount it: settings with the
 * module's MODELS pointing at the test app, `path("", include("ansflow_realtime.urls"))`, a SQLite file, served by
 * `runserver` in a child process. `test_admin` is a test-only view (never part of the module) that changes
 * memberships instantly, so cache-TTL tests do not wait for a Python start-up between steps. The cancel and retry
 * views stand in for AnsFlow's `PipelineExecutionViewSet` actions (same URLs, status checks and answers).
 */
export class DjangoProject {
  private child: ChildProcess | undefined;
  private stderr = '';
  readonly dir: string;
  port = 0;

  constructor(private readonly secret: string) {
    this.dir = mkdtempSync(join(tmpdir(), 'ansflow-django-'));
    writeFileSync(
      join(this.dir, 'hardening_settings.py'),
      `
SECRET_KEY = ${JSON.stringify(secret)}
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "hardening_urls"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "realtime_testapp"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ${JSON.stringify(join(this.dir, 'db.sqlite3'))}}}
MIDDLEWARE = []
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LOGGING = {"version": 1, "disable_existing_loggers": True}
ANSFLOW_REALTIME = {
    "MODELS": {
        "execution": "realtime_testapp.PipelineExecution",
        "pipeline": "realtime_testapp.Pipeline",
        "project": "realtime_testapp.Project",
    },
}
`,
    );
    writeFileSync(
      join(this.dir, 'hardening_urls.py'),
      `
import json
import threading
import time
from django.http import JsonResponse
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt

# Test-only state: per-execution delays of the cancel/retry views, the calls they received.
SLOW = {}
CALLS = []
LOCK = threading.Lock()


@csrf_exempt
def test_admin(request):
    """Test-only: {"add"|"remove": [project_id, user_id]} changes a membership; {"status": [execution_id, status]}
    sets an execution's status; {"slow": [execution_id, seconds]} delays its cancel/retry. Answers the calls the
    cancel/retry views received so far."""
    from realtime_testapp.models import Membership, PipelineExecution
    body = json.loads(request.body)
    if "add" in body:
        Membership.objects.get_or_create(project_id=body["add"][0], user_id=body["add"][1])
    if "remove" in body:
        Membership.objects.filter(project_id=body["remove"][0], user_id=body["remove"][1]).delete()
    if "status" in body:
        PipelineExecution.objects.filter(pk=body["status"][0]).update(status=body["status"][1])
    if "slow" in body:
        SLOW[body["slow"][0]] = body["slow"][1]
    with LOCK:
        calls = list(CALLS)
    return JsonResponse({"ok": True, "calls": calls})


def _execution_action(request, pk, verb, allowed, act):
    """What AnsFlow's PipelineExecutionViewSet cancel/retry actions do, on the test app's models: simplejwt
    authentication (401), the object permission (403 here: a user outside the project), the status check (400
    with {"error": ...}), then the action."""
    from ansflow_realtime.authz import default_can_read
    from ansflow_realtime.views import _authenticate_bearer
    from realtime_testapp.models import PipelineExecution
    if request.method != "POST":
        return JsonResponse({"detail": 'Method "%s" not allowed.' % request.method}, status=405)
    with LOCK:
        CALLS.append({"execution": pk, "action": verb, "authorization": request.headers.get("Authorization", "")})
    time.sleep(SLOW.get(pk, 0))
    user = _authenticate_bearer(request)
    if user is None:
        return JsonResponse({"detail": "Authentication credentials were not provided."}, status=401)
    execution = PipelineExecution.objects.filter(pk=pk).first()
    if execution is None:
        return JsonResponse({"detail": "Not found."}, status=404)
    if not default_can_read(user, "execution", execution.pk):
        return JsonResponse({"detail": "You do not have permission to perform this action."}, status=403)
    if execution.status not in allowed:
        return JsonResponse({"error": 'Cannot %s execution with status "%s"' % (verb, execution.status)}, status=400)
    return act(execution)


def _cancel(execution):
    execution.status = "cancelled"
    execution.save(update_fields=["status"])
    return JsonResponse({"message": "Pipeline execution cancelled successfully", "execution": {"id": execution.pk, "status": execution.status}})


def _retry(execution):
    from realtime_testapp.models import PipelineExecution
    new = PipelineExecution.objects.create(pipeline=execution.pipeline, status="pending")
    return JsonResponse({"message": "Pipeline execution retried successfully", "execution": {"id": new.pk, "status": new.status}}, status=201)


@csrf_exempt
def cancel(request, pk):
    return _execution_action(request, pk, "cancel", ("pending", "running"), _cancel)


@csrf_exempt
def retry(request, pk):
    return _execution_action(request, pk, "retry", ("failed", "cancelled"), _retry)


urlpatterns = [
    path("", include("ansflow_realtime.urls")),
    path("test-admin", test_admin),
    path("api/v1/cicd/executions/<int:pk>/cancel/", cancel),
    path("api/v1/cicd/executions/<int:pk>/retry/", retry),
]
`,
    );
  }

  private env(): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      DJANGO_SETTINGS_MODULE: 'hardening_settings',
      PYTHONPATH: [this.dir, MODULE_ROOT, TESTAPP_ROOT].join(':'),
      PYTHONDONTWRITEBYTECODE: '1',
      PYTHONWARNINGS: 'ignore',
    };
  }

  /** Run a `manage.py shell -c` snippet; returns its stdout. */
  async shell(code: string): Promise<string> {
    const { stdout } = await promisify(execFile)(PYTHON, ['-m', 'django', 'shell', '-c', code], { cwd: this.dir, env: this.env() });
    return stdout;
  }

  /** migrate (syncdb for the test app, which has no migrations) and create the data the snippet describes. */
  async migrate(): Promise<void> {
    await promisify(execFile)(PYTHON, ['-m', 'django', 'migrate', '--run-syncdb', '--verbosity', '0'], { cwd: this.dir, env: this.env() });
  }

  get authorizeUrl(): string {
    return `http://127.0.0.1:${this.port}/api/v1/realtime/authorize`;
  }

  async start(): Promise<void> {
    this.port = await freePort();
    const child = spawn(PYTHON, ['-m', 'django', 'runserver', '--noreload', `127.0.0.1:${this.port}`], {
      cwd: this.dir,
      env: this.env(),
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    child.stderr?.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-4000);
    });
    // Ready when the authorize view answers (401 without a token); a runserver that exits fails at once.
    const deadline = Date.now() + 20_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`runserver exited ${child.exitCode}: ${this.stderr}`);
      if (
        (await fetch(`${this.authorizeUrl}?channel=system`).then(
          (r) => r.status,
          () => 0,
        )) === 401
      )
        return;
      if (Date.now() > deadline) throw new Error(`Django runserver on ${this.port} did not answer within 20 s (stderr: ${this.stderr})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Test-only changes (memberships, an execution's status, a slow execution); returns the cancel/retry calls seen. */
  async admin(body: { add?: [number, number]; remove?: [number, number]; status?: [number, string]; slow?: [number, number] }): Promise<ControlCall[]> {
    const res = await fetch(`http://127.0.0.1:${this.port}/test-admin`, { method: 'POST', body: JSON.stringify(body) });
    if (res.status !== 200) throw new Error(`test-admin answered ${res.status}`);
    return ((await res.json()) as { calls: ControlCall[] }).calls;
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (child === undefined || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    await exited;
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * The Django project of a describe block: made, migrated, filled by `setup` (a `manage.py shell` snippet that prints
 * the ids it created as JSON on its last line) and served before the block's tests, disposed after them. It also adds
 * the test that fails the run when Debian's Django is missing, instead of skipping: CI installs it (.ci/run).
 * `project` and `ids` are there once the block's first `beforeAll` has run.
 */
export function useDjangoProject<Ids>(secret: string, setup: string): { readonly project: DjangoProject; readonly ids: Ids } {
  let project: DjangoProject | undefined;
  let ids: Ids | undefined;
  let available = false;
  beforeAll(async () => {
    available = await djangoAvailable();
    if (!available) {
      console.warn('python3-django / python3-djangorestframework-simplejwt are not installed: these tests cannot run');
      return;
    }
    project = new DjangoProject(secret);
    await project.migrate();
    ids = JSON.parse((await project.shell(setup)).trim().split('\n').pop() ?? '{}') as Ids;
    await project.start();
  }, 60_000);
  afterAll(async () => {
    await project?.dispose();
  });
  it('has Django and simplejwt under /usr/bin/python3', () => {
    expect(available).toBe(true);
  });
  return {
    get project(): DjangoProject {
      if (project === undefined) throw new Error('no Django project: Django is not installed or the set-up failed');
      return project;
    },
    get ids(): Ids {
      if (ids === undefined) throw new Error('no Django data: Django is not installed or the set-up failed');
      return ids;
    },
  };
}
