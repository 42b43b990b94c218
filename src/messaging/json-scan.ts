import type { ObjectFacts } from '../hub/hub-event';

/**
 * A JSON checker over bytes: says whether `JSON.parse(buf.toString('utf8'))` would succeed, and of a top-level object
 * what the hub asks of an event before it needs the object itself (its `type`, whether it has `channel`, `position`,
 * `timestamp` and `data` members), without building strings and objects. The start-up replay checks every event of
 * the stream; parsing each one was a tenth of its CPU and most of its garbage, and the hub needs the parsed object only
 * for the few events that update an execution snapshot or whose frame cannot be spliced from the received bytes.
 *
 * Working on bytes gives the same answer as parsing the decoded text: the decoder replaces each invalid UTF-8
 * sequence with U+FFFD, which is valid inside a string and invalid outside one, exactly as any byte >= 0x80 is here,
 * and it never turns bytes into an ASCII quote, backslash or control character.
 */

/** `invalid`: JSON.parse would throw; `value`: valid JSON that is not an object; else the object's facts. */
export type ScanResult = ObjectFacts | 'invalid' | 'value';

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const OPEN_OBJECT = 0x7b;
const CLOSE_OBJECT = 0x7d;
const OPEN_ARRAY = 0x5b;
const CLOSE_ARRAY = 0x5d;
const COMMA = 0x2c;
const COLON = 0x3a;

/** The member names the facts are about; any other name is skipped. */
const NAMES = ['type', 'channel', 'position', 'timestamp', 'data'].map((n) => Buffer.from(n));
const TYPE = 0;
const CHANNEL = 1;
const POSITION = 2;
const TIMESTAMP = 3;
const DATA = 4;

/** Scan `buf` as JSON text. */
export function scanJson(buf: Buffer): ScanResult {
  const end = buf.length;
  let p = ws(buf, 0, end);
  const topIsObject = buf[p] === OPEN_OBJECT;
  const facts: ObjectFacts = { type: undefined, channel: false, position: false, timestamp: undefined, data: false };
  /** Open containers: `containers[0, depth)`, innermost last. */
  let depth = 0;
  /** The member of the top-level object whose value comes next (one of NAMES), or -1. */
  let member = -1;
  for (;;) {
    // A value starts at p.
    const c = buf[p];
    const valueStart = p;
    if (c === OPEN_OBJECT || c === OPEN_ARRAY) {
      const isObject = c === OPEN_OBJECT;
      p = ws(buf, p + 1, end);
      if (buf[p] === (isObject ? CLOSE_OBJECT : CLOSE_ARRAY)) p++;
      else {
        if (depth === containers.length) growContainers();
        containers[depth++] = isObject ? 1 : 0;
        if (depth === 2 && topIsObject) note(facts, member, 'other', buf, 0, 0);
        if (isObject) {
          const q = string(buf, p, end);
          if (buf[p] !== QUOTE || q < 0) return 'invalid';
          member = depth === 1 && topIsObject ? memberOf(buf, p, q) : -1;
          p = colon(buf, q, end);
          if (p < 0) return 'invalid';
        }
        continue;
      }
    } else if (c === QUOTE) {
      p = string(buf, p, end);
      if (p < 0) return 'invalid';
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      p = number(buf, p, end);
      if (p < 0) return 'invalid';
    } else if (c === 0x74) p = literal(buf, p, end, TRUE);
    else if (c === 0x66) p = literal(buf, p, end, FALSE);
    else if (c === 0x6e) p = literal(buf, p, end, NULL);
    else return 'invalid';
    if (p < 0) return 'invalid';
    if (depth === 1 && topIsObject) note(facts, member, c === QUOTE ? 'string' : 'other', buf, valueStart, p);
    // After a value: the next member or element, or the end of containers.
    for (;;) {
      p = ws(buf, p, end);
      if (depth === 0) {
        if (p !== end) return 'invalid';
        return topIsObject ? facts : 'value';
      }
      const isObject = containers[depth - 1] === 1;
      const d = buf[p];
      if (d === COMMA) {
        p = ws(buf, p + 1, end);
        if (isObject) {
          const q = string(buf, p, end);
          if (buf[p] !== QUOTE || q < 0) return 'invalid';
          member = depth === 1 && topIsObject ? memberOf(buf, p, q) : -1;
          p = colon(buf, q, end);
          if (p < 0) return 'invalid';
        }
        break;
      }
      if (d !== (isObject ? CLOSE_OBJECT : CLOSE_ARRAY)) return 'invalid';
      depth--;
      p++;
    }
  }
}

