/**
 * Just enough of the AMQP 1.0 type system to read what RabbitMQ stores in a stream for a message published over
 * AMQP 0-9-1: the routing key (message annotation `x-routing-key`), the message id, the publisher's
 * `x-published-at-ms` header (application properties), the AMQP timestamp (creation time) and the body (data
 * sections). Every other section and value is skipped by its encoded size, so an unexpected type costs nothing
 * and cannot throw (the npm stream client threw on a `long` header, the type Django's and our own publisher use).
 */
export interface StreamRecord {
  routingKey: string;
  messageId: string | undefined;
  /** `x-published-at-ms` application property (a number, or a string of digits), else undefined. */
  publishedAtHeader: unknown;
  /** The AMQP 0-9-1 timestamp in seconds (stored as creation-time in ms), else undefined. */
  timestampSeconds: number | undefined;
  /** `x-ansflow-sync` application property: the id of a sync marker (see BrokerConsumer). */
  syncId: string | undefined;
  body: Buffer;
}

const EMPTY = Buffer.alloc(0);

/** Decode one stream record (`buf[start, end)`); undefined when it is not a well-formed AMQP 1.0 message. */
export function decodeRecord(buf: Buffer, start: number, end: number): StreamRecord | undefined {
  const r: StreamRecord = { routingKey: '', messageId: undefined, publishedAtHeader: undefined, timestampSeconds: undefined, syncId: undefined, body: EMPTY };
  let bodies: Buffer[] | undefined;
  let p = start;
  try {
    while (p < end) {
      // Each section is a described type: 0x00, descriptor (a small ulong code), value.
      if (buf[p] !== 0x00) return undefined;
      p++;
      let code: number;
      if (buf[p] === 0x53) {
        code = buf[p + 1];
        p += 2;
      } else if (buf[p] === 0x80) {
        code = readUInt64(buf, p + 1);
        p += 9;
      } else {
        p = skip(buf, p); // symbolic descriptor: unknown section
        p = skip(buf, p);
        continue;
      }
      switch (code) {
        case 0x72: // message annotations
          p = readAnnotations(buf, p, r);
          break;
        case 0x73: // properties: a list; message-id is field 0, creation-time field 9
          p = readProperties(buf, p, r);
          break;
        case 0x74: // application properties (the AMQP 0-9-1 headers)
          p = readApplicationProperties(buf, p, r);
          break;
        case 0x75: {
          // data: a binary; a message may carry several data sections
          const b = readBinary(buf, p);
          if (b === undefined) return undefined;
          (bodies ??= []).push(b);
          p = skip(buf, p);
          break;
        }
        case 0x77: {
          // amqp-value: a string or binary body (not what AMQP 0-9-1 produces, but cheap to accept)
          const s = readString(buf, p);
          const b = s !== undefined ? Buffer.from(s) : readBinary(buf, p);
          if (b !== undefined) (bodies ??= []).push(b);
          p = skip(buf, p);
          break;
        }
        default:
          p = skip(buf, p);
      }
    }
  } catch {
    return undefined; // truncated or malformed: out-of-range reads throw
  }
  if (p !== end) return undefined;
  if (bodies !== undefined) r.body = bodies.length === 1 ? bodies[0] : Buffer.concat(bodies);
  return r;
}

/*
 * The three sections read below are walked in place, without a visitor closure per section: the replay of a restart
 * decodes every record of the stream, and three closures per record were garbage the collector had to sweep.
 */

/** Message annotations (a map): the routing key. Returns the end position. */
function readAnnotations(buf: Buffer, p: number, r: StreamRecord): number {
  const count = compoundCount(buf, p, 0xc1, 0xd1);
  if (count < 0) return skip(buf, p);
  const end = skip(buf, p);
  let q = compoundFirst(buf, p);
  for (let i = 0; i + 1 < count; i += 2) {
    const keyAt = q;
    q = skip(buf, q);
    if (keyIs(buf, keyAt, ROUTING_KEY)) r.routingKey = readString(buf, q) ?? '';
    q = skip(buf, q);
  }
  return end;
}

/** Properties (a list): message-id is field 0, creation-time field 9. Returns the end position. */
function readProperties(buf: Buffer, p: number, r: StreamRecord): number {
  const count = compoundCount(buf, p, 0xc0, 0xd0);
  if (count < 0) return skip(buf, p); // list0 or not a list
  const end = skip(buf, p);
  let q = compoundFirst(buf, p);
  for (let i = 0; i < count; i++) {
    if (i === 0) r.messageId = readString(buf, q);
    else if (i === 9 && buf[q] === 0x83) r.timestampSeconds = Math.floor(readInt64(buf, q + 1) / 1000);
    q = skip(buf, q);
  }
  return end;
}

