import fc from 'fast-check';
import { classify, classifyReceived, publishedAtMs } from './message-policy';

describe('broker message policy', () => {
  const ok = Buffer.from('{"type":"log_entry","message":"x"}');
  it.each([
    ['execution.abc', ok, 'unknown_channel'],
    ['foo', ok, 'unknown_channel'],
    ['execution.0', ok, 'unknown_channel'],
    ['execution.1', Buffer.from('{nope'), 'invalid_json'],
    ['execution.1', Buffer.from('[1]'), 'not_an_object'],
    ['execution.1', Buffer.from('"s"'), 'not_an_object'],
    ['execution.1', Buffer.from('{"a":1}'), 'missing_type'],
    ['execution.1', Buffer.from('{"type":7}'), 'missing_type'],
    ['execution.1', Buffer.alloc(2000, 32), 'too_large'],
  ])('classifies %s %s as %s', (key, body, reason) => {
    expect(classify(key, body, 1024)).toMatchObject({ ok: false, reason });
    expect(classifyReceived(key, body, 1024)).toEqual({ ok: false, reason });
  });

  it('gives the stream reader the same verdict and reason as classify, for any body', () => {
    const body = fc.oneof(
      fc.json(),
      fc.jsonValue().map((v) => JSON.stringify({ type: v, message: 'm' })),
      fc.string({ unit: fc.constantFrom('{', '}', '"', ':', ',', 't', 'y', 'p', 'e', '1', ' ', '[', ']') }),
    );
    fc.assert(
      fc.property(fc.constantFrom('execution.1', 'monitor', 'nope'), body, (key, text) => {
        const expected = classify(key, Buffer.from(text), 200);
        const got = classifyReceived(key, Buffer.from(text), 200);
        expect(got.ok).toBe(expected.ok);
        if (!expected.ok && !got.ok) expect(got.reason).toBe(expected.reason);
        if (expected.ok && got.ok) expect(got.facts.type).toBe(expected.body.type);
      }),
      { numRuns: 3000 },
    );
  });

  it('accepts a JSON object with a string type on a channel routing key', () => {
    for (const key of ['execution.1', 'pipeline.2', 'project.3', 'user.4', 'monitor', 'system']) {
      expect(classify(key, ok, 1024)).toMatchObject({ ok: true, channel: key, body: { type: 'log_entry' } });
    }
  });

  it('takes the publication time from the header, else the AMQP timestamp', () => {
    expect(publishedAtMs(1700000000123, 5)).toBe(1700000000123);
    expect(publishedAtMs(undefined, 1700000000)).toBe(1700000000000);
    expect(publishedAtMs(undefined, undefined)).toBeUndefined();
  });
});
