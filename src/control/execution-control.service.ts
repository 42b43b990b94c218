import { Inject, Injectable } from '@nestjs/common';
import type { Logger } from 'pino';
import { LOGGER } from '../common/logger';
import { APP_CONFIG, type AppConfig } from '../config/config';
import type { ClientConnection } from '../gateway/client-connection';
import { now, type ClientFrame } from '../gateway/endpoint';
import { ErrorCode, ServerFrameType } from '../hub/frame-types';
import { RealtimeMetrics, type ControlOutcome } from '../metrics/realtime-metrics.service';

const EXECUTION_ID = /^[1-9]\d{0,15}$/;
/** Django's actions, as AnsFlow's `PipelineExecutionViewSet` names them. */
const ACTIONS = { stop: 'cancel', restart: 'retry' } as const;
type Command = keyof typeof ACTIONS;
/** Text relayed from Django's answer is cut here: it is a message for a person, not a document. */
const MAX_TEXT = 500;

/** Where the execution id of a command comes from: the socket's path, or the frame (monitor). */
export type CommandTarget = { pathId: number } | 'frame';

interface Window {
  startMs: number;
  count: number;
}

/**
 * Forwards `control_command` (stop / restart) to Django's REST actions as the socket's user: Django's own
 * permission checks decide, and the outcome reaches every viewer through the events Django then publishes. Each
 * command gets exactly one `control_command_result`; refusals (anonymous, malformed, rate-limited, not configured)
 * never reach Django. See docs/adr/0004-control-commands-and-nestjs-microservices.md.
 */
@Injectable()
export class ExecutionControl {
  /** Per-socket command windows; a closed socket's entry goes with it. */
  private readonly windows = new WeakMap<ClientConnection, Window>();

  constructor(
    @Inject(APP_CONFIG) private readonly config: AppConfig,
    @Inject(LOGGER) private readonly logger: Logger,
    private readonly metrics: RealtimeMetrics,
  ) {}

  async handle(conn: ClientConnection, frame: ClientFrame, target: CommandTarget): Promise<void> {
    const rawCommand = frame.command;
    const command: Command | undefined = rawCommand === 'stop' || rawCommand === 'restart' ? rawCommand : undefined;
    const echoed = typeof rawCommand === 'string' ? rawCommand.slice(0, 32) : null;
    const id = executionIdOf(frame, target);
    const refuse = (code: ControlOutcome, message: string): void => {
      this.metrics.controlCommands.inc({ command: command ?? 'invalid', outcome: code });
      conn.sendJson({ type: ServerFrameType.ControlCommandResult, command: echoed, execution_id: id ?? null, ok: false, status: null, code, error: message, timestamp: now() });
    };
    if (command === undefined) return refuse(ErrorCode.InvalidFrame, '"command" must be "stop" or "restart"');
    if (id === undefined) {
      return refuse(
        ErrorCode.InvalidFrame,
        target === 'frame' ? '"execution_id" must be a positive integer' : `"execution_id", when given, must be this socket's execution (${target.pathId})`,
      );
    }
    const principal = conn.principal;
    if (principal === undefined) return refuse(ErrorCode.AuthenticationRequired, 'Send {"type":"auth","token":...} first: Django acts as the socket\'s user');
    const base = this.config.DJANGO_API_URL;
    if (base === undefined) return refuse(ErrorCode.NotConfigured, 'DJANGO_API_URL is not set: this service cannot reach Django');
    if (!this.allow(conn)) return refuse(ErrorCode.RateLimited, `At most ${this.config.CONTROL_MAX_PER_SECOND} control commands per second`);

    const url = `${base.replace(/\/+$/, '')}/api/v1/cicd/executions/${id}/${ACTIONS[command]}/`;
    let status: number;
    let body: Record<string, unknown>;
    try {
      const res = await fetch(url, {
        method: 'POST',
        headers: { authorization: `Bearer ${principal.token}`, accept: 'application/json', 'content-type': 'application/json' },
        body: '{}',
        // A redirect would carry the user's token to wherever it points: relay it as an answer instead.
        redirect: 'manual',
        signal: AbortSignal.timeout(this.config.CONTROL_TIMEOUT_MS),
      });
      status = res.status;
      body = parseObject(await res.text());
    } catch (err) {
      this.logger.warn({ user: principal.userId, command, execution_id: id, err: err instanceof Error ? err.message : String(err) }, 'control command: Django unavailable');
      // After a timeout Django may still carry the command out; its events will tell the viewers.
      return refuse(ErrorCode.DjangoUnavailable, `Django did not answer within ${this.config.CONTROL_TIMEOUT_MS} ms`);
    }
    const ok = status >= 200 && status < 300;
    const outcome: ControlOutcome = ok ? 'ok' : status >= 500 ? 'django_error' : 'django_refused';
    this.metrics.controlCommands.inc({ command, outcome });
    this.logger.info({ user: principal.userId, command, execution_id: id, status, outcome }, 'control command');
    const reply: Record<string, unknown> = { type: ServerFrameType.ControlCommandResult, command, execution_id: id, ok, status };
    if (ok) {
      reply.message = text(body.message) ?? `Django answered ${status}`;
      const created = body.execution;
      const newId = typeof created === 'object' && created !== null ? (created as { id?: unknown }).id : undefined;
      if (command === 'restart' && (typeof newId === 'number' || typeof newId === 'string')) reply.new_execution_id = Number(newId);
    } else reply.error = text(body.error) ?? text(body.detail) ?? `Django answered ${status}`;
    reply.timestamp = now();
    conn.sendJson(reply);
  }

  /** A fixed one-second window per socket: a stuck button or a script must not turn into a stream of POSTs. */
  private allow(conn: ClientConnection): boolean {
    const t = Date.now();
    let w = this.windows.get(conn);
    if (w === undefined || t - w.startMs >= 1000) {
      w = { startMs: t, count: 0 };
      this.windows.set(conn, w);
    }
    return ++w.count <= this.config.CONTROL_MAX_PER_SECOND;
  }
}

/** The execution a command is for: the path's on `/ws/execution/{id}` (a different `execution_id` is refused). */
function executionIdOf(frame: ClientFrame, target: CommandTarget): number | undefined {
  const raw = frame.execution_id ?? frame.executionId ?? undefined;
  const text = typeof raw === 'number' ? String(raw) : raw;
  const given = typeof text === 'string' && EXECUTION_ID.test(text) ? Number(text) : undefined;
  if (target === 'frame') return given;
  if (raw === undefined) return target.pathId;
  return given === target.pathId ? given : undefined;
}

function parseObject(raw: string): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(raw);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function text(v: unknown): string | undefined {
  return typeof v === 'string' && v !== '' ? v.slice(0, MAX_TEXT) : undefined;
}
