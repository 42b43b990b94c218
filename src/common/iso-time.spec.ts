import fc from 'fast-check';
import { isoTime } from './iso-time';

describe('isoTime', () => {
  it('is new Date(ms).toISOString() for times in the same second, the next second, and any other', () => {
    const base = Date.UTC(2026, 11, 2, 15, 4, 5);
    for (const ms of [base, base + 7, base + 42, base + 999, base + 1000, base - 1, 0, 999.9, 1.5, -0.5, 253_402_300_799_999, 253_402_300_800_000, -1, -62_198_755_200_001]) {
      expect(isoTime(ms)).toBe(new Date(ms).toISOString());
    }
  });

  it('agrees with toISOString on any representable time, integral or not', () => {
    fc.assert(
      fc.property(fc.oneof(fc.integer({ min: -8.64e15, max: 8.64e15 }), fc.double({ min: -8.64e15, max: 8.64e15, noNaN: true })), (ms) => {
        expect(isoTime(ms)).toBe(new Date(ms).toISOString());
      }),
      { numRuns: 5000 },
    );
  });
});
