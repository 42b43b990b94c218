/**
 * Small Buffers carved out of 64 KiB slabs, for Buffers made by the hundred thousand (frames). Node's own pool is
 * 8 KiB: a new pool ArrayBuffer every ~25 frames, each counted as external memory that can start a collection, and
 * shared with whatever else the process allocates, which then stays pinned with the frames. A slab is freed once
 * none of its Buffers is referenced. Buffers larger than `maxPart` get memory of their own.
 */
export class Slab {
  private slab: Buffer;
  private slabStore: ArrayBuffer;
  private used = 0;
  /**
   * The memory the last Buffer `alloc` returned lies in, and its offset there: what a holder of many of them keeps
   * instead of the Buffer, without reading `buffer` and `byteOffset` (~100 ns a read on a Node Buffer).
   */
  lastStore: ArrayBuffer;
  lastOffset = 0;

  constructor(
    private readonly slabBytes = 64 * 1024,
    private readonly maxPart = slabBytes / 16,
  ) {
    this.slab = Buffer.allocUnsafeSlow(slabBytes);
    this.slabStore = this.slab.buffer;
    this.lastStore = this.slabStore;
  }

  /** `size` bytes, uninitialized. */
  alloc(size: number): Buffer {
    if (size > this.maxPart) {
      const own = Buffer.allocUnsafeSlow(size);
      this.lastStore = own.buffer;
      this.lastOffset = own.byteOffset;
      return own;
    }
    if (this.used + size > this.slabBytes) {
      this.slab = Buffer.allocUnsafeSlow(this.slabBytes);
      this.slabStore = this.slab.buffer;
      this.used = 0;
    }
    const b = this.slab.subarray(this.used, this.used + size);
    this.lastStore = this.slabStore;
    this.lastOffset = this.slab.byteOffset + this.used;
    this.used += (size + 7) & ~7; // 8-byte aligned, like Node's pool
    return b;
  }
}
