/**
 * Digests of the event stream (ADR 0003, "Digests"). RabbitMQ's cost of reading a stream is per chunk, and the
 * broker writes a chunk per few records when publishers await each confirm, as Django's do: replaying such a stream
 * ran at ~10,000 events/s on the test machine, whatever the reader. So the instances copy the records they read, in
 * offset order and byte for byte, into a second stream, `<exchange>.replay`, a few thousand per message; a starting
 * instance reads those big messages first and only the newest records from the event stream itself.
 *
 * A digest's body: magic `ADG1`, the offset of its first record (u64), the record count (u32), then each record as
 * a u32 length and the record's bytes as the event stream stored them (length 0: no event at that offset, a record that
 * could not be read or an offset RabbitMQ gives no record, such as the tracking chunk at the start of a segment file).
 * Record i has offset `first + i`: a digest covers a contiguous range of the event stream.
 */

const MAGIC = 0x41444731; // 'ADG1'
const HEADER_BYTES = 16;
/** A digest is written once it holds this many bytes (RabbitMQ's default stream frame size is 1 MiB). */
export const MAX_DIGEST_BYTES = 1 << 20;

export interface Digest {
  firstOffset: number;
  buf: Buffer;
  /**
   * Each record as [start, end) into `buf`; undefined for an offset without an event (see above). Valid until the
   * next `decodeDigest`, which reuses the array and its pairs: copy what must be kept.
   */
  records: Array<[number, number] | undefined>;
}

/**
 * The array and the [start, end) pairs `decodeDigest` fills, reused from one digest to the next: a replay reads a
 * digest to its end before it decodes the next, and a fresh pair per record lived through a collection or two (a
 * digest is processed over several) and was then promoted, a million of them per million events.
 */
const records: Array<[number, number] | undefined> = [];
const pairs: Array<[number, number] | undefined> = [];

/** Read a digest's body; undefined when it is not one (bad magic, truncated, lengths past its end). */
export function decodeDigest(body: Buffer): Digest | undefined {
  if (body.length < HEADER_BYTES || body.readUInt32BE(0) !== MAGIC) return undefined;
  const firstOffset = Number(body.readBigUInt64BE(4));
  const count = body.readUInt32BE(12);
  // Each record takes at least its 4-byte length: a count beyond that is a lie (checked before the array grows).
  if (HEADER_BYTES + 4 * count > body.length) return undefined;
  records.length = count;
  let p = HEADER_BYTES;
  for (let i = 0; i < count; i++) {
    if (p + 4 > body.length) return undefined;
    const n = body.readUInt32BE(p);
    p += 4;
    if (p + n > body.length) return undefined;
    if (n === 0) records[i] = undefined;
    else {
      const pair = (pairs[i] ??= [0, 0]);
      pair[0] = p;
      pair[1] = p + n;
      records[i] = pair;
    }
    p += n;
  }
  return p === body.length ? { firstOffset, buf: body, records } : undefined;
}

/** The offset range a digest body covers, read from its header only; undefined when it is not a digest. */
export function digestRange(body: Buffer): { first: number; last: number } | undefined {
  if (body.length < HEADER_BYTES || body.readUInt32BE(0) !== MAGIC) return undefined;
  const first = Number(body.readBigUInt64BE(4));
  return { first, last: first + body.readUInt32BE(12) - 1 };
}

/**
 * Gathers records of the event stream, contiguous in offset, into digest bodies. Records already covered by a digest
 * someone wrote (`covered`) are dropped when the digest is taken, so instances that read the same stream mostly write
 * each range once.
 */
export class DigestBuilder {
  private buf = Buffer.allocUnsafe(64 * 1024);
  private used = HEADER_BYTES;
  private first = -1;
  private count = 0;
  /** Start of each record's length field, for dropping covered records from the front. */
  private starts: number[] = [];

  /** Records held. */
  get size(): number {
    return this.count;
  }

  get bytes(): number {
    return this.used;
  }

  /** The offset the next record must have (contiguity); -1 when empty. */
  get nextOffset(): number {
    return this.count === 0 ? -1 : this.first + this.count;
  }

  /** Add the record at `offset` (`src[start, end)`, or nothing for an unreadable one). */
  add(offset: number, src: Buffer, range: [number, number] | undefined): void {
    if (this.count === 0) this.first = offset;
    const n = range === undefined ? 0 : range[1] - range[0];
    this.reserve(4 + n);
    this.starts.push(this.used);
    this.buf.writeUInt32BE(n, this.used);
    if (range !== undefined) src.copy(this.buf, this.used + 4, range[0], range[1]);
    this.used += 4 + n;
    this.count++;
  }

  /**
   * The digest body of the records after offset `covered`, and empty the builder; undefined when none is left.
   * The body is a fresh buffer (it goes to the broker while the builder fills again).
   */
  take(covered: number): Buffer | undefined {
    const skip = Math.max(0, Math.min(this.count, covered - this.first + 1));
    const count = this.count - skip;
    const from = skip === this.count ? this.used : this.starts[skip];
    const body = count === 0 ? undefined : Buffer.allocUnsafe(HEADER_BYTES + this.used - from);
    if (body !== undefined) {
      body.writeUInt32BE(MAGIC, 0);
      body.writeBigUInt64BE(BigInt(this.first + skip), 4);
      body.writeUInt32BE(count, 12);
      this.buf.copy(body, HEADER_BYTES, from, this.used);
    }
    this.clear();
    return body;
  }

  clear(): void {
    this.used = HEADER_BYTES;
    this.count = 0;
    this.first = -1;
    this.starts = [];
    if (this.buf.length > 4 * MAX_DIGEST_BYTES) this.buf = Buffer.allocUnsafe(64 * 1024);
  }

  private reserve(n: number): void {
    if (this.used + n <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.used + n));
    this.buf.copy(grown, 0, 0, this.used);
    this.buf = grown;
  }
}
