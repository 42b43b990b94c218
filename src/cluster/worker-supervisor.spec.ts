import { restartDelayMs } from './worker-supervisor';

describe('restartDelayMs', () => {
  it('replaces a worker that ran well at once, and backs off exponentially to 30 s on a crash loop', () => {
    expect(restartDelayMs(0)).toBe(0);
    expect([1, 2, 3, 4].map(restartDelayMs)).toEqual([500, 1000, 2000, 4000]);
    expect(restartDelayMs(7)).toBe(30_000);
    expect(restartDelayMs(50)).toBe(30_000);
  });
});
