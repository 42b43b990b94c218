import { decodeDigest, DigestBuilder, digestRange } from './stream-digest';

/** A chunk-like buffer holding the given records back to back, and their ranges. */
function records(...texts: string[]): { buf: Buffer; ranges: Array<[number, number]> } {
  const buf = Buffer.from(texts.join(''));
  let p = 0;
  const ranges = texts.map((t): [number, number] => [p, (p += t.length)]);
  return { buf, ranges };
}

function texts(body: Buffer): Array<string | undefined> {
  const d = decodeDigest(body);
  if (d === undefined) throw new Error('not a digest');
  return d.records.map((r) => (r === undefined ? undefined : d.buf.toString('utf8', r[0], r[1])));
}

describe('DigestBuilder and decodeDigest', () => {
  it('round-trips records, unreadable ones included, with the first offset', () => {
    const { buf, ranges } = records('alpha', 'be', 'gamma');
    const b = new DigestBuilder();
    b.add(40, buf, ranges[0]);
    b.add(41, buf, undefined);
    b.add(42, buf, ranges[1]);
    b.add(43, buf, ranges[2]);
    expect(b.size).toBe(4);
    expect(b.nextOffset).toBe(44);
    const body = b.take(-1);
    expect(body).toBeDefined();
    expect(decodeDigest(body!)?.firstOffset).toBe(40);
    expect(texts(body!)).toEqual(['alpha', undefined, 'be', 'gamma']);
    expect(digestRange(body!)).toEqual({ first: 40, last: 43 });
    expect(b.size).toBe(0);
  });

  it('leaves out the records someone else has covered, and nothing when all are', () => {
    const { buf, ranges } = records('a', 'bb', 'ccc', 'dddd');
    const b = new DigestBuilder();
    ranges.forEach((r, i) => b.add(10 + i, buf, r));
    const body = b.take(11);
    expect(digestRange(body!)).toEqual({ first: 12, last: 13 });
    expect(texts(body!)).toEqual(['ccc', 'dddd']);
    ranges.forEach((r, i) => b.add(20 + i, buf, r));
    expect(b.take(23)).toBeUndefined();
    expect(b.size).toBe(0);
  });

  it('grows past its first buffer', () => {
    const big = 'x'.repeat(40_000);
    const { buf, ranges } = records(big, big, big);
    const b = new DigestBuilder();
    ranges.forEach((r, i) => b.add(i, buf, r));
    expect(texts(b.take(-1)!)).toEqual([big, big, big]);
  });

  it('decodes each digest right when they follow one another (the records array is reused)', () => {
    const { buf, ranges } = records('one', 'two', 'three');
    const first = new DigestBuilder();
    first.add(0, buf, ranges[0]);
    first.add(1, buf, undefined);
    first.add(2, buf, ranges[1]);
    const second = new DigestBuilder();
    second.add(7, buf, undefined);
    second.add(8, buf, ranges[2]);
    const a = first.take(-1)!;
    const b = second.take(-1)!;
    expect(texts(a)).toEqual(['one', undefined, 'two']);
    expect(texts(b)).toEqual([undefined, 'three']);
    expect(texts(a)).toEqual(['one', undefined, 'two']);
  });

  it('refuses what is not a well-formed digest', () => {
    const { buf, ranges } = records('hello', 'world');
    const b = new DigestBuilder();
    ranges.forEach((r, i) => b.add(i, buf, r));
    const body = b.take(-1)!;
    expect(decodeDigest(Buffer.from('{"type":"log_entry"}'))).toBeUndefined();
    expect(digestRange(Buffer.from('{"type":"log_entry"}'))).toBeUndefined();
    expect(decodeDigest(body.subarray(0, body.length - 1))).toBeUndefined(); // truncated
    expect(decodeDigest(Buffer.concat([body, Buffer.from([0])]))).toBeUndefined(); // trailing bytes
    const lying = Buffer.from(body);
    lying.writeUInt32BE(3, 12); // claims one record more than it holds
    expect(decodeDigest(lying)).toBeUndefined();
  });
});
