import fc from 'fast-check';
import { decodeRecord, encodeRecord, type StreamRecord } from './amqp10';

// Just enough of an AMQP 1.0 encoder to build the records RabbitMQ stores for an AMQP 0-9-1 publish.
const str = (s: string): Buffer => {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from([0xa1, b.length]), b]);
};
const sym = (s: string): Buffer => {
  const b = Buffer.from(s);
  return Buffer.concat([Buffer.from([0xa3, b.length]), b]);
};
const long = (v: bigint): Buffer => {
  const b = Buffer.alloc(9);
  b[0] = 0x81;
  b.writeBigInt64BE(v, 1);
  return b;
};
const timestamp = (ms: bigint): Buffer => {
  const b = Buffer.alloc(9);
  b[0] = 0x83;
  b.writeBigInt64BE(ms, 1);
  return b;
};
const NULL = Buffer.from([0x40]);
/** A list or map with an 8-bit (`c0`/`c1`) or a 32-bit (`d0`/`d1`) constructor. */
function compound(kind: 'list' | 'map', items: Buffer[], wide = false): Buffer {
  const body = Buffer.concat(items);
  if (!wide) return Buffer.concat([Buffer.from([kind === 'list' ? 0xc0 : 0xc1, body.length + 1, items.length]), body]);
  const head = Buffer.alloc(9);
  head[0] = kind === 'list' ? 0xd0 : 0xd1;
  head.writeUInt32BE(body.length + 4, 1);
  head.writeUInt32BE(items.length, 5);
  return Buffer.concat([head, body]);
}
const section = (code: number, value: Buffer): Buffer => Buffer.concat([Buffer.from([0x00, 0x53, code]), value]);
const data = (b: Buffer): Buffer => section(0x75, Buffer.concat([Buffer.from([0xa0, b.length]), b]));

interface Parts {
  routingKey?: string;
  messageId?: string;
  creationMs?: bigint;
  publishedAt?: Buffer;
  sync?: string;
  bodies?: string[];
  wide?: boolean;
}

function record(p: Parts): Buffer {
  const wide = p.wide ?? false;
  const properties = [
    p.messageId === undefined ? NULL : str(p.messageId),
    ...Array<Buffer>(8).fill(NULL),
    p.creationMs === undefined ? NULL : timestamp(p.creationMs),
  ];
  const headers: Buffer[] = [str('other'), long(1n)];
  if (p.publishedAt !== undefined) headers.push(str('x-published-at-ms'), p.publishedAt);
  if (p.sync !== undefined) headers.push(str('x-ansflow-sync'), str(p.sync));
  return Buffer.concat([
    section(0x72, compound('map', [sym('x-exchange'), str('ex'), sym('x-routing-key'), str(p.routingKey ?? '')], wide)),
    section(0x73, compound('list', properties, wide)),
    section(0x74, compound('map', headers, wide)),
    ...(p.bodies ?? ['{}']).map((b) => data(Buffer.from(b))),
  ]);
}

function decode(b: Buffer): ReturnType<typeof decodeRecord> {
  // Inside a larger buffer, as in a chunk: the record is read from its range only.
  const buf = Buffer.concat([Buffer.from('head'), b, Buffer.from('tail')]);
  return decodeRecord(buf, 4, 4 + b.length);
}

describe('decodeRecord', () => {
  it.each([false, true])('reads routing key, message id, headers, creation time and body (32-bit lists and maps: %s)', (wide) => {
    const r = decode(
      record({
        routingKey: 'execution.7',
        messageId: 'm-1',
        creationMs: 1_764_000_000_123n,
        publishedAt: long(1_764_000_000_456n),
        bodies: ['{"type":"x"}'],
        wide,
      }),
    );
    expect(r).toMatchObject({
      routingKey: 'execution.7',
      messageId: 'm-1',
      timestampSeconds: 1_764_000_000,
      publishedAtHeader: 1_764_000_000_456,
      syncId: undefined,
    });
    expect(r?.body.toString()).toBe('{"type":"x"}');
  });

  it('reads a sync marker id and joins several data sections', () => {
    const r = decode(record({ sync: 'abc', bodies: ['{"a":', '1}'] }));
    expect(r?.syncId).toBe('abc');
    expect(r?.body.toString()).toBe('{"a":1}');
    expect(r?.messageId).toBeUndefined();
    expect(r?.timestampSeconds).toBeUndefined();
  });

  it('reads 64-bit headers and creation times as the nearest number, beyond 2^53 and negative too', () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }), (v) => {
        const r = decode(record({ publishedAt: long(v), creationMs: v }));
        expect(r?.publishedAtHeader).toBe(Number(v));
        expect(r?.timestampSeconds).toBe(Math.floor(Number(v) / 1000));
      }),
    );
  });

  it('is undefined for a truncated or malformed record', () => {
    const full = record({ routingKey: 'monitor', messageId: 'm' });
    for (const cut of [1, 5, full.length - 1]) expect(decode(full.subarray(0, cut))).toBeUndefined();
    expect(decode(Buffer.from([0x01, 0x02]))).toBeUndefined();
  });
});

function roundTrip(rec: StreamRecord): StreamRecord | undefined {
  const buf = encodeRecord(rec);
  return decodeRecord(buf, 0, buf.length);
}

describe('encodeRecord', () => {
  it('encodes what decodeRecord reads back equal', () => {
    const rec: StreamRecord = {
      routingKey: 'execution.42',
      messageId: 'm-1é',
      publishedAtHeader: 1_764_000_000_123,
      timestampSeconds: 1_764_000_000,
      syncId: undefined,
      body: Buffer.from('{"type":"log_entry"}'),
    };
    expect(roundTrip(rec)).toEqual(rec);
  });

  it('keeps absent fields absent, a string header a string, and a sync marker its id', () => {
    const rec: StreamRecord = {
      routingKey: '',
      messageId: undefined,
      publishedAtHeader: '1764000000123',
      timestampSeconds: undefined,
      syncId: 'abc',
      body: Buffer.alloc(0),
    };
    expect(roundTrip(rec)).toEqual(rec);
    expect(roundTrip({ ...rec, publishedAtHeader: { not: 'a scalar' } })?.publishedAtHeader).toBeUndefined();
  });

  it('reads inside a larger buffer, at an offset', () => {
    const rec: StreamRecord = { routingKey: 'a.b', messageId: 'x', publishedAtHeader: 1.5, timestampSeconds: 7, syncId: undefined, body: Buffer.from('hi') };
    const enc = encodeRecord(rec);
    const buf = Buffer.concat([Buffer.from('junk'), enc, Buffer.from('more')]);
    expect(decodeRecord(buf, 4, 4 + enc.length)).toEqual(rec);
  });
});
