import { Socket, connect as tcpConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';

/**
 * A minimal client of RabbitMQ's stream protocol (port 5552), for one thing: reading one stream from an offset, a
 * chunk at a time. Written here instead of using `rabbitmq-stream-js-client` because that client does not work with
 * the RabbitMQ we run (3.10): it always sends the "exchange command versions" request, which 3.10 answers by closing
 * the connection, and its AMQP 1.0 decoder throws on a `long` header (every message our publishers send has one).
 * See ADR 0003. Commands used: peer properties, SASL PLAIN, tune, open, subscribe, credit, heartbeat, close.
 */

/** Where to start reading. */
export type OffsetSpec = { type: 'first' } | { type: 'last' } | { type: 'next' } | { type: 'offset'; offset: number } | { type: 'timestamp'; ms: number };

export interface StreamAddress {
  host: string;
  port: number;
  user: string;
  password: string;
  vhost: string;
  tls: boolean;
}

export interface Chunk {
  /** The offset of the chunk's first record; record i has offset `firstOffset + i`. */
  firstOffset: number;
  /** Records in the chunk (a sub-entry batch counts each of its records). */
  numRecords: number;
  /**
   * Each record's bytes, as [start, end) into `buf`, in offset order; undefined entries could not be read. `buf` is
   * valid only while `onChunk` runs: a chunk that came in several reads is joined into a buffer used again for the
   * next one. Copy what must be kept.
   */
  buf: Buffer;
  records: Array<[number, number] | undefined>;
  /** The leader epoch that wrote the chunk (it only grows along a stream's log). */
  epoch: number;
}

const KEY = {
  Subscribe: 0x0007,
  Deliver: 0x0008,
  Credit: 0x0009,
  MetadataUpdate: 0x0010,
  PeerProperties: 0x0011,
  SaslHandshake: 0x0012,
  SaslAuthenticate: 0x0013,
  Tune: 0x0014,
  Open: 0x0015,
  Close: 0x0016,
  Heartbeat: 0x0017,
} as const;
const RESPONSE = 0x8000;
const OK = 0x01;
const OFFSET_TYPE = { first: 1, last: 2, next: 3, offset: 4, timestamp: 5 } as const;
const SUBSCRIPTION_ID = 0;

export class StreamProtocolError extends Error {}

/** One TCP connection speaking the stream protocol, with at most one subscription. */
export class StreamConnection {
  private readonly socket: Socket;
  /** Pieces of a frame not yet whole, their bytes, and the bytes that make it whole. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private pendingNeed = 0;
  /** Where frames that came in several reads are joined, used again for the next (see `Chunk.buf`). */
  private assembly = Buffer.alloc(0);
  private nextCorrelation = 1;
  private readonly waiting = new Map<number, { resolve: (r: Buffer) => void; reject: (e: Error) => void }>();
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private lastReceivedMs = Date.now();
  private closed = false;
  private closeListeners: Array<(err: Error | undefined) => void> = [];
  private onChunk: ((chunk: Chunk) => void) | undefined;
  /** Chunks handled since the last credit was sent, and how many to gather before sending it. */
  private handled = 0;
  private creditBatch = 1;
  /** While paused, handled chunks are not credited back: the broker stops once the credit it holds is spent. */
  private paused = false;
  private tuned: (() => void) | undefined;

  private constructor(
    readonly address: StreamAddress,
    private readonly heartbeatSeconds: number,
  ) {
    const options = { host: address.host, port: address.port, noDelay: true };
    this.socket = address.tls ? tlsConnect({ ...options, servername: address.host }) : tcpConnect(options);
    this.socket.on('data', (data: Buffer) => this.received(data));
    this.socket.on('error', (err) => this.shutdown(err));
    this.socket.on('close', () => this.shutdown(new StreamProtocolError('connection closed')));
  }

  /** Connect, authenticate (PLAIN) and open the virtual host; rejects within `timeoutMs`. */
  static async open(address: StreamAddress, opts: { heartbeatSeconds: number; timeoutMs: number; name: string }): Promise<StreamConnection> {
    const c = new StreamConnection(address, opts.heartbeatSeconds);
    const timer = setTimeout(() => c.shutdown(new StreamProtocolError(`no answer within ${opts.timeoutMs} ms`)), opts.timeoutMs);
    try {
      await new Promise<void>((resolve, reject) => {
        c.socket.once(address.tls ? 'secureConnect' : 'connect', () => resolve());
        c.onClose(reject);
      });
      await c.request(KEY.PeerProperties, (w) => w.map({ product: 'ansflow-realtime', connection_name: opts.name }));
      await c.request(KEY.SaslHandshake, () => undefined);
      const tuned = new Promise<void>((resolve) => (c.tuned = resolve));
      await c.request(KEY.SaslAuthenticate, (w) => w.string('PLAIN').bytes(Buffer.from(`\0${address.user}\0${address.password}`)));
      await tuned;
      await c.request(KEY.Open, (w) => w.string(address.vhost));
      c.startHeartbeat();
      return c;
    } catch (err) {
      c.close();
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Stop granting credit: the broker sends what the credit it already holds allows (at most `initialCredit` chunks),
   * then waits. For a reader whose consumer cannot keep up (the digests it writes, see BrokerConsumerService).
   */
  pause(): void {
    this.paused = true;
  }

  /** Grant the credit of the chunks handled meanwhile: delivery goes on. */
  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    if (this.handled > 0 && !this.closed) {
      this.credit(this.handled);
      this.handled = 0;
    }
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  onClose(listener: (err: Error | undefined) => void): void {
    if (this.closed) listener(undefined);
    else this.closeListeners.push(listener);
  }

  /**
   * Subscribe to `stream`; `onChunk` runs synchronously for each delivered chunk. Chunks are credited back once
   * `onChunk` returns, `initialCredit / 2` at a time.
   */
  async subscribe(stream: string, offset: OffsetSpec, initialCredit: number, onChunk: (chunk: Chunk) => void): Promise<void> {
    this.onChunk = onChunk;
    this.creditBatch = Math.max(1, Math.floor(initialCredit / 2));
    await this.request(KEY.Subscribe, (w) => {
      w.u8(SUBSCRIPTION_ID).string(stream).u16(OFFSET_TYPE[offset.type]);
      if (offset.type === 'offset') w.u64(offset.offset);
      else if (offset.type === 'timestamp') w.u64(offset.ms);
      w.u16(initialCredit).u32(0); // no subscription properties
    });
  }

  private credit(chunks: number): void {
    this.send(new Writer().u16(KEY.Credit).u16(1).u8(SUBSCRIPTION_ID).u16(chunks));
  }

  close(): void {
    if (this.closed) return;
    this.socket.destroy();
    this.shutdown(undefined);
  }

  private startHeartbeat(): void {
    if (this.heartbeatSeconds <= 0) return;
    const ms = this.heartbeatSeconds * 1000;
    this.heartbeatTimer = setInterval(() => {
      // Two missed heartbeats: the peer is gone (half-open TCP would otherwise wait for the kernel's timeout).
      if (Date.now() - this.lastReceivedMs > 2 * ms) {
        this.socket.destroy();
        this.shutdown(new StreamProtocolError('heartbeat timeout'));
        return;
      }
      this.send(new Writer().u16(KEY.Heartbeat).u16(1));
    }, ms);
    this.heartbeatTimer.unref();
  }

  private request(key: number, body: (w: Writer) => void): Promise<Buffer> {
    const correlation = this.nextCorrelation++;
    const w = new Writer().u16(key).u16(1).u32(correlation);
    body(w);
    return new Promise<Buffer>((resolve, reject) => {
      if (this.closed) {
        reject(new StreamProtocolError('connection closed'));
        return;
      }
      this.waiting.set(correlation, { resolve, reject });
      this.send(w);
    });
  }

  private send(w: Writer): void {
    if (this.closed) return;
    this.socket.write(w.frame());
  }

  private received(data: Buffer): void {
    this.lastReceivedMs = Date.now();
    // A frame larger than one read (a chunk of many records) arrives in pieces: keep them until it is whole, then
    // join them once (joining at every read copied the same bytes again and again).
    if (this.pending.length > 0) {
      this.pending.push(data);
      this.pendingBytes += data.length;
      if (this.pendingBytes < this.pendingNeed) return;
      const need = this.pendingNeed;
      const joined = need === 4 ? Buffer.concat(this.pending, this.pendingBytes) : this.join(need);
      const rest = this.pendingBytes - need;
      this.pending = [];
      this.pendingBytes = 0;
      if (need === 4) data = joined; // only the size was cut: start again from the joined bytes (rare)
      else {
        // The frame is whole: handle it, then go on with the rest of this read, which nobody has copied.
        if (!this.handleFrame(joined, 0, need)) return;
        data = data.subarray(data.length - rest);
      }
    }
    let p = 0;
    while (data.length - p >= 4) {
      const size = data.readUInt32BE(p);
      if (data.length - p - 4 < size) break;
      if (!this.handleFrame(data, p, p + 4 + size)) return;
      p += 4 + size;
    }
    this.creditHandled();
    if (p < data.length) {
      const rest = data.subarray(p);
      // Keep only the unread tail (a copy when small, so a large delivered buffer is not retained for a few bytes).
      this.pending.push(rest.length < 4096 ? Buffer.from(rest) : rest);
      this.pendingBytes = rest.length;
      this.pendingNeed = rest.length >= 4 ? 4 + rest.readUInt32BE(0) : 4;
    }
  }

  /**
   * The first `n` bytes of the pending pieces, in `assembly`. A fresh buffer per frame cost more than the copy: a
   * replay of digests (1 MiB frames) spent 6 % of its CPU in it, page-faulting new memory.
   */
  private join(n: number): Buffer {
    if (this.assembly.length < n) this.assembly = Buffer.allocUnsafe(Math.max(n, 2 * this.assembly.length));
    let p = 0;
    for (const piece of this.pending) {
      if (p >= n) break;
      p += piece.copy(this.assembly, p, 0, Math.min(piece.length, n - p));
    }
    return this.assembly.subarray(0, n);
  }

  /** Handle the frame at `buf[start, end)` (size included); false when it was bad and the connection is closed. */
  private handleFrame(buf: Buffer, start: number, end: number): boolean {
    try {
      this.frame(buf, start + 4, end);
      return true;
    } catch (err) {
      this.socket.destroy();
      this.shutdown(err instanceof Error ? err : new StreamProtocolError(String(err)));
      return false;
    }
  }

  /**
   * Give back the credit of handled chunks, in one Credit command once half the initial credit is used: the broker
   * always has chunks to send, and the reader writes once per `initialCredit / 2` chunks instead of once per chunk
   * (a write per chunk of ~20 records was a fifth of a replay's CPU).
   */
  private creditHandled(): void {
    if (!this.paused && this.handled > 0 && this.handled >= this.creditBatch) {
      this.credit(this.handled);
      this.handled = 0;
    }
  }

  private frame(buf: Buffer, start: number, end: number): void {
    const key = buf.readUInt16BE(start);
    let p = start + 4; // key, version
    if (key === KEY.Deliver) {
      p++; // subscription id (there is one)
      this.deliver(buf, p, end);
      return;
    }
    if (key === KEY.Heartbeat) return;
    if (key === KEY.Tune) {
      const frameMax = buf.readUInt32BE(p);
      // Answer with the server's frame size and our heartbeat.
      this.send(new Writer().u16(KEY.Tune).u16(1).u32(frameMax).u32(this.heartbeatSeconds));
      this.tuned?.();
      return;
    }
    if (key === KEY.Close) {
      const correlation = buf.readUInt32BE(p);
      const code = buf.readUInt16BE(p + 4);
      const reason = readString(buf, p + 6);
      this.send(new Writer().u16(KEY.Close | RESPONSE).u16(1).u32(correlation).u16(OK));
      this.socket.end();
      this.shutdown(new StreamProtocolError(`closed by the broker: ${code} ${reason}`));
      return;
    }
    if (key === KEY.MetadataUpdate) {
      // The stream was deleted or its leader moved: this subscription ends; the reader reconnects.
      this.socket.destroy();
      this.shutdown(new StreamProtocolError(`stream metadata update (code ${buf.readUInt16BE(p)})`));
      return;
    }
    if (key === (KEY.Credit | RESPONSE)) {
      this.socket.destroy();
      this.shutdown(new StreamProtocolError(`credit refused (code ${buf.readUInt16BE(p)})`));
      return;
    }
    if ((key & RESPONSE) !== 0) {
      const correlation = buf.readUInt32BE(p);
      const code = buf.readUInt16BE(p + 4);
      const w = this.waiting.get(correlation);
      if (w === undefined) return;
      this.waiting.delete(correlation);
      if (code === OK) w.resolve(buf.subarray(p + 6, end));
      else w.reject(new StreamProtocolError(`command 0x${(key & 0x7fff).toString(16)} failed with response code ${code}`));
    }
    // Anything else (e.g. publisher confirms) is not for a reader: ignored.
  }

  /** An Osiris chunk: header, then entries (simple records, or uncompressed sub-entry batches). */
  private deliver(buf: Buffer, p: number, end: number): void {
    const chunkType = buf.readInt8(p + 1);
    const numEntries = buf.readUInt16BE(p + 2);
    const numRecords = buf.readUInt32BE(p + 4);
    const epoch = Number(buf.readBigUInt64BE(p + 16));
    const firstOffset = Number(buf.readBigUInt64BE(p + 24));
    p += 48; // magic(1) type(1) entries(2) records(4) timestamp(8) epoch(8) first offset(8) crc(4) data(4) trailer(4) reserved(4)
    const records: Array<[number, number] | undefined> = [];
    if (chunkType === 0) {
      for (let e = 0; e < numEntries && p < end; e++) {
        const head = buf.readUInt32BE(p);
        if ((head & 0x80000000) === 0) {
          records.push([p + 4, p + 4 + head]);
          p += 4 + head;
        } else {
          // Sub-entry batch: type/compression byte, records (u16), uncompressed length (u32), length (u32), data.
          const compression = (buf[p] & 0x70) >> 4;
          const n = buf.readUInt16BE(p + 1);
          const length = buf.readUInt32BE(p + 7);
          let q = p + 11;
          const batchEnd = q + length;
          for (let i = 0; i < n; i++) {
            if (compression !== 0) records.push(undefined);
            else {
              const size = buf.readUInt32BE(q);
              records.push([q + 4, q + 4 + size]);
              q += 4 + size;
            }
          }
          p = batchEnd;
        }
      }
    }
    this.onChunk?.({ firstOffset, numRecords: chunkType === 0 ? numRecords : 0, buf, records, epoch });
    this.handled++;
  }

  private shutdown(err: Error | undefined): void {
    if (this.closed) return;
    this.closed = true;
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    for (const w of this.waiting.values()) w.reject(err ?? new StreamProtocolError('connection closed'));
    this.waiting.clear();
    const listeners = this.closeListeners;
    this.closeListeners = [];
    for (const l of listeners) l(err);
  }
}

function readString(buf: Buffer, p: number): string {
  const n = buf.readInt16BE(p);
  return n < 0 ? '' : buf.toString('utf8', p + 2, p + 2 + n);
}

/** Builds one frame (the 4-byte size is added by `frame()`). */
class Writer {
  private readonly parts: Buffer[] = [];

  u8(v: number): this {
    const b = Buffer.allocUnsafe(1);
    b.writeUInt8(v);
    this.parts.push(b);
    return this;
  }

  u16(v: number): this {
    const b = Buffer.allocUnsafe(2);
    b.writeUInt16BE(v);
    this.parts.push(b);
    return this;
  }

  u32(v: number): this {
    const b = Buffer.allocUnsafe(4);
    b.writeUInt32BE(v);
    this.parts.push(b);
    return this;
  }

  u64(v: number): this {
    const b = Buffer.allocUnsafe(8);
    b.writeBigUInt64BE(BigInt(v));
    this.parts.push(b);
    return this;
  }

  string(s: string): this {
    const body = Buffer.from(s, 'utf8');
    return this.u16(body.length).raw(body);
  }

  bytes(b: Buffer): this {
    return this.u32(b.length).raw(b);
  }

  map(m: Record<string, string>): this {
    const entries = Object.entries(m);
    this.u32(entries.length);
    for (const [k, v] of entries) this.string(k).string(v);
    return this;
  }

  frame(): Buffer {
    const body = Buffer.concat(this.parts);
    const size = Buffer.allocUnsafe(4);
    size.writeUInt32BE(body.length);
    return Buffer.concat([size, body]);
  }

  private raw(b: Buffer): this {
    this.parts.push(b);
    return this;
  }
}
