/**
 * docs/asyncapi.yaml against the code: the document must be valid AsyncAPI 3, and document exactly the frame
 * types, close codes, close reasons, error codes and dead-letter reasons the code defines (no more, no less).
 * Then the running service (started by `bootstrap()`, as in production) is made to send every server frame type
 * and every known event, and each frame must be listed for its endpoint and valid against its schema.
 */
import 'reflect-metadata';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import specs from '@asyncapi/specs';
import Ajv, { type ValidateFunction } from 'ajv';
import addFormats from 'ajv-formats';
import * as jwt from 'jsonwebtoken';
import WebSocket from 'ws';
import { parse as parseYaml } from 'yaml';
import { bootstrap, type RunningService } from '../src/bootstrap';
import { CloseCode, CloseReason } from '../src/common/close-codes';
import { ClientFrameType, ErrorCode, KnownEventType, ServerFrameType } from '../src/hub/frame-types';
import { ENDPOINT_KINDS } from '../src/metrics/metric-names';
import { DEAD_LETTER_REASONS } from '../src/metrics/realtime-metrics.service';

const ROOT = path.resolve(__dirname, '..');
const DOC_PATH = path.join(ROOT, 'docs/asyncapi.yaml');

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

interface Message extends JsonObject {
  'x-frame-kind': string;
  name: string;
  payload: JsonObject;
}
interface CloseCodeEntry {
  code: number;
  name: string;
  reasons: string[];
}
interface AsyncApiDoc {
  asyncapi: string;
  channels: Record<string, { address: string; parameters?: Record<string, Json>; messages: Record<string, { $ref: string }>; bindings?: JsonObject }>;
  operations: Record<string, { action: 'send' | 'receive'; channel: { $ref: string }; messages: { $ref: string }[] }>;
  components: { messages: Record<string, Message>; schemas: Record<string, JsonObject> };
  'x-close-codes': CloseCodeEntry[];
  'x-error-codes': { code: string }[];
  'x-dead-letter-reasons': { reason: string }[];
}

const raw = parseYaml(fs.readFileSync(DOC_PATH, 'utf8')) as Json;
const doc = raw as unknown as AsyncApiDoc;

const sorted = <T>(values: Iterable<T>): T[] => [...values].sort();

