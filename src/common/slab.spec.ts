import { Slab } from './slab';

describe('Slab', () => {
  it('carves aligned, non-overlapping Buffers out of one slab until it is full, then starts another', () => {
    const s = new Slab(64, 16);
    const a = s.alloc(5);
    const b = s.alloc(16);
    expect(a.buffer).toBe(b.buffer);
    expect(b.byteOffset - a.byteOffset).toBe(8);
    a.fill(1);
    b.fill(2);
    expect([...a]).toEqual([1, 1, 1, 1, 1]);
    const c = s.alloc(16); // 8 + 16 + 16 = 40 bytes used
    const d = s.alloc(16); // 56 > 64? no: 40 + 16 = 56 fits
    expect(d.buffer).toBe(a.buffer);
    const e = s.alloc(16); // 56 + 16 > 64: a new slab
    expect(e.buffer).not.toBe(a.buffer);
    expect(c.length + d.length + e.length).toBe(48);
  });

  it('gives a Buffer larger than maxPart memory of its own', () => {
    const s = new Slab(64, 16);
    const small = s.alloc(8);
    const big = s.alloc(17);
    expect(big.buffer).not.toBe(small.buffer);
    expect(big.length).toBe(17);
  });

  it('tells where the last Buffer lies: its memory and offset there', () => {
    const s = new Slab(64, 16);
    for (const size of [5, 16, 16, 16, 16, 17, 3]) {
      const b = s.alloc(size);
      expect(s.lastStore).toBe(b.buffer);
      expect(s.lastOffset).toBe(b.byteOffset);
    }
  });
});
