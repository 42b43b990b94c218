/**
 * A live pipeline execution page on top of @ansflow/realtime-client. No framework: the state is a few maps and
 * every update re-renders only what it touched. Everything from the server is written with `textContent`, never
 * as HTML (log lines are build output: they contain `<`, and sometimes an attacker's branch name).
 *
 * URL parameters: `execution` (id, default 42), `ws` (service base URL, default ws(s)://<this host>:8001),
 * `token` (an access token; otherwise localStorage `authToken`), `tokenUrl` (where a fresh token is fetched,
 * default `/token`).
 */
import {
  RealtimeClient,
  type ControlCommandResultFrame,
  type ExecutionSnapshot,
  type ExecutionUpdateEvent,
  type LogEntryEvent,
  type StateChange,
  type StepEntry,
  type StepProgressEvent,
  type TokenRequest,
} from '@ansflow/realtime-client';

/** Lines kept in the log: the frontend's existing limit, and what keeps the DOM small on long runs. */
const MAX_LOG_LINES = 1000;
const DONE = new Set(['success', 'failed', 'skipped', 'cancelled', 'completed', 'timeout']);
const ICONS: Record<string, string> = {
  pending: '○',
  running: '●',
  success: '✓',
  failed: '✗',
  skipped: '–',
  cancelled: '–',
};

interface StepView {
  key: string;
  name: string;
  status: string;
  order: number;
  /** Seconds, once known. */
  executionTime: number | null;
  /** When we saw it start running (epoch ms), to show a live duration. */
  startedAt: number | null;
  element: HTMLLIElement;
}

const params = new URLSearchParams(location.search);
const executionId = Number(params.get('execution') ?? '42');
const wsUrl = params.get('ws') ?? `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.hostname}:8001`;
const tokenUrl = params.get('tokenUrl') ?? '/token';

// A token in the address bar would end up in history and in screenshots: keep it in localStorage (where the
// AnsFlow frontend keeps it) and drop it from the URL.
const urlToken = params.get('token');
if (urlToken !== null) {
  localStorage.setItem('authToken', urlToken);
  params.delete('token');
  history.replaceState(null, '', `${location.pathname}?${params.toString()}`);
}

function byId<T extends HTMLElement>(id: string): T {
  const element = document.getElementById(id);
  if (element === null) throw new Error(`#${id} missing from the page`);
  return element as T;
}

const ui = {
  pipelineName: byId('pipeline-name'),
  executionId: byId('execution-id'),
  elapsed: byId('elapsed'),
  status: byId('status'),
  connection: byId('connection'),
  connectionText: byId('connection-text'),
  bar: byId('bar'),
  progressText: byId('progress-text'),
  progressPercent: byId('progress-percent'),
  steps: byId<HTMLOListElement>('steps'),
  stepsEmpty: byId('steps-empty'),
  log: byId('log'),
  stop: byId<HTMLButtonElement>('stop'),
  restart: byId<HTMLButtonElement>('restart'),
  controlResult: byId('control-result'),
};

/** Statuses Django accepts a cancel in (pending, running) and a retry in (failed, cancelled). */
const STOPPABLE = new Set(['pending', 'starting', 'running']);
const RESTARTABLE = new Set(['failed', 'cancelled', 'timeout']);
/** The command waiting for its `control_command_result`: the buttons stay disabled meanwhile. */
let pendingCommand: string | null = null;

const steps = new Map<string, StepView>();
let totalSteps = 0;
let completedSteps = 0;
let executionStatus = 'unknown';
let executionTime: number | null = null;

ui.executionId.textContent = `#${executionId}`;

async function provideToken(request: TokenRequest): Promise<string | null> {
  const stored = localStorage.getItem('authToken');
  if (!request.refresh && stored !== null) return stored;
  // The stored token was refused (expired, most often): ask the app's backend for a new one. In AnsFlow this is
  // the simplejwt refresh endpoint; the demo server mints one.
  const response = await fetch(tokenUrl, { method: 'POST', credentials: 'same-origin' });
  if (!response.ok) throw new Error(`token refresh failed: HTTP ${response.status}`);
  const body = (await response.json()) as { token?: unknown };
  if (typeof body.token !== 'string') throw new Error('token refresh: no token in the reply');
  localStorage.setItem('authToken', body.token);
  return body.token;
}

function stepKey(id: unknown, name: unknown): string {
  return typeof id === 'number' || typeof id === 'string' ? `id:${String(id)}` : `name:${String(name)}`;
}