/**
 * The kinds of the open containers (1: object, 0: array), outermost first; shared by every scan (a scan runs to its
 * end synchronously), so a scan allocates no stack. Grows with the deepest text seen.
 */
let containers = new Uint8Array(32);

function growContainers(): void {
  const grown = new Uint8Array(containers.length * 2);
  grown.set(containers);
  containers = grown;
}

/** The colon after a member's key (ending at q) and the whitespace around it; returns where the value starts, or -1. */
function colon(buf: Buffer, q: number, end: number): number {
  const r = ws(buf, q, end);
  return buf[r] === COLON ? ws(buf, r + 1, end) : -1;
}

/** Which of NAMES the string `buf[start, end)` (quotes included) is, or -1. */
function memberOf(buf: Buffer, start: number, end: number): number {
  if (hasBackslash(buf, start, end)) {
    const name = JSON.parse(buf.toString('utf8', start, end)) as string;
    return NAMES.findIndex((n) => n.toString() === name);
  }
  const length = end - start - 2;
  for (let i = 0; i < NAMES.length; i++) {
    const n = NAMES[i];
    if (n.length !== length) continue;
    let j = 0;
    while (j < length && buf[start + 1 + j] === n[j]) j++;
    if (j === length) return i;
  }
  return -1;
}

/** Record the value of a top-level member (`kind`; a string value is `buf[start, end)` with its quotes). */
function note(facts: ObjectFacts, member: number, kind: 'string' | 'other', buf: Buffer, start: number, end: number): void {
  switch (member) {
    case TYPE:
      facts.type = kind === 'string' ? stringValue(buf, start, end) : undefined;
      break;
    case CHANNEL:
      facts.channel = true;
      break;
    case POSITION:
      facts.position = true;
      break;
    case TIMESTAMP:
      facts.timestamp = kind;
      break;
    case DATA:
      facts.data = true;
      break;
    default:
  }
}

function stringValue(buf: Buffer, start: number, end: number): string {
  return hasBackslash(buf, start, end) ? (JSON.parse(buf.toString('utf8', start, end)) as string) : buf.toString('utf8', start + 1, end - 1);
}

function hasBackslash(buf: Buffer, start: number, end: number): boolean {
  for (let i = start; i < end; i++) if (buf[i] === BACKSLASH) return true;
  return false;
}

function ws(buf: Buffer, p: number, end: number): number {
  while (p < end) {
    const c = buf[p];
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break;
    p++;
  }
  return p;
}

/** The string at p (its opening quote); returns the position after its closing quote, or -1. */
function string(buf: Buffer, p: number, end: number): number {
  for (let i = p + 1; i < end; ) {
    const c = buf[i];
    if (c === QUOTE) return i + 1;
    if (c < 0x20) return -1;
    if (c !== BACKSLASH) {
      i++;
      continue;
    }
    const e = buf[i + 1];
    if (e === 0x75) {
      // \uXXXX: four hex digits (a lone surrogate is accepted, as JSON.parse does)
      for (let k = i + 2; k < i + 6; k++) if (!isHex(buf[k])) return -1;
      i += 6;
    } else if (e === QUOTE || e === BACKSLASH || e === 0x2f || e === 0x62 || e === 0x66 || e === 0x6e || e === 0x72 || e === 0x74) i += 2;
    else return -1;
  }
  return -1;
}

function isHex(c: number | undefined): boolean {
  return c !== undefined && ((c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66));
}

function isDigit(c: number | undefined): boolean {
  return c !== undefined && c >= 0x30 && c <= 0x39;
}

/** `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` at p; returns the position after it, or -1. */
function number(buf: Buffer, p: number, end: number): number {
  if (buf[p] === 0x2d) p++;
  if (buf[p] === 0x30) p++;
  else if (isDigit(buf[p])) while (p < end && isDigit(buf[p])) p++;
  else return -1;
  if (buf[p] === 0x2e) {
    p++;
    if (!isDigit(buf[p])) return -1;
    while (p < end && isDigit(buf[p])) p++;
  }
  if (buf[p] === 0x65 || buf[p] === 0x45) {
    p++;
    if (buf[p] === 0x2b || buf[p] === 0x2d) p++;
    if (!isDigit(buf[p])) return -1;
    while (p < end && isDigit(buf[p])) p++;
  }
  return p;
}

const TRUE = Buffer.from('true');
const FALSE = Buffer.from('false');
const NULL = Buffer.from('null');

function literal(buf: Buffer, p: number, end: number, word: Buffer): number {
  if (p + word.length > end) return -1;
  for (let i = 0; i < word.length; i++) if (buf[p + i] !== word[i]) return -1;
  return p + word.length;
}
