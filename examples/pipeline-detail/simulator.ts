/**
 * A simulated pipeline run, published through the service's HTTP publish API exactly as Django's publisher
 * would send it: `execution_update` when the run starts, moves on and ends, `step_progress` per step change,
 * `log_entry` for each output line (levels info, success, error).
 */
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';

interface StepScript {
  id: number;
  name: string;
  /**
   * How long the step reports it took (seconds). Scripted rather than measured: the run is replayed faster than
   * a real one, but the page should show believable durations.
   */
  seconds: number;
  /** Output lines; a line starting with `!` is printed at level error (a flaky test that is retried). */
  lines: string[];
}

/** A web app's build-and-deploy pipeline, trimmed to a run that takes tens of seconds at demo speed. */
export const PIPELINE_NAME = 'ansflow-web · build & deploy';

export const STEPS: StepScript[] = [
  {
    id: 101,
    seconds: 3.2,
    name: 'Checkout',
    lines: [
      'git init /builds/ansflow-web',
      'git fetch --depth 50 origin refs/heads/main',
      'HEAD is now at 3f9c2e1 feat(pipelines): show step durations',
      "Submodule path 'deploy/ansible-roles': checked out 'b41d7a0'",
    ],
  },
  {
    id: 102,
    seconds: 41.7,
    name: 'Install dependencies',
    lines: [
      'node v20.19.4, npm 10.8.2',
      'npm ci --no-audit --prefer-offline',
      'restored cache key node-modules-8c1e5b (412 MB)',
      'added 1284 packages in 9.412s',
      '184 packages are looking for funding',
    ],
  },
  {
    id: 103,
    seconds: 18.4,
    name: 'Lint & type check',
    lines: ['eslint --max-warnings 0 "src/**/*.{ts,tsx}"', '✔ 612 files linted, no problems', 'tsc --noEmit -p tsconfig.json', 'type check passed'],
  },
  {
    id: 104,
    seconds: 64.9,
    name: 'Unit tests',
    lines: [
      'jest --ci --reporters=default --reporters=jest-junit',
      'PASS src/pipelines/PipelineList.test.tsx (4.1 s)',
      'PASS src/pipelines/ExecutionDetail.test.tsx (5.3 s)',
      'PASS src/api/client.test.ts',
      '!FAIL src/realtime/socket.test.ts › reconnects after close: Timeout - Async callback was not invoked within 5000 ms',
      'retrying failed test files (1 of 2)',
      'PASS src/realtime/socket.test.ts (2.2 s)',
      'PASS src/settings/Tokens.test.tsx',
      'Tests: 418 passed, 418 total · Snapshots: 37 passed · Time: 21.8 s',
      'coverage: statements 86.4 %, branches 79.1 %',
    ],
  },
  {
    id: 105,
    seconds: 87.3,
    name: 'Build image',
    lines: [
      'docker build -t registry.ansflow.local/ansflow-web:3f9c2e1 .',
      'Step 1/9 : FROM node:20-alpine AS build',
      'Step 4/9 : RUN npm run build',
      'vite v5.4.10 building for production...',
      '✓ 1742 modules transformed.',
      'dist/assets/index-4d1a9c3e.js   812.44 kB │ gzip: 243.10 kB',
      'Step 9/9 : CMD ["nginx", "-g", "daemon off;"]',
      'Successfully built 9e0c41f27a6b',
    ],
  },
  {
    id: 106,
    seconds: 12.6,
    name: 'Push image',
    lines: [
      'docker push registry.ansflow.local/ansflow-web:3f9c2e1',
      '5f70bf18a086: Layer already exists',
      'e2eb06d8af82: Pushed',
      '3f9c2e1: digest: sha256:7c1e0b3f5d... size: 1993',
    ],
  },
  {
    id: 107,
    seconds: 46.1,
    name: 'Deploy to staging',
    lines: [
      'ansible-playbook -i inventories/staging deploy.yml -e image_tag=3f9c2e1',
      'PLAY [web] *********************************************************************',
      'TASK [pull image] ok: [web-1] ok: [web-2]',
      'TASK [rolling restart] changed: [web-1]',
      'TASK [rolling restart] changed: [web-2]',
      'PLAY RECAP web-1 : ok=7 changed=2 failed=0 · web-2 : ok=7 changed=2 failed=0',
    ],
  },
  {
    id: 108,
    seconds: 9.8,
    name: 'Smoke tests',
    lines: ['GET https://staging.ansflow.local/health → 200 in 41 ms', 'GET /api/v1/pipelines/ → 200 in 88 ms', 'login flow: ok (1.9 s)'],
  },
];

export interface SimulatorOptions {
  /** Base URL of the service's HTTP port. */
  serviceUrl: string;
  publishKey: string;
  executionId: number;
  /** Pause between log lines (ms). */
  lineDelayMs?: number;
  /** How long a publish keeps being retried while the service is unreachable (it may be restarting). */
  retryForMs?: number;
}

export interface PublishedLine {
  level: string;
  message: string;
  step_name: string | null;
}

type Event = Record<string, unknown> & { type: string };