function upsertStep(key: string, name: string, status: string, time: number | null | undefined, order?: number): void {
  let step = steps.get(key);
  if (step === undefined) {
    const element = document.createElement('li');
    element.dataset.step = name;
    for (const part of ['icon', 'name', 'duration']) {
      const span = document.createElement('span');
      span.className = part;
      element.append(span);
    }
    step = { key, name, status, order: order ?? steps.size, executionTime: null, startedAt: null, element };
    steps.set(key, step);
  }
  if (status === 'running' && step.status !== 'running') step.startedAt = Date.now();
  step.name = name;
  step.status = status;
  if (typeof time === 'number') step.executionTime = time;
  if (order !== undefined) step.order = order;
  renderStep(step);
}

function renderStep(step: StepView): void {
  const [icon, name, duration] = step.element.children;
  step.element.className = step.status;
  step.element.dataset.status = step.status;
  icon.textContent = ICONS[step.status] ?? '○';
  name.textContent = step.name;
  duration.textContent = stepDuration(step);
}

function stepDuration(step: StepView): string {
  if (step.executionTime !== null && (DONE.has(step.status) || step.status !== 'running')) {
    return formatSeconds(step.executionTime);
  }
  if (step.status === 'running' && step.startedAt !== null) return formatSeconds((Date.now() - step.startedAt) / 1000);
  return '';
}

function formatSeconds(seconds: number): string {
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  return `${minutes} min ${Math.round(seconds - minutes * 60)} s`;
}

function renderSteps(): void {
  const ordered = [...steps.values()].sort((a, b) => a.order - b.order);
  ui.steps.replaceChildren(...ordered.map((s) => s.element));
  ui.stepsEmpty.hidden = ordered.length > 0;
  renderProgress();
}

function renderProgress(): void {
  const total = Math.max(totalSteps, steps.size);
  const doneByStep = [...steps.values()].filter((s) => DONE.has(s.status)).length;
  const done = Math.min(total, Math.max(completedSteps, doneByStep));
  const percent = total === 0 ? 0 : Math.round((done / total) * 100);
  ui.progressText.textContent = `${done} / ${total} steps`;
  ui.progressPercent.textContent = `${percent}%`;
  (ui.bar.firstElementChild as HTMLElement).style.width = `${percent}%`;
  ui.bar.className = `bar ${executionStatus}`;
  ui.bar.dataset.percent = String(percent);
}

function renderStatus(): void {
  ui.status.textContent = executionStatus;
  ui.status.className = `badge ${executionStatus}`;
  ui.status.dataset.status = executionStatus;
  ui.elapsed.textContent = executionTime === null ? '–' : formatSeconds(executionTime);
  document.title = `${executionStatus} · ${ui.pipelineName.textContent ?? 'Pipeline'} · AnsFlow`;
  renderControls();
}

function renderControls(): void {
  ui.stop.disabled = pendingCommand !== null || !STOPPABLE.has(executionStatus);
  ui.restart.disabled = pendingCommand !== null || !RESTARTABLE.has(executionStatus);
}

/** Stop / Restart: the service forwards the command to Django as this user; Django's answer comes back. */
function sendCommand(command: 'stop' | 'restart'): void {
  if (!client.send({ type: 'control_command', command })) {
    showResult(false, 'Not connected');
    return;
  }
  pendingCommand = command;
  showResult(null, command === 'stop' ? 'Stopping…' : 'Restarting…');
  renderControls();
}

function showResult(ok: boolean | null, text: string): void {
  ui.controlResult.textContent = text;
  if (ok === null) delete ui.controlResult.dataset.ok;
  else ui.controlResult.dataset.ok = String(ok);
}

function applyControlResult(result: ControlCommandResultFrame): void {
  pendingCommand = null;
  const text = result.ok ? (result.message ?? 'Done') : (result.error ?? result.code ?? 'Refused');
  showResult(result.ok, result.status === null ? text : `${text} (${result.status})`);
  renderControls();
}

function applySteps(entries: StepEntry[]): void {
  entries.forEach((entry, index) => {
    const order = typeof entry.order === 'number' ? entry.order : index;
    if ('group_id' in entry && entry.type === 'parallel_group') {
      upsertStep(stepKey(entry.group_id, entry.name), entry.name, entry.status, entry.execution_time, order);
      return;
    }
    const step = entry as Record<string, unknown>;
    const name = typeof step.name === 'string' ? step.name : typeof step.step_name === 'string' ? step.step_name : `step ${index + 1}`;
    const time = typeof step.execution_time === 'number' ? step.execution_time : null;
    const status = typeof step.status === 'string' ? step.status : 'pending';
    upsertStep(stepKey(step.step_id ?? step.id, name), name, status, time, order);
  });
  renderSteps();
}

