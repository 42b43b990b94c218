import { KnownEventType } from './frame-types';

type Json = Record<string, unknown>;

/** The latest state of one execution, as the `execution_status` frame carries it under `data`. */
export interface ExecutionSnapshot {
  execution_id: number;
  status: string;
  pipeline_name: string | null;
  steps: Json[];
  total_steps: number;
  completed_steps: number;
  current_step: Json | null;
  execution_time: number | null;
  timestamp: string;
}

const DONE = new Set(['success', 'failed', 'skipped', 'cancelled', 'completed', 'timeout']);

/**
 * Remembers the latest state of each execution from the events seen (`execution_status`, `execution_update`,
 * `step_progress`), so a page opening mid-run gets the current snapshot at once. Bounded: the least recently
 * updated executions are forgotten first.
 */
export class ExecutionSnapshots {
  private readonly byId = new Map<number, ExecutionSnapshot>();

  constructor(private readonly maxExecutions = 10_000) {}

  apply(channel: string, event: Json): void {
    if (!channel.startsWith('execution.')) return;
    const id = Number(channel.slice('execution.'.length));
    const type = event.type;
    if (type !== KnownEventType.ExecutionStatus && type !== KnownEventType.ExecutionUpdate && type !== KnownEventType.StepProgress) return;
    const snap = this.touch(id);
    const src = type === KnownEventType.ExecutionStatus && isObject(event.data) ? event.data : event;
    if (type === KnownEventType.StepProgress) this.upsertStep(snap, src);
    else {
      if (typeof src.status === 'string') snap.status = src.status;
      if (typeof src.pipeline_name === 'string') snap.pipeline_name = src.pipeline_name;
      if (Array.isArray(src.steps)) snap.steps = src.steps.filter(isObject);
      if (typeof src.total_steps === 'number') snap.total_steps = src.total_steps;
      if (typeof src.completed_steps === 'number') snap.completed_steps = src.completed_steps;
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
    const key = ev.step_id ?? ev.step_name;
    const i = snap.steps.findIndex((s) =>
      ev.step_id !== null && ev.step_id !== undefined ? s.step_id === key || s.id === key : s.step_name === key || s.name === key,
    );
    const step: Json = {
      ...(i >= 0 ? snap.steps[i] : {}),
      step_id: ev.step_id ?? null,
      step_name: ev.step_name,
      name: ev.step_name,
      status: ev.status,
      execution_time: ev.execution_time,
      output: ev.output,
      error_message: ev.error_message,
    };
    if (i >= 0) snap.steps[i] = step;
    else snap.steps.push(step);
    snap.completed_steps = snap.steps.filter((s) => typeof s.status === 'string' && DONE.has(s.status)).length;
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
    current_step: null,
    execution_time: null,
    timestamp: '',
  };
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