function isObject(v: Json | undefined): v is JsonObject {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Follows a local JSON pointer (`#/a/b`) in the document. */
function resolve(ref: string): Json | undefined {
  if (!ref.startsWith('#/')) return undefined;
  let node: Json | undefined = raw;
  for (const part of ref.slice(2).split('/')) {
    const key = part.replace(/~1/g, '/').replace(/~0/g, '~');
    node = isObject(node) ? node[key] : Array.isArray(node) ? node[Number(key)] : undefined;
    if (node === undefined) return undefined;
  }
  return node;
}

function allRefs(node: Json, out: string[] = []): string[] {
  if (Array.isArray(node)) node.forEach((n) => allRefs(n, out));
  else if (isObject(node)) {
    for (const [k, v] of Object.entries(node)) {
      if (k === '$ref' && typeof v === 'string') out.push(v);
      else allRefs(v, out);
    }
  }
  return out;
}

/** The `const` of a payload's `type` property, directly or in one branch of an `allOf`. */
function typeConst(payload: JsonObject): Json | undefined {
  const branches = [payload, ...(Array.isArray(payload.allOf) ? payload.allOf : [])];
  for (const b of branches) {
    const props = isObject(b) ? b.properties : undefined;
    const type = isObject(props) ? props.type : undefined;
    if (isObject(type) && type.const !== undefined) return type.const;
  }
  return undefined;
}

function messagesOfKind(kind: string): [string, Message][] {
  return Object.entries(doc.components.messages).filter(([, m]) => m['x-frame-kind'] === kind);
}

describe('docs/asyncapi.yaml', () => {
  it('is an AsyncAPI 3 document valid against the official 3.0.0 JSON Schema', () => {
    expect(doc.asyncapi).toMatch(/^3\.\d+\.\d+$/);
    // The official schema embeds the draft-07 meta-schema under its own id: Ajv must not add its copy too.
    const ajv = new Ajv({ allErrors: true, strict: false, meta: false, validateSchema: false });
    addFormats(ajv);
    const validate = ajv.compile(specs.schemas['3.0.0']);
    const valid = validate(raw);
    expect(valid ? [] : (validate.errors ?? []).slice(0, 10)).toEqual([]);
  });

  it('has no dangling $ref', () => {
    const dangling = allRefs(raw).filter((r) => resolve(r) === undefined);
    expect(dangling).toEqual([]);
  });

  it('documents every server frame type of the code, and no other', () => {
    const documented = messagesOfKind('server').map(([, m]) => m.name);
    expect(sorted(documented)).toEqual(sorted(Object.values(ServerFrameType)));
  });

  it('documents every client frame type of the code, and no other', () => {
    const documented = messagesOfKind('client').map(([, m]) => m.name);
    expect(sorted(documented)).toEqual(sorted(Object.values(ClientFrameType)));
  });

  it('documents every known event type, and no other', () => {
    const documented = messagesOfKind('event').map(([, m]) => m.name);
    expect(sorted(documented)).toEqual(sorted(Object.values(KnownEventType)));
  });

  it('names each frame message by the `type` const of its payload, keyed <kind>_<type>', () => {
    const mismatched = ['server', 'client', 'event']
      .flatMap((kind) => messagesOfKind(kind))
      .filter(([key, m]) => typeConst(m.payload) !== m.name || key !== `${m['x-frame-kind']}_${m.name}`)
      .map(([key]) => key);
    expect(mismatched).toEqual([]);
  });

  it('lists every close code with the name the code gives it, and no other', () => {
    const documented = Object.fromEntries(doc['x-close-codes'].map((c) => [c.name, c.code]));
    expect(documented).toEqual({ ...CloseCode });
  });

  it('gives every close reason of the code to exactly one close code, and no other reason', () => {
    const reasons = doc['x-close-codes'].flatMap((c) => c.reasons);
    expect(sorted(reasons)).toEqual(sorted(Object.values(CloseReason)));
    expect(new Set(reasons).size).toBe(reasons.length);
  });

  it('sends each close code with the reasons docs/protocol.md lists for it', () => {
    // protocol.md's table rows: | 4001 | `token_required`, `token_invalid` ... | meaning | action |
    const protocol = fs.readFileSync(path.join(ROOT, 'docs/protocol.md'), 'utf8');
    const rows = [...protocol.matchAll(/^\|\s*(\d{4})\s*\|([^|]*)\|/gm)].map((m) => ({
      code: Number(m[1]),
      reasons: sorted([...m[2].matchAll(/`([a-z_]+)`/g)].map((r) => r[1])),
    }));
    expect(rows.length).toBeGreaterThan(5);
    const documented = new Map(doc['x-close-codes'].map((c) => [c.code, sorted(c.reasons)]));
    for (const row of rows) expect({ code: row.code, reasons: documented.get(row.code) }).toEqual(row);
  });

  it('lists every error code, and the error frame allows exactly those', () => {
    const codes = Object.values(ErrorCode);
    expect(sorted(doc['x-error-codes'].map((e) => e.code))).toEqual(sorted(codes));
    const errorFrame = doc.components.messages.server_error.payload;
    const codeProp = (errorFrame.properties as JsonObject).code as JsonObject;
    expect(sorted(codeProp.enum as string[])).toEqual(sorted(codes));
  });

  it('lists the dead-letter reasons of the consumer, in the extension and in the header enum', () => {
    expect(sorted(doc['x-dead-letter-reasons'].map((r) => r.reason))).toEqual(sorted(DEAD_LETTER_REASONS));
    const headers = doc.components.messages.broker_dead_letter.headers as JsonObject;
    const reasonHeader = (headers.properties as JsonObject)['x-ansflow-dead-letter-reason'] as JsonObject;
    expect(sorted(reasonHeader.enum as string[])).toEqual(sorted(DEAD_LETTER_REASONS));
  });

  it('describes the AMQP input: the ansflow.realtime topic exchange, routing key = channel, the dead-letter queue', () => {
    const amqp = doc.channels.brokerEvents.bindings?.amqp as JsonObject;
    expect(amqp).toMatchObject({ is: 'routingKey', exchange: { name: 'ansflow.realtime', type: 'topic', durable: true } });
    expect(doc.channels.deadLetters.address).toBe('ansflow.realtime.dead-letter');
  });

  it('has one WebSocket channel per endpoint kind, with an {id} parameter where the path has one', () => {
    const ws = Object.values(doc.channels).filter((c) => c.address.startsWith('/ws/'));
    expect(sorted(ws.map((c) => c.address))).toEqual(
      sorted(ENDPOINT_KINDS.map((k) => (k === 'monitor' || k === 'system' ? `/ws/${k}` : `/ws/${k}/{id}`))),
    );
    for (const c of ws) {
      const params = [...c.address.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      expect(sorted(Object.keys(c.parameters ?? {}))).toEqual(sorted(params));
    }
  });

  it('sends server frames and events and receives client frames, each operation on its own channel', () => {
    const wrong: string[] = [];
    const used = new Set<string>();
    for (const [name, op] of Object.entries(doc.operations)) {
      const channelRef = op.channel.$ref;
      const isWs = (resolve(channelRef) as { address?: string } | undefined)?.address?.startsWith('/ws/') ?? false;
      const allowed = !isWs ? ['broker'] : op.action === 'send' ? ['server', 'event'] : ['client'];
      for (const { $ref } of op.messages) {
        used.add($ref);
        // An operation's message is a channel's message, itself a $ref to components.messages.
        const inChannel = resolve($ref) as { $ref?: string } | undefined;
        const message = resolve(inChannel?.$ref ?? $ref) as Message | undefined;
        if (!$ref.startsWith(`${channelRef}/messages/`)) wrong.push(`${name}: ${$ref} is not a message of its channel`);
        if (!allowed.includes(message?.['x-frame-kind'] ?? '')) wrong.push(`${name}: ${$ref} is a ${message?.['x-frame-kind']} message`);
      }
    }
    for (const [id, channel] of Object.entries(doc.channels)) {
      for (const key of Object.keys(channel.messages)) {
        if (!used.has(`#/channels/${id}/messages/${key}`)) wrong.push(`${id}/${key} is in no operation`);
      }
    }
    expect(wrong).toEqual([]);
  });
});

// --- the running service against the document -------------------------------------------------------------

/** A WebSocket client that keeps every frame and lets a test wait for the one it needs, with a deadline. */
class FrameRecorder {
  readonly frames: JsonObject[] = [];
  private waiters: { match: (f: JsonObject) => boolean; resolve: (f: JsonObject) => void }[] = [];
  private readonly opened: Promise<void>;

  constructor(
    readonly endpoint: string,
    readonly ws: WebSocket,
  ) {
    this.opened = new Promise((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.on('message', (data: WebSocket.RawData) => {
      const frame = JSON.parse(rawText(data)) as JsonObject;
      this.frames.push(frame);
      this.waiters = this.waiters.filter((w) => {
        if (!w.match(frame)) return true;
        w.resolve(frame);
        return false;
      });
    });
  }

  async send(frame: JsonObject | string): Promise<void> {
    await this.opened;
    this.ws.send(typeof frame === 'string' ? frame : JSON.stringify(frame));
  }

  /** The first frame (already received or still to come) of this type that `match` accepts. */
  next(type: string, match: (f: JsonObject) => boolean = () => true, ms = 5000): Promise<JsonObject> {
    const accept = (f: JsonObject): boolean => f.type === type && match(f);
    const seen = this.frames.find(accept);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.endpoint}: no "${type}" frame within ${ms} ms; got ${this.frames.map((f) => JSON.stringify(f.type)).join(', ')}`)), ms);
      this.waiters.push({ match: accept, resolve: (f) => (clearTimeout(timer), resolve(f)) });
    });
  }
}

function rawText(data: WebSocket.RawData): string {
  if (Buffer.isBuffer(data)) return data.toString('utf8');
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  return Buffer.from(data).toString('utf8');
}

describe('frames of the running service match docs/asyncapi.yaml', () => {
  const SECRET = 'contract-test-secret-0123456789';
  const PUBLISH_KEY = 'contract-test-publish-key';
  let service: RunningService;
  const clients: FrameRecorder[] = [];

  const token = (userId: number): string =>
    jwt.sign({ token_type: 'access', jti: randomBytes(16).toString('hex'), user_id: userId }, SECRET, { algorithm: 'HS256', expiresIn: 3600 });

  const open = (pathAndQuery: string): FrameRecorder => {
    const wsUrl = `${service.url.replace(/^http/, 'ws')}${pathAndQuery}`;
    const client = new FrameRecorder(pathAndQuery.split('?')[0], new WebSocket(wsUrl));
    clients.push(client);
    return client;
  };

  const publish = async (channel: string, event: JsonObject): Promise<void> => {
    const res = await fetch(`${service.url}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${PUBLISH_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ channel, event }),
    });
    expect(res.status).toBe(202);
  };
  /** Several events in one request: they reach the hub in one turn, so a `batch=1` socket gets them as one `batch`
   * frame (published one request at a time, each may fall in its own 5 ms window and go out unwrapped). */
  const publishAll = async (items: { channel: string; event: JsonObject }[]): Promise<void> => {
    const res = await fetch(`${service.url}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${PUBLISH_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify(items),
    });
    expect(res.status).toBe(202);
  };

  beforeAll(async () => {
    service = await bootstrap({
      NODE_ENV: 'test',
      PORT: '0',
      HOST: '127.0.0.1',
      LOG_LEVEL: 'silent',
      DJANGO_SECRET_KEY: SECRET,
      PUBLISH_API_KEY: PUBLISH_KEY,
      AUTH_REQUIRED: 'true',
      BATCH_WINDOW_MS: '20',
    });
  });

  afterAll(async () => {
    for (const c of clients) c.ws.terminate();
    await service?.shutdown();
  });

  it('sends, on each endpoint, only frames the document lists for it, each valid against its schema', async () => {
    const t = token(7);
    const exec = open(`/ws/execution/42?token=${t}`);
    const execBatch = open(`/ws/execution/42?token=${t}&batch=1`);
    const pipeline = open(`/ws/pipeline/7?token=${t}`);
    const project = open(`/ws/project/3?token=${t}`);
    const monitor = open(`/ws/monitor?token=${t}`);
    const system = open(`/ws/system`);

    // Greetings.
    await exec.next('execution_status');
    await execBatch.next('execution_status');
    await pipeline.next('connection');
    await project.next('connection');
    await monitor.next('system_status');
    await system.send({ type: 'auth', token: t });
    await system.next('authenticated');

    // Replies to client frames.
    await exec.send({ type: 'ping' });
    await exec.next('pong');
    await exec.send({ type: 'subscribe', events: ['log_entry'] });
    await exec.next('subscribed');
    await exec.send({ type: 'get_status' });
    await exec.next('execution_status', (f) => f !== exec.frames.find((x) => x.type === 'execution_status'));
    await exec.send('not json');
    await exec.next('error', (f) => f.code === 'invalid_json');
    await exec.send({ type: 'no_such_frame' });
    await exec.next('error', (f) => f.code === 'unknown_type');
    await exec.send({ type: 'auth', token: t });
    await exec.next('authenticated');
    await pipeline.send({ type: 'subscribe', events: ['pipeline_update'] });
    await pipeline.next('subscription_confirmed');
    await monitor.send({ type: 'subscribe_execution', executionId: 42 });
    await monitor.next('subscribed', (f) => f.execution_id === 42);
    await monitor.next('execution_status');
    await monitor.send({ type: 'control_command', command: 'stop', execution_id: 42 });
    await monitor.next('control_command_result', (f) => f.code === 'not_configured');

    // Events, as Django publishes them.
    const ts = new Date().toISOString();
    await publishAll([
      { channel: 'execution.42', event: { type: 'execution_status', data: { execution_id: 42, status: 'running', pipeline_name: 'build', steps: [], total_steps: 2, completed_steps: 0, current_step: null, timestamp: ts } } },
      { channel: 'execution.42', event: { type: 'execution_update', execution_id: 42, status: 'running', pipeline_name: 'build', steps: [], total_steps: 2, completed_steps: 0, execution_time: 0.5, timestamp: ts } },
      { channel: 'execution.42', event: { type: 'step_progress', execution_id: 42, step_id: 1, step_name: 'checkout', status: 'success', execution_time: 1.2, output: 'ok', error_message: '', timestamp: ts } },
      { channel: 'execution.42', event: { type: 'log_entry', execution_id: 42, level: 'info', message: 'Cloning', step_name: 'checkout', source: 'step', timestamp: ts } },
    ]);
    await publish('pipeline.7', { type: 'pipeline_update', pipeline_id: 7, status: 'running', progress: 50, logs: [] });
    await publish('project.3', { type: 'project_update', project_id: 3, event: 'pipeline_created', data: { pipeline_id: 7 } });
    const note = { level: 'info', title: 'Build', message: 'Build started' };
    await publish('user.7', { type: 'system_notification', ...note, data: note });
    await publish('system', { type: 'system_notification', ...note, data: note });
    await exec.next('log_entry');
    await execBatch.next('batch');
    await monitor.next('log_entry');
    await pipeline.next('pipeline_update');
    await project.next('project_update');
    await system.next('system_notification', (f) => f.channel === 'system');
    await monitor.send({ type: 'unsubscribe_execution', executionId: 42 });
    await monitor.next('unsubscribed');
    // Resume after the first event of execution 42: the three that followed it are replayed.
    const firstEvent = await exec.next('execution_status', (f) => f.channel === 'execution.42');
    const resumed = open(`/ws/execution/42?token=${t}&since=${JSON.stringify(firstEvent.position)}`);
    await resumed.next('recovery', (f) => f.recovered === true);
    await resumed.next('log_entry');

    // Every frame received, checked against the channel of its endpoint in the document.
    const ajv = new Ajv({ strict: false, validateSchema: false, allErrors: true });
    addFormats(ajv);
    ajv.addSchema(raw as object, 'asyncapi');
    const compiled = new Map<string, ValidateFunction>();
    const validatorOf = (key: string): ValidateFunction => {
      let v = compiled.get(key);
      if (!v) {
        v = ajv.compile({ $ref: `asyncapi#/components/messages/${key}/payload` });
        compiled.set(key, v);
      }
      return v;
    };
    const problems: string[] = [];
    const seen = { server: new Set<string>(), event: new Set<string>() };
    const check = (endpoint: string, frame: JsonObject, kinds: string[]): void => {
      const type = typeof frame.type === 'string' ? frame.type : JSON.stringify(frame.type);
      const channel = Object.values(doc.channels).find((c) => new RegExp(`^${c.address.replace(/\{\w+\}/g, '[^/]+')}$`).test(endpoint));
      const candidates = Object.values(channel?.messages ?? {})
        .map((m) => m.$ref.replace('#/components/messages/', ''))
        .filter((key) => kinds.includes(doc.components.messages[key]['x-frame-kind']) && doc.components.messages[key].name === type);
      if (candidates.length === 0) {
        problems.push(`${endpoint}: "${type}" is not a ${kinds.join('/')} message of this channel`);
        return;
      }
      const valid = candidates.filter((key) => validatorOf(key)(frame));
      if (valid.length === 0) {
        const errors = candidates.map((key) => `${key}: ${ajv.errorsText(validatorOf(key).errors)}`).join('; ');
        problems.push(`${endpoint}: ${JSON.stringify(frame).slice(0, 300)} is invalid (${errors})`);
      }
      for (const key of valid) seen[doc.components.messages[key]['x-frame-kind'] as 'server' | 'event'].add(type);
    };
    for (const client of clients) {
      for (const frame of client.frames) {
        check(client.endpoint, frame, ['server', 'event']);
        if (frame.type === 'batch' && Array.isArray(frame.events)) {
          for (const inner of frame.events) check(client.endpoint, inner as JsonObject, ['event']);
        }
      }
    }
    expect(problems).toEqual([]);
    expect(sorted(seen.server)).toEqual(sorted(Object.values(ServerFrameType)));
    expect(sorted(seen.event)).toEqual(sorted(Object.values(KnownEventType)));
  }, 30_000);
});
