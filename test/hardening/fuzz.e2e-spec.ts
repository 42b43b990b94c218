import fc from 'fast-check';
import { connect as netConnect } from 'node:net';
import { ClientFrameType } from '../../src/hub/frame-types';
import { brokerObjects, connectPublisher, deleteBrokerObjects, drainQueue, RABBITMQ_URL, uniqueExchange, type Publisher } from '../support/broker';
import { startService } from '../support/service';
import { mintToken } from '../support/tokens';
import { TestClient, type Frame } from '../support/ws-client';
import { metric, until, wellBehaved, type Svc } from './support';

/**
 * Hostile input, property-based: every frame, upgrade request, publish body and broker message gets its documented
 * answer (docs/protocol.md), and a well-behaved client still works after each property. Runs are bounded so the
 * file stays well under a minute.
 */
const FRAME_LIMIT = 16_384;
const USER = 1;
const OTHER_USER = 2;
const TOKEN_SAME = mintToken({ userId: USER, expiresIn: 3600 });
const TOKEN_OTHER = mintToken({ userId: OTHER_USER });
const TOKEN_EXPIRED = mintToken({ userId: USER, expiresIn: -60 });

type Kind = 'execution' | 'pipeline' | 'project' | 'monitor' | 'system';
const EXECUTION_PATH_ID = 11;
const PATHS: Record<Kind, string> = { execution: `/ws/execution/${EXECUTION_PATH_ID}`, pipeline: '/ws/pipeline/12', project: '/ws/project/13', monitor: '/ws/monitor', system: '/ws/system' };

/** What the service must do with one text frame: its first reply (type and error code), or a close. */
type Outcome = { reply: string; code?: string } | { close: number; reason?: string };

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const EXECUTION_ID = /^[1-9]\d{0,15}$/;
const validExecutionId = (v: unknown): boolean => (typeof v === 'number' || typeof v === 'string') && EXECUTION_ID.test(String(v));
const validEvents = (v: unknown): boolean => v === undefined || (Array.isArray(v) && v.length <= 100 && v.every((e) => typeof e === 'string'));

/** The protocol's answer to a parsed frame, written from docs/protocol.md's tables (not from the code). */
function expectedFor(kind: Kind, frame: unknown): Outcome {
  const invalid = { reply: 'error', code: 'invalid_frame' };
  if (!isObject(frame) || typeof frame.type !== 'string') return invalid;
  switch (frame.type) {
    case ClientFrameType.Ping:
    case ClientFrameType.Pong:
      return frame.type === ClientFrameType.Ping ? { reply: 'pong' } : { reply: 'none' };
    case ClientFrameType.Auth: {
      const t = frame.token;
      if (typeof t !== 'string') return invalid;
      if (t === '') return { close: 4001, reason: 'token_required' };
      if (t === TOKEN_SAME) return { reply: 'authenticated' };
      if (t === TOKEN_OTHER) return { close: 4001, reason: 'token_user_mismatch' };
      if (t === TOKEN_EXPIRED) return { close: 4001, reason: 'token_expired' };
      return { close: 4001, reason: 'token_invalid' };
    }
  }
  if (kind === 'execution' && frame.type === ClientFrameType.GetStatus) return { reply: 'execution_status' };
  if ((kind === 'execution' || kind === 'monitor') && frame.type === ClientFrameType.ControlCommand) {
    // One control_command_result; the fuzzed service has no DJANGO_API_URL, so a well-formed command is not_configured.
    const result = (code: string): Outcome => ({ reply: 'control_command_result', code });
    if (frame.command !== 'stop' && frame.command !== 'restart') return result('invalid_frame');
    const id = frame.execution_id ?? frame.executionId ?? undefined;
    if (kind === 'monitor' && !validExecutionId(id)) return result('invalid_frame');
    if (kind === 'execution' && id !== undefined && !(validExecutionId(id) && Number(id) === EXECUTION_PATH_ID)) return result('invalid_frame');
    return result('not_configured');
  }
  if (kind === 'monitor') {
    if (frame.type === ClientFrameType.SubscribeExecution) {
      const id = frame.executionId ?? frame.execution_id;
      if (!validExecutionId(id)) return invalid;
      const since = frame.since ?? undefined; // null is "no since"
      if (since !== undefined && !(typeof since === 'number' && Number.isSafeInteger(since) && since >= 0)) return invalid;
      return { reply: 'subscribed' };
    }
    if (frame.type === ClientFrameType.UnsubscribeExecution) return validExecutionId(frame.executionId ?? frame.execution_id) ? { reply: 'unsubscribed' } : invalid;
  }
  if (frame.type === ClientFrameType.Subscribe) return validEvents(frame.events) ? { reply: 'subscribed' } : invalid;
  if (frame.type === ClientFrameType.Unsubscribe) return validEvents(frame.events) ? { reply: 'unsubscribed' } : invalid;
  return { reply: 'error', code: 'unknown_type' };
}