function applySnapshot(snapshot: ExecutionSnapshot): void {
  if (snapshot.pipeline_name) ui.pipelineName.textContent = snapshot.pipeline_name;
  executionStatus = snapshot.status;
  totalSteps = snapshot.total_steps;
  completedSteps = snapshot.completed_steps;
  const time = (snapshot as { execution_time?: unknown }).execution_time;
  if (typeof time === 'number') executionTime = time;
  applySteps(snapshot.steps);
  renderStatus();
}

function applyUpdate(event: ExecutionUpdateEvent): void {
  if (event.pipeline_name) ui.pipelineName.textContent = event.pipeline_name;
  executionStatus = event.status;
  totalSteps = event.total_steps;
  completedSteps = event.completed_steps;
  executionTime = event.execution_time;
  if (Array.isArray(event.steps)) applySteps(event.steps);
  else renderProgress();
  renderStatus();
}

function applyStep(event: StepProgressEvent): void {
  upsertStep(stepKey(event.step_id, event.step_name), event.step_name, event.status, event.execution_time);
  renderSteps();
}

function appendLine(className: string, parts: Array<[string, string]>, position?: number): void {
  const line = document.createElement('div');
  line.className = `line ${className}`;
  if (position !== undefined) line.dataset.position = String(position);
  for (const [part, text] of parts) {
    const span = document.createElement('span');
    span.className = part;
    span.textContent = text;
    line.append(span);
  }
  // Follow the tail only when the reader is already at the bottom: scrolling up to read must not be undone.
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 24;
  ui.log.append(line);
  while (ui.log.childElementCount > MAX_LOG_LINES) ui.log.firstElementChild?.remove();
  if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
}

function appendLog(event: LogEntryEvent): void {
  const time = new Date(event.timestamp);
  const ts = Number.isNaN(time.getTime()) ? '' : time.toLocaleTimeString([], { hour12: false });
  appendLine(
    event.level,
    [
      ['ts', ts],
      ['lvl', event.level],
      ['step', event.step_name ? `[${event.step_name}]` : ''],
      ['msg', event.message],
    ],
    event.position,
  );
}

function showConnection(change: StateChange): void {
  let text: string;
  let css: string = change.state;
  switch (change.state) {
    case 'connecting':
      text = 'Connecting…';
      break;
    case 'open':
      css = change.recovered ? 'recovered' : 'open';
      text = change.recovered ? 'Connected · recovered' : 'Connected';
      break;
    case 'reconnecting':
      text = `Reconnecting${change.retryInMs === undefined ? '' : ` in ${(change.retryInMs / 1000).toFixed(1)} s`}…`;
      break;
    case 'stopped':
      text = `Disconnected (${change.reason ?? String(change.code)})`;
      break;
  }
  if (change.state !== 'open' && pendingCommand !== null) {
    // The answer would have come on the socket that just went away: let the user try again.
    pendingCommand = null;
    showResult(false, 'Connection lost before the answer');
    renderControls();
  }
  ui.connection.className = `conn ${css}`;
  ui.connection.dataset.state = css;
  ui.connectionText.textContent = text;
}

// `new` + `start()` rather than `connect()`: listeners are in place before the first state change.
const client = new RealtimeClient({ url: wsUrl, endpoint: 'execution', id: executionId, token: provideToken });
// Exposed for the browser tests and for poking at from the console.
(window as unknown as { realtimeClient: RealtimeClient }).realtimeClient = client;

client.on('state', showConnection);
client.on('execution_status', (frame) => applySnapshot(frame.data));
client.on('execution_update', applyUpdate);
client.on('step_progress', applyStep);
client.on('log_entry', appendLog);
client.on('control_command_result', applyControlResult);
ui.stop.addEventListener('click', () => sendCommand('stop'));
ui.restart.addEventListener('click', () => sendCommand('restart'));
client.on('recoveryFailed', () => {
  // The snapshot that follows restores status and steps; log lines published meanwhile are gone for good.
  appendLine('notice', [['msg', '… some log lines were not retained while disconnected; status reloaded']]);
});

// Running steps show a live duration; one timer for the page, not one per step.
setInterval(() => {
  for (const step of steps.values()) if (step.status === 'running') renderStep(step);
}, 1000);

client.start();
