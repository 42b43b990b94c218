import fc from 'fast-check';
import { scanJson, type ScanResult } from './json-scan';

/** What scanJson must say: JSON.parse of the decoded text, and the object's members as the hub reads them. */
function reference(bytes: Buffer): ScanResult {
  let v: unknown;
  try {
    v = JSON.parse(bytes.toString('utf8'));
  } catch {
    return 'invalid';
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return 'value';
  const o = v as Record<string, unknown>;
  return {
    type: typeof o.type === 'string' ? o.type : undefined,
    channel: 'channel' in o,
    position: 'position' in o,
    timestamp: !('timestamp' in o) ? undefined : typeof o.timestamp === 'string' ? 'string' : 'other',
    data: 'data' in o,
  };
}

const same = (bytes: Buffer): void => expect(scanJson(bytes)).toEqual(reference(bytes));

const member = fc.constantFrom('type', 'channel', 'position', 'timestamp', 'data', 't\\u0079pe', 'x', '__proto__', 'typ', 'types');
/** Events as publishers write them, and odder ones: members named twice, escaped names, nested values. */
const eventText = fc
  .array(fc.tuple(member, fc.oneof(fc.jsonValue().map((j) => JSON.stringify(j)), fc.constantFrom('"log_entry"', '""', '"a\\"b"', '"\\u00e9"'))), { maxLength: 6 })
  .map((members) => `{${members.map(([k, v]) => `"${k}":${v}`).join(',')}}`);
const JSON_CHARS = ['{', '}', '[', ']', '"', ',', ':', '\\', 'u', '0', '1', 'e', 'E', '.', '+', '-', 't', 'f', 'n', ' ', '\t', '\n', '\r', '\u0000', '\u007f', 'é', '\ufffd', '\u2028'];
/** A text with one edit: a character deleted, inserted or replaced. */
const mutated = fc
  .tuple(fc.oneof(eventText, fc.json()), fc.nat(), fc.constantFrom('delete', 'insert', 'replace'), fc.constantFrom(...JSON_CHARS))
  .map(([text, at, edit, ch]) => {
    const i = text.length === 0 ? 0 : at % text.length;
    if (edit === 'delete') return text.slice(0, i) + text.slice(i + 1);
    return text.slice(0, i) + ch + text.slice(edit === 'insert' ? i : i + 1);
  });

describe('scanJson', () => {
  it.each([
    '{"type":"log_entry","execution_id":1,"message":"x"}',
    ' {"type" : "a" , "channel":1,"position":null,"timestamp":"t","data":{}} ',
    '{"type":"a","type":2}',
    '{"type":2,"type":"b"}',
    '{"timestamp":"t","timestamp":3}',
    '{"t\\u0079pe":"\\u0061b"}',
    '{"data":[{"type":"inner","channel":1}]}',
    '{}',
    '[]',
    '"type"',
    '-0.5e+10',
    '01',
    '1.',
    '{"a":1,}',
    '{"a" 1}',
    '{"a":"\u0001"}',
    '{"a":"\\x"}',
    '{"a":"\\u12g4"}',
    '\ufeff{"type":"a"}',
    '{"type":"a"} x',
    '',
    'nul',
    '{"a":[1,2,]}',
    `{"type":"deep","a":${'[{"b":'.repeat(40)}1${'}]'.repeat(40)},"data":1}`,
    `${'['.repeat(100)}${']'.repeat(99)}`,
  ])('agrees with JSON.parse on %j', (text) => same(Buffer.from(text)));

  it('agrees with JSON.parse on invalid UTF-8 inside and outside strings', () => {
    same(Buffer.concat([Buffer.from('{"type":"a'), Buffer.from([0xff, 0xc3]), Buffer.from('"}')]));
    same(Buffer.concat([Buffer.from('{"type":"a"'), Buffer.from([0xff]), Buffer.from('}')]));
    same(Buffer.concat([Buffer.from('{"ty'), Buffer.from([0xe2, 0x82]), Buffer.from('pe":"a"}')]));
  });

  it('agrees with JSON.parse on any JSON text and on events with repeated, escaped and nested members', () => {
    fc.assert(
      fc.property(fc.oneof(fc.json(), eventText), (text) => same(Buffer.from(text))),
      { numRuns: 3000 },
    );
  });

  it('agrees with JSON.parse on texts one edit away from valid JSON', () => {
    fc.assert(
      fc.property(mutated, (text) => same(Buffer.from(text))),
      { numRuns: 10000 },
    );
  });

  it('agrees with JSON.parse on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (bytes) => same(Buffer.from(bytes))),
      { numRuns: 3000 },
    );
  });
});