/** The answer to raw text: not JSON → invalid_json; too large → 1009; else by the parsed frame. */
function expectedForText(kind: Kind, text: string): Outcome {
  if (Buffer.byteLength(text) > FRAME_LIMIT) return { close: 1009 };
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return { reply: 'error', code: 'invalid_json' };
  }
  return expectedFor(kind, parsed);
}

// ---- generators -------------------------------------------------------------------------------------------------

const wrong = fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.string({ maxLength: 20 }), fc.array(fc.integer(), { maxLength: 3 }), fc.dictionary(fc.string({ maxLength: 5 }), fc.integer(), { maxKeys: 3 }));
/** A field: absent, a well-typed value, or a wrong one. */
const field = <T>(good: fc.Arbitrary<T>): fc.Arbitrary<unknown> => fc.oneof(fc.constant(undefined), good, wrong);
const goodId = fc.oneof(fc.integer({ min: 1, max: 1_000_000 }), fc.integer({ min: 1, max: 1_000_000 }).map(String));
const badId = fc.oneof(fc.constantFrom(0, -1, 1.5, '0', '01', '1.5', '', ' 1', 'abc', 1e20), wrong);
const token = fc.oneof(fc.constantFrom(TOKEN_SAME, TOKEN_OTHER, TOKEN_EXPIRED, '', 'not.a.jwt', TOKEN_SAME.slice(0, -2) + 'xx'), fc.string({ maxLength: 40 }), wrong);

const strip = (o: Record<string, unknown>): Record<string, unknown> => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

/** Every client frame type with every field well-typed, wrong-typed or absent; plus unknown types and non-objects. */
const clientFrame: fc.Arbitrary<unknown> = fc.oneof(
  fc.record({ type: fc.constantFrom('ping', 'pong'), extra: field(fc.string()) }).map(strip),
  fc.record({ type: fc.constant('auth'), token }).map(strip),
  fc.record({ type: fc.constantFrom('subscribe', 'unsubscribe'), events: field(fc.array(fc.string({ maxLength: 10 }), { maxLength: 5 })) }).map(strip),
  fc.record({ type: fc.constant('get_status'), extra: field(fc.integer()) }).map(strip),
  fc.record({ type: fc.constant('subscribe_execution'), executionId: fc.oneof(goodId, badId, fc.constant(undefined)), execution_id: field(goodId), since: field(fc.integer({ min: 0, max: 2 ** 40 })) }).map(strip),
  fc.record({ type: fc.constant('unsubscribe_execution'), executionId: fc.oneof(goodId, badId, fc.constant(undefined)) }).map(strip),
  fc.record({ type: fc.constant('control_command'), command: field(fc.constantFrom('stop', 'restart')), execution_id: field(goodId) }).map(strip),
  fc.record({ type: fc.oneof(fc.string({ maxLength: 30 }), wrong) }),
  fc.jsonValue({ maxDepth: 3 }),
);

// ---- a socket per endpoint, reopened whenever a frame closed it --------------------------------------------------

class Sockets {
  private readonly open = new Map<Kind, TestClient>();
  constructor(private readonly svc: Svc) {}

