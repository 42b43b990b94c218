import { loadNestWithDeferredDateFormat } from './nest-date-format';

describe('loadNestWithDeferredDateFormat', () => {
  const options: Intl.DateTimeFormatOptions = { year: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric', day: '2-digit', month: '2-digit' };

  afterEach(() => jest.useRealTimers());

  it('puts the real Intl.DateTimeFormat back once @nestjs/common is loaded', () => {
    const real = Intl.DateTimeFormat;
    loadNestWithDeferredDateFormat();
    expect(Intl.DateTimeFormat).toBe(real);
    expect(new Intl.DateTimeFormat('en-US', { timeZone: 'UTC' }).format(0)).toBe('1/1/1970');
  });

  it("leaves Nest's console logger printing the timestamps it printed before", () => {
    loadNestWithDeferredDateFormat();
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { ConsoleLogger } = require('@nestjs/common') as typeof import('@nestjs/common');
    jest.useFakeTimers({ now: new Date('2026-03-04T05:06:07Z') });
    const stamp = (new ConsoleLogger() as unknown as { getTimestamp(): string }).getTimestamp();
    expect(stamp).toBe(new Intl.DateTimeFormat(undefined, options).format(Date.now()));
    expect(stamp).toMatch(/2026/);
  });
});