/**
 * Emits `line` (a PublishedLine) after each accepted log line and `done` at the end. `lines` is every log line
 * in publishing order: the page must show exactly these.
 */
export class PipelineSimulator extends EventEmitter {
  readonly lines: PublishedLine[] = [];
  private stopped = false;
  private cancelled = false;
  private readonly runId = `sim-${randomBytes(6).toString('hex')}`;
  private sequence = 0;

  constructor(private readonly options: SimulatorOptions) {
    super();
  }

  stop(): void {
    this.stopped = true;
  }

  /** What Django does after a successful cancel: the run stops at its next line and publishes `cancelled`. */
  cancel(): void {
    this.cancelled = true;
  }

  async run(): Promise<void> {
    let elapsed = 0;
    const status = new Map<number, string>(STEPS.map((s) => [s.id, 'pending']));
    const durations = new Map<number, number>();
    const update = async (runStatus: string, completed: number): Promise<void> => {
      await this.publish({
        type: 'execution_update',
        status: runStatus,
        pipeline_name: PIPELINE_NAME,
        steps: STEPS.map((s, order) => ({ id: s.id, name: s.name, order, status: status.get(s.id), execution_time: durations.get(s.id) ?? null })),
        total_steps: STEPS.length,
        completed_steps: completed,
        execution_time: Math.round(elapsed * 10) / 10,
      });
    };

    await update('running', 0);
    await this.log('info', `Execution #${this.options.executionId} of ${PIPELINE_NAME} started (trigger: push to main by alice)`, null, 'pipeline');
    const cancelledAt = async (step: StepScript, index: number): Promise<void> => {
      status.set(step.id, 'cancelled');
      await this.stepProgress(step, 'cancelled', null, '');
      await update('cancelled', index);
      await this.log('warning', `Execution #${this.options.executionId} cancelled`, null, 'pipeline');
      this.emit('done');
    };
    for (const [index, step] of STEPS.entries()) {
      if (this.stopped) return;
      status.set(step.id, 'running');
      await this.stepProgress(step, 'running', null, '');
      await this.log('info', `Starting step ${index + 1}/${STEPS.length}: ${step.name}`, step.name, 'step');
      for (const line of step.lines) {
        if (this.stopped) return;
        if (this.cancelled) return cancelledAt(step, index);
        await this.pause();
        const failed = line.startsWith('!');
        await this.log(failed ? 'error' : 'info', failed ? line.slice(1) : line, step.name, 'step_output');
      }
      elapsed += step.seconds;
      status.set(step.id, 'success');
      durations.set(step.id, step.seconds);
      await this.stepProgress(step, 'success', step.seconds, step.lines[step.lines.length - 1] ?? '');
      await this.log('success', `Step ${step.name} succeeded in ${step.seconds.toFixed(1)} s`, step.name, 'step');
      await update('running', index + 1);
    }
    await update('success', STEPS.length);
    await this.log('success', `Pipeline succeeded in ${formatDuration(elapsed)}`, null, 'pipeline');
    this.emit('done');
  }

  private pause(): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, this.options.lineDelayMs ?? 250));
  }

  private async stepProgress(step: StepScript, status: string, took: number | null, output: string): Promise<void> {
    await this.publish({
      type: 'step_progress',
      step_id: step.id,
      step_name: step.name,
      status,
      execution_time: took,
      output,
      error_message: '',
    });
  }

  private async log(level: string, message: string, stepName: string | null, source: string): Promise<void> {
    await this.publish({ type: 'log_entry', level, message, step_name: stepName, source });
    const line: PublishedLine = { level, message, step_name: stepName };
    this.lines.push(line);
    this.emit('line', line);
  }

  /**
   * POST one event; retried while the service is unreachable or answers 503 (broker down), so a restart delays
   * the run instead of losing lines.
   */
  private async publish(fields: Event): Promise<void> {
    const event = { ...fields, execution_id: this.options.executionId, timestamp: new Date().toISOString() };
    // The message id makes a retry idempotent: a publish that reached the service before the connection broke
    // is not delivered twice.
    const body = JSON.stringify({ channel: `execution.${this.options.executionId}`, event, message_id: `${this.runId}-${this.sequence++}` });
    const deadline = Date.now() + (this.options.retryForMs ?? 60_000);
    for (let attempt = 0; ; attempt++) {
      let problem: string;
      try {
        const response = await fetch(`${this.options.serviceUrl}/api/v1/publish`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${this.options.publishKey}` },
          body,
          signal: AbortSignal.timeout(5000),
        });
        if (response.status === 202) return;
        problem = `HTTP ${response.status}: ${await response.text()}`;
        if (response.status !== 503) throw new Error(`publish refused: ${problem}`);
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('publish refused')) throw error;
        problem = error instanceof Error ? error.message : String(error);
      }
      if (Date.now() > deadline) throw new Error(`publish failed for ${this.options.retryForMs ?? 60_000} ms: ${problem}`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(1000, 50 * 2 ** attempt)));
    }
  }
}

function formatDuration(seconds: number): string {
  const minutes = Math.floor(seconds / 60);
  return minutes === 0 ? `${seconds.toFixed(1)} s` : `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}
