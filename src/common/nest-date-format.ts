/**
 * Loads `@nestjs/common` without the 6 MB its console logger costs a process that never uses it (issue 13).
 *
 * `@nestjs/common/services/console-logger.service.js` builds an `Intl.DateTimeFormat` when the module loads, for the
 * timestamps of Nest's `ConsoleLogger`. Building one makes ICU load its locale, calendar, time-zone and currency
 * data: +8 MB of RSS in a bare `node` (40.4 → 48.5 MB), +6.3 MB in the service (96.2 → 89.9 MB idle; the ICU data
 * pages of the node binary it touches go from 1.1 MB, as in the baseline hub, to 5.5 MB). The service logs through
 * pino (`PinoNestLogger`), so that formatter never formats anything.
 *
 * While `@nestjs/common` loads, `Intl.DateTimeFormat` is a stand-in that builds the real formatter with the same
 * arguments the first time `format` is called (the only method `ConsoleLogger` calls), then it is put back. Nest's
 * console logger, if anything ever uses it, prints the same timestamps as before.
 *
 * Call it before anything imports `@nestjs/common` (main.ts does, before it loads the app); when the module is
 * already loaded (tests that import the app directly) it does nothing.
 */
export function loadNestWithDeferredDateFormat(): void {
  const Real = Intl.DateTimeFormat;
  class DeferredDateTimeFormat {
    private real: Intl.DateTimeFormat | undefined;
    constructor(
      private readonly locales?: string | string[],
      private readonly options?: Intl.DateTimeFormatOptions,
    ) {}
    format(date?: Date | number): string {
      this.real ??= new Real(this.locales, this.options);
      return this.real.format(date);
    }
  }
  Intl.DateTimeFormat = DeferredDateTimeFormat as unknown as typeof Intl.DateTimeFormat;
  try {
    // Synchronous on purpose: the stand-in must be in place for exactly this load and nothing else.
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    require('@nestjs/common');
  } finally {
    Intl.DateTimeFormat = Real;
  }
}