  async get(kind: Kind): Promise<TestClient> {
    const c = this.open.get(kind);
    if (c !== undefined && c.closed === undefined) return c;
    const fresh = await TestClient.connect(this.svc.ws(`${PATHS[kind]}?token=${TOKEN_SAME}`));
    await fresh.next('connection');
    this.open.set(kind, fresh);
    return fresh;
  }

  closeAll(): void {
    for (const c of this.open.values()) c.close();
    this.open.clear();
  }
}

let markers = 0;

/**
 * Send something and wait for its first reply (or the close), then send a marker (`subscribe` with a unique event
 * name, echoed back) and wait for its echo so that trailing replies (e.g. `execution_status` after `subscribed`)
 * do not leak into the next sample. The marker is sent only after the first reply: the server does not promise to
 * answer frames in order when some are handled asynchronously (see docs/security.md).
 */
async function outcomeOf(c: TestClient, kind: Kind, expected: Outcome, send: () => void): Promise<Outcome> {
  const start = c.frames.length;
  send();
  const expectsReply = !('reply' in expected && expected.reply === 'none');
  if (expectsReply) await until('a reply or a close', () => c.closed !== undefined || c.frames.length > start, 5000, 2);
  const marker = `__marker_${++markers}`;
  if (c.ws.readyState === c.ws.OPEN) c.ws.send(JSON.stringify({ type: 'subscribe', events: [marker] }));
  // The pipeline endpoint answers `subscribe` with `subscribed` then `subscription_confirmed`.
  const last = kind === 'pipeline' ? 'subscription_confirmed' : 'subscribed';
  const isMarker = (f: Frame, type: string): boolean => f.type === type && Array.isArray(f.events) && f.events.includes(marker);
  await until('the marker echo or a close', () => c.closed !== undefined || c.frames.slice(start).some((f) => isMarker(f, last)), 5000, 2);
  const first = c.frames[start];
  if (first === undefined || isMarker(first, 'subscribed')) {
    if (c.closed !== undefined) return { close: c.closed.code, reason: c.closed.reason };
    return { reply: 'none' };
  }
  return { reply: first.type, ...(first.type === 'error' || first.type === 'control_command_result' ? { code: first.code as string } : {}) };
}

function matches(expected: Outcome, got: Outcome, closed: { code: number; reason: string } | undefined): boolean {
  if ('close' in expected) return closed !== undefined && closed.code === expected.close && (expected.reason === undefined || closed.reason === expected.reason);
  return 'reply' in got && got.reply === expected.reply && (expected.code === undefined || got.code === expected.code);
}

const KINDS: Kind[] = ['execution', 'pipeline', 'project', 'monitor', 'system'];

