/** The second `isoTime` built its prefix for last, and that prefix (`2026-12-02T15:04:05.`). */
let isoSecond = NaN;
let isoPrefix = '';
/** Up to here `toISOString` writes a four-digit year, the form the prefix cache builds (year 10000 and on: ±YYYYYY). */
const FOUR_DIGIT_YEARS_MS = 253_402_300_800_000;

/**
 * `new Date(ms).toISOString()`, without a Date and a formatting per call for events in the same second as the
 * previous one, as replayed events mostly are (a replay of a million events built a million ISO strings).
 */
export function isoTime(ms: number): string {
  const t = Math.trunc(ms); // what Date keeps of a fractional time
  if (!(t >= 0 && t < FOUR_DIGIT_YEARS_MS)) return new Date(ms).toISOString();
  const second = Math.floor(t / 1000);
  if (second !== isoSecond) {
    isoPrefix = new Date(second * 1000).toISOString().slice(0, 20);
    isoSecond = second;
  }
  const milli = t - second * 1000;
  return `${isoPrefix}${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`;
}
