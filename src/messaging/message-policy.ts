import { isChannel, type ObjectFacts } from '../hub/hub-event';
import { scanJson } from './json-scan';

/** Why a broker message was refused: the `x-ansflow-dead-letter-reason` header and the metric label. */
export type DeadLetterReason = 'invalid_json' | 'not_an_object' | 'missing_type' | 'unknown_channel' | 'too_large';

export type Classified =
  { ok: true; channel: string; body: Record<string, unknown> & { type: string } } | { ok: false; reason: DeadLetterReason; detail: string };

/**
 * The one policy for broker input. Malformed messages are final: they are dead-lettered, never requeued (a
 * requeued poison message loops forever). There is no transient failure on this path: the hub's publish is
 * synchronous and cannot fail for one message but not another.
 */
export function classify(routingKey: string, content: Buffer, maxBytes: number): Classified {
  if (content.length > maxBytes) return { ok: false, reason: 'too_large', detail: `${content.length} bytes > ${maxBytes}` };
  if (!isChannel(routingKey)) return { ok: false, reason: 'unknown_channel', detail: `routing key "${routingKey.slice(0, 100)}" names no channel` };
  let body: unknown;
  try {
    body = JSON.parse(content.toString('utf8'));
  } catch (err) {
    return { ok: false, reason: 'invalid_json', detail: err instanceof Error ? err.message : 'unparseable' };
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return { ok: false, reason: 'not_an_object', detail: 'body is not a JSON object' };
  const type = (body as { type?: unknown }).type;
  if (typeof type !== 'string' || type.length === 0) return { ok: false, reason: 'missing_type', detail: 'no string "type"' };
  return { ok: true, channel: routingKey, body: body as Record<string, unknown> & { type: string } };
}

/**
 * `classify` for the stream reader, which reads every message of the stream, at start-up a million of them: the same
 * checks in the same order, giving the same verdict and reason, but the body is only checked, not parsed (see
 * json-scan.ts); the hub parses it when it needs the object. No detail: the reader skips invalid messages silently.
 */
export function classifyReceived(
  routingKey: string,
  content: Buffer,
  maxBytes: number,
): { ok: true; channel: string; facts: ObjectFacts } | { ok: false; reason: DeadLetterReason } {
  if (content.length > maxBytes) return { ok: false, reason: 'too_large' };
  if (!isChannel(routingKey)) return { ok: false, reason: 'unknown_channel' };
  const facts = scanJson(content);
  if (facts === 'invalid') return { ok: false, reason: 'invalid_json' };
  if (facts === 'value') return { ok: false, reason: 'not_an_object' };
  if (facts.type === undefined || facts.type.length === 0) return { ok: false, reason: 'missing_type' };
  return { ok: true, channel: routingKey, facts };
}

/**
 * When the publisher says it published the message (epoch ms), from its `x-published-at-ms` header value or the AMQP
 * timestamp (seconds). Takes the header's value, not the headers: the stream reader has it decoded already and calls
 * this for every record.
 */
export function publishedAtMs(h: unknown, timestamp: unknown): number | undefined {
  if (typeof h === 'number' && isDateMs(h)) return h;
  if (typeof h === 'string' && /^\d+(\.\d+)?$/.test(h) && isDateMs(Number(h))) return Number(h);
  if (typeof timestamp === 'number' && isDateMs(timestamp * 1000)) return timestamp * 1000;
  return undefined;
}

/**
 * Within what a JavaScript Date can hold (±8.64e15 ms). The hub builds an ISO timestamp from this value: an
 * out-of-range header (1e20) made `toISOString()` throw and the event was dropped without being dead-lettered.
 */
function isDateMs(ms: number): boolean {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15;
}

export const DEAD_LETTER_REASON_HEADER = 'x-ansflow-dead-letter-reason';

/** Names derived from the exchange, so several deployments (and test runs) can share one broker. */
export function brokerNames(exchange: string): { stream: string; replay: string; validate: string; dlx: string; dlq: string } {
  return {
    stream: `${exchange}.stream`,
    replay: `${exchange}.replay`,
    validate: `${exchange}.validate`,
    dlx: `${exchange}.dlx`,
    dlq: `${exchange}.dead-letter`,
  };
}
