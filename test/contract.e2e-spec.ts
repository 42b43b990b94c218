/**
 * docs/asyncapi.yaml against the code: the document must be valid AsyncAPI 3, and document exactly the frame
 * types, close codes, close reasons, error codes and dead-letter reasons the code defines (no more, no less).
 */
import 'reflect-metadata';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Ajv from 'ajv';
import addFormats from 'ajv-formats';
import { parse as parseYaml } from 'yaml';
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
    const specs = require('@asyncapi/specs') as { schemas: Record<string, object> };
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
