import { decodeRecord, encodeRecord, type StreamRecord } from './amqp10';

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