describe('hostile WebSocket input', () => {
  let svc: Svc;
  let sockets: Sockets;

  beforeAll(async () => {
    svc = await startService({ WS_MAX_FRAME_BYTES: String(FRAME_LIMIT), WS_MAX_FRAMES_PER_SECOND: '100000', MONITOR_MAX_SUBSCRIPTIONS: '100000', CONTROL_MAX_PER_SECOND: '100000', AUTH_FRAME_TIMEOUT_MS: '300', PUBLISH_MAX_BODY_BYTES: '4096' });
    sockets = new Sockets(svc);
  });
  afterEach(async () => {
    sockets.closeAll();
    await wellBehaved(svc);
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  it('answers every client frame type with wrong, missing and right field types as documented', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...KINDS), clientFrame, async (kind, frame) => {
        const c = await sockets.get(kind);
        const text = JSON.stringify(frame);
        const expected = expectedForText(kind, text);
        const got = await outcomeOf(c, kind, expected, () => c.ws.send(text));
        if (!matches(expected, got, c.closed)) throw new Error(`${kind} ${text.slice(0, 200)}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)} closed ${JSON.stringify(c.closed)}`);
      }),
      { numRuns: 400 },
    );
  });

  it('answers random text with invalid_json, or as the JSON it happens to be', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...KINDS), fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.json({ maxDepth: 4 })), async (kind, text) => {
        const c = await sockets.get(kind);
        const expected = expectedForText(kind, text);
        const got = await outcomeOf(c, kind, expected, () => c.ws.send(text));
        if (!matches(expected, got, c.closed)) throw new Error(`${kind} ${JSON.stringify(text).slice(0, 200)}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`);
      }),
      { numRuns: 200 },
    );
  });

  it('closes 1007 on a text frame that is not UTF-8', async () => {
    // A valid prefix, then a byte sequence UTF-8 never produces (lone continuation, overlong, surrogate, 0xFF, cut).
    const bad = fc.constantFrom([0x80], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xff], [0xe2, 0x82], [0xf5, 0x80, 0x80, 0x80]);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...KINDS), fc.string({ maxLength: 50 }), bad, fc.string({ maxLength: 50 }), async (kind, head, invalid, tail) => {
        const c = await sockets.get(kind);
        const bytes = Buffer.concat([Buffer.from(head), Buffer.from(invalid), Buffer.from(tail)]);
        await outcomeOf(c, kind, { close: 1007 }, () => c.ws.send(bytes, { binary: false }));
        expect((await c.closedWith()).code).toBe(1007);
      }),
      { numRuns: 25 },
    );
  });

  it('closes 1008 on a binary frame', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...KINDS), fc.uint8Array({ minLength: 0, maxLength: 256 }), async (kind, bytes) => {
        const c = await sockets.get(kind);
        await outcomeOf(c, kind, { close: 1008 }, () => c.ws.send(bytes, { binary: true }));
        expect(await c.closedWith()).toEqual({ code: 1008, reason: 'binary_frame_not_supported' });
      }),
      { numRuns: 25 },
    );
  });

  it('closes 1009 on a frame (or string) over WS_MAX_FRAME_BYTES', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...KINDS), fc.integer({ min: FRAME_LIMIT + 1, max: FRAME_LIMIT * 8 }), fc.boolean(), async (kind, size, json) => {
        const c = await sockets.get(kind);
        const text = json ? JSON.stringify({ type: 'ping', pad: 'x'.repeat(size) }) : 'y'.repeat(size);
        await outcomeOf(c, kind, { close: 1009 }, () => c.ws.send(text));
        expect((await c.closedWith()).code).toBe(1009);
      }),
      { numRuns: 15 },
    );
  });

  it('parses deep JSON without trouble: a ping with a deep field is answered, a deep array is invalid_frame', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...KINDS), fc.integer({ min: 50, max: 7000 }), fc.constantFrom('array', 'object', 'bare'), async (kind, depth, shape) => {
        const c = await sockets.get(kind);
        const nested = shape === 'object' ? '{"a":'.repeat(depth) + '1' + '}'.repeat(depth) : '['.repeat(depth) + ']'.repeat(depth);
        const text = shape === 'bare' ? nested : `{"type":"ping","deep":${nested}}`;
        const expected = expectedForText(kind, text);
        const got = await outcomeOf(c, kind, expected, () => c.ws.send(text));
        if (!matches(expected, got, c.closed)) throw new Error(`${kind} depth ${depth} ${shape}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`);
      }),
      { numRuns: 40 },
    );
  });

  it('reassembles fragmented frames (fin:false) and answers them as the whole frame; too large in total is 1009', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...KINDS), clientFrame, fc.array(fc.nat(), { minLength: 1, maxLength: 6 }), fc.boolean(), async (kind, frame, cuts, oversize) => {
        const c = await sockets.get(kind);
        const text = oversize ? JSON.stringify({ type: 'ping', pad: 'z'.repeat(FRAME_LIMIT) }) : JSON.stringify(frame);
        const bytes = Buffer.from(text);
        const points = [...new Set(cuts.map((n) => n % (bytes.length + 1)))].sort((a, b) => a - b);
        const parts: Buffer[] = [];
        let at = 0;
        for (const p of points) {
          parts.push(bytes.subarray(at, p));
          at = p;
        }
        parts.push(bytes.subarray(at));
        const expected = expectedForText(kind, text);
        const got = await outcomeOf(c, kind, expected, () => parts.forEach((part, i) => c.ws.send(part, { binary: false, fin: i === parts.length - 1 })));
        if (!matches(expected, got, c.closed)) throw new Error(`${kind} ${parts.length} fragments of ${text.slice(0, 120)}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(got)}`);
      }),
      { numRuns: 80 },
    );
  });
});