/** Application properties (a map): the publish time header and the sync marker id. Returns the end position. */
function readApplicationProperties(buf: Buffer, p: number, r: StreamRecord): number {
  const count = compoundCount(buf, p, 0xc1, 0xd1);
  if (count < 0) return skip(buf, p);
  const end = skip(buf, p);
  let q = compoundFirst(buf, p);
  for (let i = 0; i + 1 < count; i += 2) {
    const keyAt = q;
    q = skip(buf, q);
    if (keyIs(buf, keyAt, PUBLISHED_AT)) r.publishedAtHeader = readScalar(buf, q);
    else if (keyIs(buf, keyAt, SYNC)) r.syncId = readString(buf, q);
    q = skip(buf, q);
  }
  return end;
}

/** The element count of the list or map at `p` (its 8-bit or 32-bit constructor given), or -1 when it is neither. */
function compoundCount(buf: Buffer, p: number, small: number, large: number): number {
  const c = buf[p];
  if (c === small) return buf[p + 2];
  if (c === large) return buf.readUInt32BE(p + 5);
  return -1;
}

/** Where the first element of the list or map at `p` starts (after constructor, size and count). */
function compoundFirst(buf: Buffer, p: number): number {
  return buf[p] === 0xc0 || buf[p] === 0xc1 ? p + 3 : p + 9;
}

/**
 * 64-bit integers as the nearest double, like `Number(buf.readBigInt64BE(p))` without a BigInt per value: the high
 * word times 2^32 is exact, and the one rounding of the sum gives the same nearest double.
 */
function readInt64(buf: Buffer, p: number): number {
  return buf.readInt32BE(p) * 4294967296 + buf.readUInt32BE(p + 4);
}

function readUInt64(buf: Buffer, p: number): number {
  return buf.readUInt32BE(p) * 4294967296 + buf.readUInt32BE(p + 4);
}

/** The position after the value that starts at `p` (its constructor byte). */
function skip(buf: Buffer, p: number): number {
  const c = buf[p];
  if (c === undefined) throw new RangeError('truncated');
  if (c === 0x00) return skip(buf, skip(buf, p + 1)); // described: descriptor, then value
  switch (c >> 4) {
    case 0x4:
      return p + 1;
    case 0x5:
      return p + 2;
    case 0x6:
      return p + 3;
    case 0x7:
      return p + 5;
    case 0x8:
      return p + 9;
    case 0x9:
      return p + 17;
    case 0xa:
    case 0xc:
    case 0xe:
      return p + 2 + buf[p + 1];
    case 0xb:
    case 0xd:
    case 0xf:
      return p + 5 + buf.readUInt32BE(p + 1);
    default:
      throw new RangeError(`unknown AMQP 1.0 constructor 0x${c.toString(16)}`);
  }
}

function readString(buf: Buffer, p: number): string | undefined {
  const c = buf[p];
  if (c === 0xa1 || c === 0xa3) return buf.toString('utf8', p + 2, p + 2 + buf[p + 1]);
  if (c === 0xb1 || c === 0xb3) return buf.toString('utf8', p + 5, p + 5 + buf.readUInt32BE(p + 1));
  return undefined;
}

function readBinary(buf: Buffer, p: number): Buffer | undefined {
  const c = buf[p];
  if (c === 0xa0) return buf.subarray(p + 2, p + 2 + buf[p + 1]);
  if (c === 0xb0) return buf.subarray(p + 5, p + 5 + buf.readUInt32BE(p + 1));
  return undefined;
}

/** A number or string header value; other types are reported as undefined. */
function readScalar(buf: Buffer, p: number): unknown {
  switch (buf[p]) {
    case 0x81: // long
    case 0x83: // timestamp
      return readInt64(buf, p + 1);
    case 0x80: // ulong
      return readUInt64(buf, p + 1);
    case 0x71:
      return buf.readInt32BE(p + 1);
    case 0x70:
      return buf.readUInt32BE(p + 1);
    case 0x55:
      return buf.readInt8(p + 1);
    case 0x53:
    case 0x52:
    case 0x50:
      return buf[p + 1];
    case 0x54:
      return buf.readInt8(p + 1);
    case 0x44:
    case 0x43:
      return 0;
    case 0x82:
      return buf.readDoubleBE(p + 1);
    default:
      return readString(buf, p);
  }
}

const ROUTING_KEY = Buffer.from('x-routing-key');
const PUBLISHED_AT = Buffer.from('x-published-at-ms');
const SYNC = Buffer.from('x-ansflow-sync');

