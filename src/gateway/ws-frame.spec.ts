import type { Writable } from 'node:stream';
import * as ws from 'ws';
import { textFrame } from './ws-frame';

// `ws` exports its frame parser at run time; @types/ws does not declare it.
const { Receiver } = ws as unknown as { Receiver: new (options: { isServer: boolean; maxPayload: number }) => Writable };

/** Decodes one frame with `ws`'s own client-side parser: what a browser would read. */
function decode(frame: Buffer): Promise<{ data: Buffer; isBinary: boolean }> {
  return new Promise((resolve, reject) => {
    const receiver = new Receiver({ isServer: false, maxPayload: 0 });
    receiver.on('message', (data: Buffer, isBinary: boolean) => resolve({ data, isBinary }));
    receiver.on('error', reject);
    receiver.write(frame);
  });
}

describe('textFrame', () => {
  // The three length encodings and their edges: 7 bits, 16 bits, 64 bits.
  it.each([0, 1, 125, 126, 65_535, 65_536, 200_000])('frames a %d-byte payload as one unmasked text frame', async (size) => {
    const payload = Buffer.from('x'.repeat(size));
    const { data, isBinary } = await decode(textFrame(payload));
    expect(isBinary).toBe(false);
    expect(data.equals(payload)).toBe(true);
  });

  it('gives every subscriber of one payload the same bytes, and a new payload its own frame', async () => {
    const a = Buffer.from('{"type":"log_entry","n":1}');
    const b = Buffer.from('{"type":"log_entry","n":1}');
    const first = textFrame(a);
    expect(textFrame(a)).toBe(first);
    const other = textFrame(b);
    expect(other).not.toBe(first);
    expect((await decode(other)).data.toString()).toBe('{"type":"log_entry","n":1}');
  });

  it('keeps every frame intact across slab boundaries (frames of 300 bytes, several slabs)', async () => {
    const frames: [Buffer, Buffer][] = [];
    for (let i = 0; i < 1000; i++) {
      const payload = Buffer.from(JSON.stringify({ type: 'log_entry', seq: i, message: 'y'.repeat(250) }));
      frames.push([payload, textFrame(payload)]);
    }
    for (const [payload, frame] of frames) expect((await decode(frame)).data.equals(payload)).toBe(true);
  });
});
