import { setFlagsFromString } from 'node:v8';

/**
 * Keeps start-up from sizing V8's young generation for traffic it has not seen (issue 13).
 * `holdYoungGeneration()` keeps it at its initial size; `releaseYoungGeneration()` gives it V8's default growth
 * again. main.ts holds it before it loads anything else (`./hold-young-generation`, its first import) and
 * bootstrap() releases it once the app is built and the start-up replay of the stream is over (at once without a
 * broker): the replay's garbage is short-lived too.
 *
 * Why: loading the service's ~1,200 modules allocates ~20 MB that all survive (module code and objects live for
 * the whole process). V8 doubles the semi-spaces each time a semi-space's worth of objects has survived since the
 * last growth, so by the time the service listens they are at their maximum (16 MB each, 17 MB of it resident)
 * with 2–3 MB in use, and an idle process keeps them: V8 shrinks the young generation only after a mark-compact,
 * which an idle 25 MB heap never triggers (idle RSS measured after 5 s and after 40 s: 96 MB both).
 * With the growth factor at 1 during start-up the semi-spaces stay at their initial 1 MB: idle RSS 89.4 → 77.0 MB.
 * Once released, traffic grows them exactly as before (the same V8 rule, from 1 MB instead of 16), so fan-out and
 * latency under load see the young generation they always had; only an instance that has not served yet stays small.
 *
 * `--semi-space-growth-factor` is read each time the young generation grows, so changing it at run time takes
 * effect (unlike `--max-semi-space-size`, fixed when the heap is made: set at run time it changed nothing, 96.9 MB).
 * A factor given on the command line is left alone.
 */
const GROWTH_FLAG = '--semi-space-growth-factor';

/** V8's default (`semi_space_growth_factor`, v8/src/flags/flag-definitions.h). */
const V8_DEFAULT_GROWTH_FACTOR = 2;

let held = false;

/** Holds the young generation at its current size (the initial 1 MB semi-spaces, when called first thing). */
export function holdYoungGeneration(): void {
  if (held || process.execArgv.some((arg) => arg.startsWith(GROWTH_FLAG))) return;
  held = true;
  setFlagsFromString(`${GROWTH_FLAG}=1`);
}

/** Lets the young generation grow as V8 decides again. Idempotent; a no-op when this module held nothing. */
export function releaseYoungGeneration(): void {
  if (!held) return;
  held = false;
  setFlagsFromString(`${GROWTH_FLAG}=${V8_DEFAULT_GROWTH_FACTOR}`);
}