/** Whether the value at `p` is a string or symbol whose bytes are `key`'s (no string is built for the comparison). */
function keyIs(buf: Buffer, p: number, key: Buffer): boolean {
  const c = buf[p];
  let start: number;
  let length: number;
  if (c === 0xa1 || c === 0xa3) {
    length = buf[p + 1];
    start = p + 2;
  } else if (c === 0xb1 || c === 0xb3) {
    length = buf.readUInt32BE(p + 1);
    start = p + 5;
  } else return false;
  if (length !== key.length) return false;
  for (let i = 0; i < length; i++) if (buf[start + i] !== key[i]) return false;
  return true;
}

/**
 * Encode the fields `decodeRecord` reads as an AMQP 1.0 message, as RabbitMQ would store it (message annotations,
 * properties, application properties, one data section). The live tail is read over AMQP 0-9-1, which gives no stored
 * bytes: its messages are encoded so that digests hold records every reader decodes alike (ADR 0003). One pass into
 * one buffer: it runs once per live event.
 */
export function encodeRecord(rec: StreamRecord): Buffer {
  const routingKey = Buffer.byteLength(rec.routingKey);
  const messageId = rec.messageId === undefined ? -1 : Buffer.byteLength(rec.messageId);
  const at = rec.publishedAtHeader;
  const atKind = typeof at === 'string' ? 'string' : typeof at === 'number' && Number.isFinite(at) ? (Number.isSafeInteger(at) ? 'long' : 'double') : undefined;
  const atBytes = atKind === undefined ? 0 : atKind === 'string' ? 5 + Buffer.byteLength(at as string) : 9;
  const sync = rec.syncId === undefined ? -1 : Buffer.byteLength(rec.syncId);
  const annotations = 3 + 9 + 5 + ROUTING_KEY.length + 5 + routingKey;
  const propsItems = (messageId < 0 ? 1 : 5 + messageId) + (rec.timestampSeconds === undefined ? 0 : 8 + 9);
  const appItems = (atKind === undefined ? 0 : 5 + PUBLISHED_AT.length + atBytes) + (sync < 0 ? 0 : 5 + SYNC.length + 5 + sync);
  const size = annotations + 3 + 9 + propsItems + (appItems > 0 ? 3 + 9 + appItems : 0) + 3 + 5 + rec.body.length;
  const buf = Buffer.allocUnsafe(size);
  let p = 0;
  const u8 = (v: number): void => {
    buf[p++] = v;
  };
  const u32 = (v: number): void => {
    buf.writeUInt32BE(v, p);
    p += 4;
  };
  const text = (constructor: number, s: string, bytes: number): void => {
    u8(constructor);
    u32(bytes);
    p += buf.write(s, p, 'utf8');
  };
  const compound = (constructor: number, code: number, bytes: number, count: number): void => {
    u8(0x00);
    u8(0x53);
    u8(code);
    u8(constructor);
    u32(bytes + 4);
    u32(count);
  };
  compound(0xd1, 0x72, annotations - 12, 2); // message annotations: map32
  u8(0xb3);
  u32(ROUTING_KEY.length);
  p += ROUTING_KEY.copy(buf, p);
  text(0xb1, rec.routingKey, routingKey);
  compound(0xd0, 0x73, propsItems, rec.timestampSeconds === undefined ? 1 : 10); // properties: list32
  if (rec.messageId === undefined) u8(0x40);
  else text(0xb1, rec.messageId, messageId);
  if (rec.timestampSeconds !== undefined) {
    for (let i = 1; i < 9; i++) u8(0x40);
    u8(0x83);
    buf.writeBigInt64BE(BigInt(Math.trunc(rec.timestampSeconds)) * 1000n, p);
    p += 8;
  }
  if (appItems > 0) {
    compound(0xd1, 0x74, appItems, (atKind === undefined ? 0 : 2) + (sync < 0 ? 0 : 2)); // application properties
    if (atKind !== undefined) {
      u8(0xb1);
      u32(PUBLISHED_AT.length);
      p += PUBLISHED_AT.copy(buf, p);
      if (atKind === 'string') text(0xb1, at as string, atBytes - 5);
      else if (atKind === 'long') {
        u8(0x81);
        buf.writeBigInt64BE(BigInt(at as number), p);
        p += 8;
      } else {
        u8(0x82);
        p = buf.writeDoubleBE(at as number, p);
      }
    }
    if (rec.syncId !== undefined) {
      u8(0xb1);
      u32(SYNC.length);
      p += SYNC.copy(buf, p);
      text(0xb1, rec.syncId, sync);
    }
  }
  u8(0x00); // data: vbin32
  u8(0x53);
  u8(0x75);
  u8(0xb0);
  u32(rec.body.length);
  p += rec.body.copy(buf, p);
  if (p !== size) throw new Error(`encodeRecord: wrote ${p} of ${size} bytes`);
  return buf;
}
