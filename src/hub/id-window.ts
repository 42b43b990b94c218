import { randomInt } from 'node:crypto';

/**
 * The last `size` message ids added, for de-duplication: `add` says whether an id is new, and the oldest id leaves
 * once `size` are held. A ring of the ids (oldest first) and an open-addressing table of ring slots keyed by a hash
 * of the id, in typed arrays. The previous Set of strings cost ~1.5 µs per event in a replay (a Set's add and delete
 * of a fresh string in a 100,000-entry table); this is about half.
 *
 * The hash is seeded per process, so a publisher cannot choose ids that all land on one probe sequence.
 */
export class IdWindow {
  private readonly ids: Array<string | undefined>;
  /** Each ring slot's hash (to find its table position again when it is evicted). */
  private readonly hashes: Int32Array;
  /** Ring slot + 1 at each table position; 0: empty. At most half full, so probe runs stay short. */
  private readonly table: Int32Array;
  private readonly mask: number;
  private next = 0;
  private readonly seed = randomInt(0x7fffffff);

  constructor(private readonly size: number) {
    this.ids = new Array<string | undefined>(size).fill(undefined);
    this.hashes = new Int32Array(size);
    let capacity = 2;
    while (capacity < 2 * size) capacity *= 2;
    this.table = new Int32Array(capacity);
    this.mask = capacity - 1;
  }

  /** Add `id`; false when it is in the window already (it then stays where it was in the order). */
  add(id: string): boolean {
    if (this.size === 0) return true;
    const h = this.hash(id);
    let j = h & this.mask;
    for (let s = this.table[j]; s !== 0; s = this.table[j]) {
      if (this.hashes[s - 1] === h && this.ids[s - 1] === id) return false;
      j = (j + 1) & this.mask;
    }
    const slot = this.next;
    if (this.ids[slot] !== undefined) {
      this.removeAt(this.positionOf(slot));
      // The removal may have shifted entries back into the run the probe walked: look for the empty place again.
      j = h & this.mask;
      while (this.table[j] !== 0) j = (j + 1) & this.mask;
    }
    this.table[j] = slot + 1;
    this.hashes[slot] = h;
    this.ids[slot] = id;
    this.next = slot + 1 === this.size ? 0 : slot + 1;
    return true;
  }

  private positionOf(slot: number): number {
    let j = this.hashes[slot] & this.mask;
    while (this.table[j] !== slot + 1) j = (j + 1) & this.mask;
    return j;
  }

  /** Empty table position `j`, moving back the entries after it that would no longer be found (linear probing). */
  private removeAt(j: number): void {
    let hole = j;
    for (let k = (j + 1) & this.mask; this.table[k] !== 0; k = (k + 1) & this.mask) {
      const home = this.hashes[this.table[k] - 1] & this.mask;
      // The entry at k may fill the hole when the hole lies on its probe path, from its home to k.
      if (((k - home) & this.mask) >= ((k - hole) & this.mask)) {
        this.table[hole] = this.table[k];
        hole = k;
      }
    }
    this.table[hole] = 0;
  }

  private hash(id: string): number {
    let h = this.seed;
    for (let i = 0; i < id.length; i++) {
      h = Math.imul(h ^ id.charCodeAt(i), 0x5bd1e995);
      h ^= h >>> 15;
    }
    h = Math.imul(h ^ (h >>> 13), 0x85ebca6b);
    return h ^ (h >>> 16);
  }
}
