import { KnownEventType, ServerFrameType } from './frame-types';

type Json = Record<string, unknown>;

/**
 * The latest state of one execution. `execution_status` carries it twice: under `data` (this service's clients)
 * and at the top level, which is where AnsFlow's `useWebSocket` reads it (`data.execution || data`). Besides the
 * fields below it keeps every other field Django published for the execution (its latest value).
 */
export interface ExecutionSnapshot extends Json {
  execution_id: number;
  status: string;
  pipeline_name: string | null;
  steps: Json[];
  total_steps: number;
  completed_steps: number;
  successful_steps: number;
  failed_steps: number;
  current_step: Json | null;
  execution_time: number | null;
  timestamp: string;
}

const DONE = new Set(['success', 'failed', 'skipped', 'cancelled', 'completed', 'timeout']);
const SUCCEEDED = new Set(['success', 'completed']);
const FAILED = new Set(['failed', 'timeout']);
/** Fields of an event that describe its delivery, not the execution: never copied into the snapshot. */
const TRANSPORT = new Set(['type', 'channel', 'position', 'data', 'message_id', 'published_at']);
/** Fields the snapshot computes or checks itself rather than copying. */
const TYPED = new Set(['execution_id', 'status', 'pipeline_name', 'steps', 'total_steps', 'completed_steps', 'successful_steps', 'failed_steps', 'current_step', 'execution_time', 'timestamp']);
/** Fields of a `step_progress` event that belong to the execution or the delivery, not to the step. */
const NOT_STEP = new Set([...TRANSPORT, 'execution_id', 'pipeline_id', 'pipeline_name']);

/** The `execution_status` frame: the snapshot at the top level and under `data`. */
export function executionStatusFrame(snap: ExecutionSnapshot, position: number): Json {
  return { ...snap, type: ServerFrameType.ExecutionStatus, data: snap, position };
}

/**
 * Remembers the latest state of each execution from the events seen (`execution_status`, `execution_update`,
 * `step_progress`), so a page opening mid-run gets the current snapshot at once. Bounded: the least recently
 * updated executions are forgotten first.
 */
export class ExecutionSnapshots {
  private readonly byId = new Map<number, ExecutionSnapshot>();

  constructor(private readonly maxExecutions = 10_000) {}

  /** Whether an event of `type` on `channel` changes a snapshot (`apply` ignores every other). */
  uses(channel: string, type: unknown): boolean {
    if (!channel.startsWith('execution.')) return false;
    return type === KnownEventType.ExecutionStatus || type === KnownEventType.ExecutionUpdate || type === KnownEventType.StepProgress;
  }

  apply(channel: string, event: Json): void {
    if (!this.uses(channel, event.type)) return;
    const id = Number(channel.slice('execution.'.length));
    const type = event.type;
    const snap = this.touch(id);
    const src = type === KnownEventType.ExecutionStatus && isObject(event.data) ? event.data : event;
    if (type === KnownEventType.StepProgress) this.upsertStep(snap, src);
    else {
      for (const [key, value] of Object.entries(src)) if (!TRANSPORT.has(key) && !TYPED.has(key) && value !== undefined) snap[key] = value;
      if (typeof src.status === 'string') snap.status = src.status;
      if (typeof src.pipeline_name === 'string') snap.pipeline_name = src.pipeline_name;
      if (Array.isArray(src.steps)) snap.steps = src.steps.filter(isObject);
      for (const key of ['total_steps', 'completed_steps', 'successful_steps', 'failed_steps'] as const) {
        const v = src[key];
        if (typeof v === 'number') snap[key] = v;
      }
      if (typeof src.execution_time === 'number') snap.execution_time = src.execution_time;
    }
    snap.current_step = snap.steps.find((s) => s.status === 'running') ?? null;
    if (snap.total_steps < snap.steps.length) snap.total_steps = snap.steps.length;
    snap.timestamp = typeof src.timestamp === 'string' ? src.timestamp : new Date().toISOString();
  }

  /** The snapshot to send; an execution never seen yields status `unknown` with no steps. */
  get(id: number): ExecutionSnapshot {
    return this.byId.get(id) ?? { ...empty(id), timestamp: new Date().toISOString() };
  }

  private touch(id: number): ExecutionSnapshot {
    let snap = this.byId.get(id);
    if (snap === undefined) {
      snap = empty(id);
      if (this.byId.size >= this.maxExecutions) {
        const oldest = this.byId.keys().next();
        if (oldest.done !== true) this.byId.delete(oldest.value);
      }
    } else this.byId.delete(id);
    this.byId.set(id, snap);
    return snap;
  }

  private upsertStep(snap: ExecutionSnapshot, ev: Json): void {
    const byId = ev.step_id !== null && ev.step_id !== undefined;
    const key = byId ? ev.step_id : ev.step_name;
    const i = snap.steps.findIndex((s) => (byId ? s.step_id === key || s.id === key : s.step_name === key || s.name === key));
    // Merge over the previous state of the step: a `success` event without `output` keeps the output already seen.
    const step: Json = i >= 0 ? { ...snap.steps[i] } : {};
    for (const [k, v] of Object.entries(ev)) if (!NOT_STEP.has(k) && v !== undefined) step[k] = v;
    if (typeof ev.step_name === 'string') step.name = ev.step_name;
    // The page keys its steps by `id` (`step.id || index`).
    if (byId && step.id === undefined) step.id = ev.step_id;
    if (i >= 0) snap.steps[i] = step;
    else snap.steps.push(step);
    const count = (set: Set<string>): number => snap.steps.filter((s) => typeof s.status === 'string' && set.has(s.status)).length;
    snap.completed_steps = count(DONE);
    snap.successful_steps = count(SUCCEEDED);
    snap.failed_steps = count(FAILED);
  }
}

function empty(id: number): ExecutionSnapshot {
  return {
    execution_id: id,
    status: 'unknown',
    pipeline_name: null,
    steps: [],
    total_steps: 0,
    completed_steps: 0,
    successful_steps: 0,
    failed_steps: 0,
    current_step: null,
    execution_time: null,
    timestamp: '',
  };
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
