/**
 * The pipeline detail page (examples/pipeline-detail) in headless Chromium (Debian's /usr/bin/chromium driven by
 * playwright-core), against the real service, with a simulated run published through the publish API.
 *
 * Needs a built service (`npm run build`); builds the client and the page itself. The restart test needs
 * RabbitMQ at 127.0.0.1:5672 (history must survive the restart: it lives in the broker's stream).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { connect as amqpConnect } from 'amqplib';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { PageServer, mintToken, type ControlRequest } from '../../examples/pipeline-detail/server';
import { freePort, repoRoot, ServiceProcess } from '../../examples/pipeline-detail/service';
import { PipelineSimulator, STEPS } from '../../examples/pipeline-detail/simulator';

const ROOT = repoRoot(__dirname);
const SECRET = randomBytes(24).toString('hex');
const PUBLISH_KEY = randomBytes(12).toString('hex');
const RABBITMQ_URL = process.env.RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

jest.setTimeout(120_000);

interface Stack {
  service: ServiceProcess;
  pages: PageServer;
  context: BrowserContext;
  page: Page;
  profile: string;
}

const stacks: Stack[] = [];

/** Service + page server + a fresh Chromium profile. */
async function startStack(env: Record<string, string>): Promise<Stack> {
  const pagePort = await freePort();
  const service = new ServiceProcess({
    port: await freePort(),
    env: {
      DJANGO_SECRET_KEY: SECRET,
      PUBLISH_API_KEY: PUBLISH_KEY,
      AUTH_REQUIRED: 'true',
      LOG_LEVEL: 'warn',
      ALLOWED_ORIGINS: `http://127.0.0.1:${pagePort}`,
      // The page server stands in for Django's cancel / retry actions.
      DJANGO_API_URL: `http://127.0.0.1:${pagePort}`,
      ...env,
    },
  });
  await service.start();
  const pages = new PageServer({ port: pagePort, secret: SECRET });
  await pages.start();
  const profile = mkdtempSync(join(tmpdir(), 'ansflow-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    args: CHROMIUM_ARGS,
    headless: true,
    // Tall enough for the whole finished log in the screenshot.
    viewport: { width: 1280, height: 1372 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  const stack = { service, pages, context, page, profile };
  stacks.push(stack);
  return stack;
}

async function stopStack(stack: Stack): Promise<void> {
  await stack.context.close();
  await Promise.all([stack.pages.stop(), stack.service.stop()]);
  rmSync(stack.profile, { recursive: true, force: true });
}

function pageUrl(stack: Stack, executionId: number, token: string): string {
  return `${stack.pages.url}/?execution=${executionId}&ws=${encodeURIComponent(stack.service.wsUrl)}&token=${token}`;
}

/** The log lines on the page, as `level|step|message` (notices excluded). */
async function shownLines(page: Page): Promise<string[]> {
  const lines = page.locator('#log .line:not(.notice)');
  const [levels, steps, messages] = await Promise.all(['lvl', 'step', 'msg'].map((part) => lines.locator(`.${part}`).allTextContents()));
  return messages.map((message, i) => `${levels[i]}|${steps[i]}|${message}`);
}

function expectedLines(simulator: PipelineSimulator): string[] {
  return simulator.lines.map((l) => `${l.level}|${l.step_name ? `[${l.step_name}]` : ''}|${l.message}`);
}

// Page-side code below runs in the browser; it reaches page globals through `globalThis` so that this file
// type-checks with the project's Node-only lib (no DOM types leaking into src/).

/** The page at the moment one step's status changed. */
interface Moment {
  step: string;
  status: string;
  run: string;
  done: string[];
  percent: number;
  lines: number;
  title: string;
}

/** Page-side: a MutationObserver that appends a Moment to `timeline` at each step status change. */
const RECORD_TIMELINE = `(() => {
  globalThis.timeline = [];
  const text = (id) => document.getElementById(id)?.textContent ?? '';
  new MutationObserver((records) => {
    for (const r of records) {
      if (r.type !== 'attributes' || r.target.tagName !== 'LI' || r.oldValue === r.target.dataset.status) continue;
      globalThis.timeline.push({
        step: r.target.dataset.step,
        status: r.target.dataset.status,
        run: document.getElementById('status').dataset.status,
        done: [...document.querySelectorAll('#steps li[data-status="success"]')].map((li) => li.dataset.step),
        percent: Number(document.getElementById('bar').dataset.percent),
        lines: document.querySelectorAll('#log .line').length,
        title: text('pipeline-name'),
      });
    }
  }).observe(document.getElementById('steps'), { subtree: true, attributes: true, attributeFilter: ['data-status'], attributeOldValue: true });
})()`;

async function waitForLines(page: Page, count: number, timeout = 30_000): Promise<void> {
  await page
    .locator('#log .line:not(.notice)')
    .nth(count - 1)
    .waitFor({ timeout });
}

async function waitForAttribute(page: Page, selector: string, name: string, value: string, timeout = 60_000): Promise<void> {
  await page.locator(`${selector}[${name}="${value}"]`).waitFor({ timeout });
}

interface PageGlobals {
  states: string[];
  marker?: number;
  realtimeClient: { on(type: 'state', listener: (s: { state: string; recovered: boolean; reason?: string }) => void): void };
  localStorage: { getItem(key: string): string | null };
  performance: { getEntriesByType(type: string): unknown[] };
}

/** Records every connection state the page's client goes through (from now on). */
async function recordStates(page: Page): Promise<void> {
  await page.waitForFunction(() => 'realtimeClient' in globalThis);
  await page.evaluate(() => {
    const w = globalThis as unknown as PageGlobals;
    w.states = [];
    w.realtimeClient.on('state', (s) => w.states.push(s.state === 'open' && s.recovered ? 'recovered' : `${s.state}${s.reason ? `:${s.reason}` : ''}`));
  });
}

/**
 * Page-side, before the page's own script: catch the client as app.js publishes it (`realtimeClient`) and record
 * its states from the very first one.
 */
const RECORD_STATES_EARLY = `(() => {
  globalThis.states = [];
  let client;
  Object.defineProperty(globalThis, 'realtimeClient', {
    configurable: true,
    get: () => client,
    set: (c) => {
      client = c;
      c.on('state', (s) => globalThis.states.push(s.state + (s.reason && s.state !== 'open' ? ':' + s.reason : '')));
    },
  });
})()`;

async function states(page: Page): Promise<string[]> {
  return page.evaluate(() => (globalThis as unknown as PageGlobals).states);
}

beforeAll(async () => {
  // The page is static files: the client's ES module and the page's script, built the way `npm run build:client`
  // builds them.
  const tsc = join(ROOT, 'node_modules', '.bin', 'tsc');
  await promisify(execFile)(tsc, ['-p', 'client/tsconfig.json'], { cwd: ROOT });
  await promisify(execFile)(tsc, ['-p', 'examples/pipeline-detail/tsconfig.page.json'], { cwd: ROOT });
}, 120_000);

const afterThisTest: Array<() => Promise<void>> = [];

afterEach(async () => {
  for (const stack of stacks.splice(0)) await stopStack(stack);
  for (const cleanup of afterThisTest.splice(0)) await cleanup();
});

/** The exchange and queues the service declared for a test's own exchange (names as in src/messaging/message-policy.ts). */
async function deleteBrokerTopology(exchange: string): Promise<void> {
  const connection = await amqpConnect(RABBITMQ_URL, { noDelay: true });
  try {
    const channel = await connection.createChannel();
    for (const queue of ['stream', 'replay', 'validate', 'dead-letter']) await channel.deleteQueue(`${exchange}.${queue}`);
    for (const name of [exchange, `${exchange}.dlx`]) await channel.deleteExchange(name);
  } finally {
    await connection.close();
  }
}

describe('pipeline detail page', () => {
  it('shows the steps and the log as the run progresses, then the finished run', async () => {
    const stack = await startStack({});
    const { page } = stack;
    const executionId = 42;
    await page.goto(pageUrl(stack, executionId, mintToken(SECRET)));
    await waitForAttribute(page, '#connection', 'data-state', 'open');

    // What the page showed at each step change, recorded in the page as it happens: asserting on it afterwards
    // does not depend on catching a short-lived state with a poll. Installed before the run starts: on a loaded
    // machine the first step could otherwise finish before the recorder is in place.
    await page.evaluate(RECORD_TIMELINE);
    const simulator = new PipelineSimulator({ serviceUrl: stack.service.url, publishKey: PUBLISH_KEY, executionId, lineDelayMs: 40 });
    await simulator.run();
    await waitForAttribute(page, '#status', 'data-status', 'success');
    await waitForLines(page, simulator.lines.length);
    expect(await shownLines(page)).toEqual(expectedLines(simulator));
    const steps = page.locator('#steps li');
    const rows: Array<[string | null, string | null]> = [];
    for (let i = 0; i < (await steps.count()); i++) rows.push([await steps.nth(i).getAttribute('data-step'), await steps.nth(i).getAttribute('data-status')]);
    expect(rows).toEqual(STEPS.map((s) => [s.name, 'success']));
    for (const duration of await steps.locator('.duration').allTextContents()) expect(duration).toMatch(/^(\d+\.\d s|\d+ min \d+ s)$/);
    expect(await page.locator('#bar').getAttribute('data-percent')).toBe('100');
    expect(await page.locator('#progress-text').textContent()).toBe(`${STEPS.length} / ${STEPS.length} steps`);
    expect(await page.locator('#log .line.error').count()).toBe(1);

    const timeline = await page.evaluate(() => (globalThis as unknown as { timeline: Moment[] }).timeline);
    for (const step of STEPS) {
      const running = timeline.findIndex((m) => m.step === step.name && m.status === 'running');
      const done = timeline.findIndex((m) => m.step === step.name && m.status === 'success');
      expect([step.name, running >= 0, done > running]).toEqual([step.name, true, true]);
    }
    const unitTests = timeline.find((m) => m.step === 'Unit tests' && m.status === 'running');
    expect(unitTests).toMatchObject({ run: 'running', done: ['Checkout', 'Install dependencies', 'Lint & type check'], title: 'ansflow-web · build & deploy' });
    expect(unitTests?.percent).toBeGreaterThan(0);
    expect(unitTests?.percent).toBeLessThan(100);
    expect(unitTests?.lines).toBeGreaterThan(10);
    expect(unitTests?.lines).toBeLessThan(simulator.lines.length);

    // The committed screenshot is refreshed on demand (UPDATE_SCREENSHOT=1), so a test run leaves the tree clean.
    const shot = process.env.UPDATE_SCREENSHOT === '1' ? join(ROOT, 'docs', 'screenshot-pipeline-detail.png') : join(tmpdir(), `pipeline-detail-${process.pid}.png`);
    await page.screenshot({ path: shot });
  });

  it('Stop cancels the run through Django and shows the answer; Restart then runs it again', async () => {
    const stack = await startStack({});
    const { page, pages } = stack;
    const executionId = 43;
    await page.goto(pageUrl(stack, executionId, mintToken(SECRET)));
    await waitForAttribute(page, '#connection', 'data-state', 'open');
    expect(await page.locator('#stop').isDisabled()).toBe(true);

    let simulator = new PipelineSimulator({ serviceUrl: stack.service.url, publishKey: PUBLISH_KEY, executionId, lineDelayMs: 200 });
    const runs = [simulator.run()];
    const requests: ControlRequest[] = [];
    // Playing Django: a cancel stops the run (which publishes `cancelled`), a retry starts another.
    pages.on('control', (request: ControlRequest) => {
      requests.push(request);
      if (request.action === 'cancel') simulator.cancel();
      else {
        simulator = new PipelineSimulator({ serviceUrl: stack.service.url, publishKey: PUBLISH_KEY, executionId, lineDelayMs: 200 });
        runs.push(simulator.run());
      }
    });
    await waitForAttribute(page, '#status', 'data-status', 'running');
    await page.locator('#stop:not([disabled])').click({ timeout: 30_000 });
    await waitForAttribute(page, '#control-result', 'data-ok', 'true');
    expect(await page.locator('#control-result').textContent()).toBe('Pipeline execution cancelled successfully (200)');
    expect(requests).toEqual([{ executionId, action: 'cancel', userId: 1 }]);
    // The new state arrives the usual way, through the events Django publishes.
    await waitForAttribute(page, '#status', 'data-status', 'cancelled');
    expect(await page.locator('#steps li[data-status="cancelled"]').count()).toBe(1);
    expect(await page.locator('#stop').isDisabled()).toBe(true);

    await page.locator('#restart:not([disabled])').click({ timeout: 30_000 });
    await page.locator('#control-result', { hasText: 'Pipeline execution retried successfully (201)' }).waitFor({ timeout: 30_000 });
    expect(requests.map((r) => r.action)).toEqual(['cancel', 'retry']);
    await waitForAttribute(page, '#status', 'data-status', 'running');
    simulator.stop();
    await Promise.all(runs);
  });

  it('shows every log line exactly once after the service restarts mid-run (history kept in RabbitMQ)', async () => {
    const exchange = `ansflow.realtime.browser-e2e.${randomBytes(4).toString('hex')}`;
    afterThisTest.push(() => deleteBrokerTopology(exchange));
    const stack = await startStack({ RABBITMQ_URL, RABBITMQ_EXCHANGE: exchange });
    const { page, service } = stack;
    const executionId = 7;
    await page.goto(pageUrl(stack, executionId, mintToken(SECRET)));
    await waitForAttribute(page, '#connection', 'data-state', 'open');
    await recordStates(page);

    const simulator = new PipelineSimulator({ serviceUrl: service.url, publishKey: PUBLISH_KEY, executionId, lineDelayMs: 60 });
    const run = simulator.run();
    await waitForLines(page, 15);
    // Graceful restart: sockets get 1001; the simulator's publishes retry until the new process listens.
    await service.restart();
    await run;

    await waitForAttribute(page, '#status', 'data-status', 'success');
    await waitForLines(page, simulator.lines.length);
    expect(await shownLines(page)).toEqual(expectedLines(simulator));
    expect(await page.locator('#log .line.notice').count()).toBe(0);
    const seen = await states(page);
    expect(seen).toContain('reconnecting:server_shutting_down');
    expect(seen[seen.length - 1]).toBe('recovered');
    expect(await page.locator('#connection').getAttribute('data-state')).toBe('recovered');
    expect(await page.locator('#connection-text').textContent()).toContain('recovered');
  });

  it('refreshes a token that expires mid-run in place: no reconnect, no reload', async () => {
    const stack = await startStack({ JWT_LEEWAY_SECONDS: '0' });
    const { page } = stack;
    const executionId = 9;
    const shortLived = mintToken(SECRET, 1, 3);
    await page.goto(pageUrl(stack, executionId, shortLived));
    await waitForAttribute(page, '#connection', 'data-state', 'open');
    await recordStates(page);
    await page.evaluate(() => ((globalThis as unknown as PageGlobals).marker = 1));

    const simulator = new PipelineSimulator({ serviceUrl: stack.service.url, publishKey: PUBLISH_KEY, executionId, lineDelayMs: 80 });
    await simulator.run();
    await waitForAttribute(page, '#status', 'data-status', 'success');
    await waitForLines(page, simulator.lines.length);

    expect(await shownLines(page)).toEqual(expectedLines(simulator));
    expect(stack.pages.tokensMinted).toBe(1);
    // The run outlived the first token; the socket got the new one in an auth frame and stayed up.
    expect(await states(page)).toEqual([]);
    // Same document: no navigation happened, and the page now holds the fresh token.
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).marker)).toBe(1);
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).performance.getEntriesByType('navigation').length)).toBe(1);
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).localStorage.getItem('authToken'))).not.toBe(shortLived);
  });

  it('replaces an already expired token after the 4001 close, without a reload', async () => {
    const stack = await startStack({ JWT_LEEWAY_SECONDS: '0' });
    const { page } = stack;
    const executionId = 11;
    const expired = mintToken(SECRET, 1, -60);
    // States are recorded from the first script on: the refusal happens right at load.
    await page.addInitScript(RECORD_STATES_EARLY);
    await page.goto(pageUrl(stack, executionId, expired));
    await waitForAttribute(page, '#connection', 'data-state', 'open');
    expect(await states(page)).toEqual(['connecting', 'reconnecting:token_expired', 'open']);
    expect(stack.pages.tokensMinted).toBe(1);

    const simulator = new PipelineSimulator({ serviceUrl: stack.service.url, publishKey: PUBLISH_KEY, executionId, lineDelayMs: 10 });
    await simulator.run();
    await waitForAttribute(page, '#status', 'data-status', 'success');
    await waitForLines(page, simulator.lines.length);
    expect(await shownLines(page)).toEqual(expectedLines(simulator));
    expect(await page.evaluate(() => (globalThis as unknown as PageGlobals).performance.getEntriesByType('navigation').length)).toBe(1);
  });
});
