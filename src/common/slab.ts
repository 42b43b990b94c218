/**
 * Small Buffers carved out of 64 KiB slabs, for Buffers made by the hundred thousand (frames). Node's own pool is
 * 8 KiB: a new pool ArrayBuffer every ~25 frames, each counted as external memory that can start a collection, and
 * shared with whatever else the process allocates, which then stays pinned with the frames. A slab is freed once
 * none of its Buffers is referenced. Buffers larger than `maxPart` get memory of their own.
 */
export class Slab {
  private slab: Buffer;
  private used = 0;

  constructor(
    private readonly slabBytes = 64 * 1024,
    private readonly maxPart = slabBytes / 16,
  ) {
    this.slab = Buffer.allocUnsafeSlow(slabBytes);
  }

  /** `size` bytes, uninitialized. */
  alloc(size: number): Buffer {
    if (size > this.maxPart) return Buffer.allocUnsafeSlow(size);
    if (this.used + size > this.slabBytes) {
      this.slab = Buffer.allocUnsafeSlow(this.slabBytes);
      this.used = 0;
    }
    const b = this.slab.subarray(this.used, this.used + size);
    this.used += (size + 7) & ~7; // 8-byte aligned, like Node's pool
    return b;
  }
}
