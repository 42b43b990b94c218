import fc from 'fast-check';
import { IdWindow } from './id-window';

/** The model: a Set of the ids and a ring giving the oldest, as the hub kept them before. */
function model(size: number): (id: string) => boolean {
  const seen = new Set<string>();
  const ring: Array<string | undefined> = new Array<string | undefined>(size).fill(undefined);
  let next = 0;
  return (id) => {
    if (size === 0) return true;
    if (seen.has(id)) return false;
    const oldest = ring[next];
    if (oldest !== undefined) seen.delete(oldest);
    seen.add(id);
    ring[next] = id;
    next = (next + 1) % size;
    return true;
  };
}

describe('IdWindow', () => {
  it('says an id is new once, until it is older than the last `size` new ids', () => {
    const w = new IdWindow(2);
    expect(w.add('a')).toBe(true);
    expect(w.add('a')).toBe(false);
    expect(w.add('b')).toBe(true);
    expect(w.add('a')).toBe(false);
    expect(w.add('c')).toBe(true); // a leaves
    expect(w.add('b')).toBe(false);
    expect(w.add('a')).toBe(true);
  });

  it('takes every id as new with a window of 0', () => {
    const w = new IdWindow(0);
    expect(w.add('a')).toBe(true);
    expect(w.add('a')).toBe(true);
  });

  it('answers like a Set with a ring of the ids, for any sequence (small tables: collisions and removals in runs)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 12 }), fc.array(fc.string({ unit: fc.constantFrom('a', 'b', 'c', 'd', 'é'), maxLength: 3 }), { maxLength: 300 }), (size, ids) => {
        const w = new IdWindow(size);
        const m = model(size);
        for (const id of ids) expect(w.add(id)).toBe(m(id));
      }),
      { numRuns: 2000 },
    );
  });

  it('keeps exactly the last ids of a long run through a large window', () => {
    const w = new IdWindow(1000);
    for (let i = 0; i < 50_000; i++) expect(w.add(`s${i}`)).toBe(true);
    for (let i = 49_000; i < 50_000; i++) expect(w.add(`s${i}`)).toBe(false);
    expect(w.add('s48999')).toBe(true);
  });
});