// ---- upgrade requests on raw sockets -----------------------------------------------------------------------------

interface RawAnswer {
  status: number | undefined;
  /** After a 101: the first frame's opcode and, for a close frame, its code. */
  opcode?: number;
  closeCode?: number;
}

/** Send raw bytes, read the status line and, after a 101, the first frame. Resolves on that or when the peer ends. */
function rawRequest(port: number, request: Buffer): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    const s = netConnect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    let done = false;
    const finish = (a: RawAnswer | Error): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      if (a instanceof Error) reject(a);
      else resolve(a);
    };
    const timer = setTimeout(() => finish(new Error(`no answer within 5 s to ${JSON.stringify(request.toString('latin1').slice(0, 200))}`)), 5000);
    const parse = (): RawAnswer | undefined => {
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return undefined;
      const m = /^HTTP\/1\.[01] (\d{3})/.exec(buf.subarray(0, end).toString('latin1'));
      const status = m === null ? undefined : Number(m[1]);
      if (status !== 101) return { status };
      const frame = buf.subarray(end + 4);
      if (frame.length < 2) return undefined;
      const opcode = frame[0] & 0x0f;
      let len = frame[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (frame.length < 4) return undefined;
        len = frame.readUInt16BE(2);
        off = 4;
      }
      if (opcode !== 8) return { status, opcode };
      if (frame.length < off + Math.min(len, 2)) return undefined;
      return { status, opcode, closeCode: len >= 2 ? frame.readUInt16BE(off) : 1005 };
    };
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const a = parse();
      if (a !== undefined) finish(a);
    });
    s.on('error', () => finish(parse() ?? { status: undefined }));
    s.on('end', () => finish(parse() ?? { status: undefined }));
    s.write(request);
  });
}

describe('hostile HTTP upgrade requests and publish bodies', () => {
  let svc: Svc;

  beforeAll(async () => {
    svc = await startService({ AUTH_FRAME_TIMEOUT_MS: '300', PUBLISH_MAX_BODY_BYTES: '4096', ALLOWED_ORIGINS: 'https://ansflow.example.com' });
  });
  afterAll(async () => {
    await svc.shutdown();
  });

  const pathArb = fc.oneof(
    fc.constantFrom('/ws/execution/', '/ws/pipeline/', '/ws/project/').chain((p) => fc.oneof(fc.integer({ min: 1, max: 99 }).map(String), fc.string({ maxLength: 24 }).map(encodeURIComponent), fc.constantFrom('0', '-1', '1e3', '99999999999999999999', '%2e%2e', '1/2', '')).map((id) => p + id)),
    fc.constantFrom('/ws/monitor', '/ws/system', '/ws/monitor/', '/ws/', '/ws', '/', '/api/v1/publish', '/metrics', '/health', '//ws/system', '/ws/system/../monitor', '/WS/SYSTEM'),
    fc.webPath(),
    fc.string({ maxLength: 40 }).map((s) => '/' + s.replace(/[\r\n ]/g, '')),
  );
  const tokenArb = fc.oneof(fc.constant(undefined), fc.constantFrom(TOKEN_SAME, TOKEN_EXPIRED, 'garbage', '', TOKEN_SAME + 'x'), fc.string({ maxLength: 30 }).map(encodeURIComponent));
  const headerValue = fc.string({ maxLength: 40 }).map((s) => s.replace(/[\r\n]/g, ''));
  /** Mostly the right value, so that most requests get past the HTTP parser and reach the upgrade router. */
  const usually = <T>(good: T, bad: fc.Arbitrary<T | undefined>): fc.Arbitrary<T | undefined> => fc.oneof({ arbitrary: fc.constant(good), weight: 6 }, { arbitrary: bad, weight: 1 });
  const requestArb = fc.record({
    method: usually('GET', fc.constantFrom('POST', 'PUT', 'OPTIONS', 'FOO')),
    path: pathArb,
    token: tokenArb,
    query: fc.oneof(fc.constant(''), fc.constantFrom('&since=5', '&since=-1', '&since=abc', '&batch=1', '&batch=yes', '&token=&token=x')),
    version: usually('HTTP/1.1', fc.constantFrom('HTTP/1.0', 'HTTP/2', 'HTTX')),
    upgrade: usually('websocket', fc.oneof(fc.constant(undefined), headerValue)),
    connection: usually('Upgrade', fc.oneof(fc.constant(undefined), fc.constant('keep-alive, Upgrade'), headerValue)),
    key: usually('dGhlIHNhbXBsZSBub25jZQ==', fc.oneof(fc.constant(undefined), headerValue)),
    wsVersion: usually('13', fc.oneof(fc.constant(undefined), fc.constantFrom('8', '99', 'abc'))),
    origin: fc.oneof(fc.constant(undefined), fc.constantFrom('https://ansflow.example.com', 'https://evil.example.net', 'null'), headerValue),
    protocol: fc.oneof(fc.constant(undefined), fc.constantFrom(`ansflow.v1, bearer.${TOKEN_SAME}`, 'bearer.garbage', ',,,', 'a b c'), headerValue),
    extra: fc.array(fc.tuple(fc.string({ minLength: 1, maxLength: 12 }).filter((k) => /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k)), headerValue), { maxLength: 3 }),
  });

  it('answers random upgrade requests with a close code or an HTTP status below 500, never a crash', async () => {
    const seen = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(requestArb, async (r) => {
        const url = r.token === undefined ? r.path + (r.query === '' ? '' : `?${r.query.slice(1)}`) : `${r.path}?token=${r.token}${r.query}`;
        const lines = [`${r.method} ${url} ${r.version}`, `Host: 127.0.0.1:${svc.port}`];
        if (r.upgrade !== undefined) lines.push(`Upgrade: ${r.upgrade}`);
        if (r.connection !== undefined) lines.push(`Connection: ${r.connection}`);
        if (r.key !== undefined) lines.push(`Sec-WebSocket-Key: ${r.key}`);
        if (r.wsVersion !== undefined) lines.push(`Sec-WebSocket-Version: ${r.wsVersion}`);
        if (r.origin !== undefined) lines.push(`Origin: ${r.origin}`);
        if (r.protocol !== undefined) lines.push(`Sec-WebSocket-Protocol: ${r.protocol}`);
        for (const [k, v] of r.extra) lines.push(`${k}: ${v}`);
        const answer = await rawRequest(svc.port, Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'));
        const label = answer.status === 101 ? `101 ${answer.opcode === 8 ? `close ${answer.closeCode}` : 'open'}` : String(answer.status);
        seen.set(label, (seen.get(label) ?? 0) + 1);
        if (answer.status === undefined) throw new Error(`no HTTP answer to ${lines[0]}`);
        if (answer.status >= 500) throw new Error(`${answer.status} to ${lines.join(' | ')}`);
        if (answer.status === 101 && answer.opcode === 8) expect([4001, 4003, 4004, 4029]).toContain(answer.closeCode);
        if (answer.status === 101 && answer.opcode !== 8) expect(answer.opcode).toBe(1); // the `connection` greeting
      }),
      { numRuns: 300 },
    );
    console.log(`upgrade answers: ${JSON.stringify(Object.fromEntries(seen))}`);
    await wellBehaved(svc);
  });

  it('answers random publish bodies with 202, 400, 401 or 413 only', async () => {
    const event = fc.record({ type: fc.oneof(fc.string({ maxLength: 20 }), wrong), message: field(fc.string({ maxLength: 50 })) }).map(strip);
    const item = fc.record({ channel: fc.oneof(fc.constantFrom('execution.1', 'system', 'monitor', 'user.1', 'pipeline.0', 'execution.-1', 'nope'), fc.string({ maxLength: 20 }), wrong), event: fc.oneof(event, wrong), message_id: field(fc.string({ maxLength: 40 })) }).map(strip);
    const body = fc.oneof(
      item.map((x) => JSON.stringify(x)),
      fc.array(item, { maxLength: 5 }).map((x) => JSON.stringify(x)),
      fc.json({ maxDepth: 4 }),
      fc.string({ unit: 'binary', maxLength: 100 }),
      fc.integer({ min: 4000, max: 20_000 }).map((n) => JSON.stringify({ channel: 'system', event: { type: 'x', pad: 'p'.repeat(n) } })),
      fc.constant(''),
    );
    const auth = fc.oneof({ arbitrary: fc.constant('Bearer test-publish-key-0123'), weight: 5 }, fc.constantFrom('Bearer wrong', 'bearer test-publish-key-0123', 'Basic abc', undefined));
    const contentType = fc.oneof({ arbitrary: fc.constant('application/json'), weight: 5 }, fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', undefined));
    const seen = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(body, auth, contentType, async (b, a, ct) => {
        const headers: Record<string, string> = {};
        if (a !== undefined) headers.authorization = a;
        if (ct !== undefined) headers['content-type'] = ct;
        const res = await fetch(`${svc.url}/api/v1/publish`, { method: 'POST', headers, body: b });
        await res.arrayBuffer();
        seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
        // 415 is express.json's answer to a JSON body in a charset other than UTF-8: a fair status, listed apart in
        // docs/security.md (docs/protocol.md lists 202/400/401/413/503).
        const charset415 = res.status === 415 && /charset=(?!utf-?8)/i.test(ct ?? '');
        if (![202, 400, 401, 413].includes(res.status) && !charset415) throw new Error(`${res.status} for ${ct} ${a} ${b.slice(0, 200)}`);
      }),
      { numRuns: 300 },
    );
    console.log(`publish answers: ${JSON.stringify(Object.fromEntries(seen))}`);
    await wellBehaved(svc);
  });
});

// ---- broker messages ---------------------------------------------------------------------------------------------

describe('hostile broker messages', () => {
  const exchange = uniqueExchange('fuzz');
  const MAX_BYTES = 2048;
  const CHANNELS = ['execution.21', 'pipeline.22', 'project.23', 'user.1', 'monitor', 'system'];
  let svc: Svc;
  let pub: Publisher;

  beforeAll(async () => {
    svc = await startService({ RABBITMQ_URL, RABBITMQ_EXCHANGE: exchange, BROKER_MAX_MESSAGE_BYTES: String(MAX_BYTES) });
    await until('broker connected', async () => (await metric(svc, 'realtime_broker_connected')) === 1, 20_000, 50);
    pub = await connectPublisher();
  }, 60_000);
  afterAll(async () => {
    await pub?.close();
    await svc?.shutdown();
    await deleteBrokerObjects(exchange);
  });

  /** Independent of src/messaging: a message is delivered iff small enough, its key names a channel, its body a JSON object with a non-empty string type. */
  function deliverable(key: string, body: Buffer): boolean {
    if (body.length > MAX_BYTES) return false;
    if (!/^(?:(?:execution|pipeline|project|user)\.[1-9]\d{0,18}|monitor|system)$/.test(key)) return false;
    try {
      const v: unknown = JSON.parse(body.toString('utf8'));
      return isObject(v) && typeof v.type === 'string' && v.type.length > 0;
    } catch {
      return false;
    }
  }

  it('delivers or dead-letters every random message, never crashes', async () => {
    // Sockets reading every channel the valid messages go to.
    const readers = await Promise.all(['/ws/execution/21', '/ws/pipeline/22', '/ws/project/23', '/ws/monitor'].map(async (p) => {
      const c = await TestClient.connect(svc.ws(`${p}?token=${TOKEN_SAME}`));
      await c.next('connection');
      return c;
    }));
    const key = fc.oneof(fc.constantFrom(...CHANNELS), fc.constantFrom('execution.0', 'execution.x', 'user.', 'Monitor', 'system.extra', '', '#', 'execution.21.log'), fc.string({ maxLength: 30 }));
    const body = fc.oneof(
      fc.record({ type: fc.oneof(fc.string({ minLength: 1, maxLength: 20 }), wrong), message: field(fc.string({ maxLength: 40 })) }).map((o) => Buffer.from(JSON.stringify(strip(o)))),
      fc.json({ maxDepth: 3 }).map((s) => Buffer.from(s)),
      fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
      fc.integer({ min: MAX_BYTES - 40, max: MAX_BYTES * 3 }).map((n) => Buffer.from(JSON.stringify({ type: 'big', pad: 'q'.repeat(n) }))),
    );
    const props = fc.record({
      messageId: fc.oneof(fc.constant(undefined), fc.constantFrom('dup-a', 'dup-b'), fc.uuid()),
      contentType: fc.oneof(fc.constant(undefined), fc.constantFrom('application/json', 'text/plain', 'application/octet-stream')),
      timestamp: fc.oneof(fc.constant(undefined), fc.integer({ min: 0, max: 2 ** 31 })),
      publishedAt: fc.oneof(fc.constant(undefined), fc.constantFrom(-1, 0, 1e20, 'abc', '1.5', Date.now())),
      header: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 20 })),
    });
    const messages = fc.sample(fc.tuple(key, body, props), { numRuns: 300, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 100_000) });

    const before = {
      consumed: await metric(svc, 'realtime_broker_messages_consumed_total'),
      published: await metric(svc, 'realtime_events_published_total', { source: 'broker' }),
      duplicates: await metric(svc, 'realtime_broker_duplicates_total'),
      dead: await metric(svc, 'realtime_broker_messages_dead_lettered_total'),
    };
    const seenIds = new Set<string>();
    let valid = 0;
    let duplicates = 0;
    const expectedPerChannel = new Map<string, number>();
    for (const [k, b, p] of messages) {
      if (deliverable(k, b)) {
        if (p.messageId !== undefined && seenIds.has(p.messageId)) duplicates++;
        else {
          valid++;
          expectedPerChannel.set(k, (expectedPerChannel.get(k) ?? 0) + 1);
        }
        if (p.messageId !== undefined) seenIds.add(p.messageId);
      }
      const headers: Record<string, unknown> = {};
      if (p.publishedAt !== undefined) headers['x-published-at-ms'] = p.publishedAt;
      if (p.header !== undefined) headers['x-random'] = p.header;
      await pub.publish(exchange, k, b, { messageId: p.messageId, contentType: p.contentType, timestamp: p.timestamp, headers });
    }
    const invalid = messages.length - valid - duplicates;
    await until('every message consumed from the stream', async () => (await metric(svc, 'realtime_broker_messages_consumed_total')) - before.consumed >= messages.length, 20_000, 50);
    await until('every invalid message dead-lettered', async () => (await metric(svc, 'realtime_broker_messages_dead_lettered_total')) - before.dead >= invalid, 20_000, 50);
    expect((await metric(svc, 'realtime_broker_messages_consumed_total')) - before.consumed).toBe(messages.length);
    expect((await metric(svc, 'realtime_events_published_total', { source: 'broker' })) - before.published).toBe(valid);
    expect((await metric(svc, 'realtime_broker_duplicates_total')) - before.duplicates).toBe(duplicates);
    expect((await metric(svc, 'realtime_broker_messages_dead_lettered_total')) - before.dead).toBe(invalid);
    const dlq = await drainQueue(pub.ch, brokerObjects(exchange).dlq);
    expect(dlq.length).toBe(invalid);
    // What the sockets got: every valid message of their channels (user.1 reaches all four sockets).
    const perSocket: Record<string, string[]> = { '/ws/execution/21': ['execution.21'], '/ws/pipeline/22': ['pipeline.22'], '/ws/project/23': ['project.23'], '/ws/monitor': ['monitor', 'system'] };
    await Promise.all(
      readers.map(async (c, i) => {
        const chans = [...Object.values(perSocket)[i], 'user.1'];
        const n = chans.reduce((s, ch) => s + (expectedPerChannel.get(ch) ?? 0), 0);
        await c.collect((f) => typeof f.channel === 'string' && chans.includes(f.channel), n, 10_000);
        c.close();
      }),
    );
    console.log(`broker messages: ${messages.length} sent, ${valid} delivered, ${duplicates} duplicates dropped, ${invalid} dead-lettered`);
    await wellBehaved(svc, 21);
  });
});
