/**
 * `npm run demo`: the service (embedded mode, no broker), the page on http://127.0.0.1:8080, and a simulated
 * pipeline run that starts when the page is opened (again on each reload once the previous run finished).
 *
 * Environment: DEMO_PORT (page, default 8080), DEMO_SERVICE_PORT (default 8001), RABBITMQ_URL (optional: publish
 * through the broker instead of the embedded hub), DEMO_LINE_DELAY_MS (default 300).
 */
import { randomBytes } from 'node:crypto';
import { PageServer, mintToken, type ControlRequest } from './server';
import { ServiceProcess } from './service';
import { PipelineSimulator } from './simulator';

const EXECUTION_ID = 42;

async function main(): Promise<void> {
  const pagePort = Number(process.env.DEMO_PORT ?? 8080);
  const servicePort = Number(process.env.DEMO_SERVICE_PORT ?? 8001);
  const secret = randomBytes(32).toString('hex');
  const publishKey = randomBytes(16).toString('hex');

  const env: Record<string, string> = {
    DJANGO_SECRET_KEY: secret,
    PUBLISH_API_KEY: publishKey,
    AUTH_REQUIRED: 'true',
    LOG_LEVEL: 'warn',
    ALLOWED_ORIGINS: `http://127.0.0.1:${pagePort},http://localhost:${pagePort}`,
    // Stop / Restart go to Django's execution actions; the page server stands in for them.
    DJANGO_API_URL: `http://127.0.0.1:${pagePort}`,
  };
  if (process.env.RABBITMQ_URL) env.RABBITMQ_URL = process.env.RABBITMQ_URL;
  const service = new ServiceProcess({ port: servicePort, env, echo: true });
  await service.start();

  const pages = new PageServer({ port: pagePort, secret });
  await pages.start();

  let running = false;
  let current: PipelineSimulator | null = null;
  const runOnce = (): void => {
    if (running) return;
    running = true;
    const simulator = new PipelineSimulator({
      serviceUrl: service.url,
      publishKey,
      executionId: EXECUTION_ID,
      lineDelayMs: Number(process.env.DEMO_LINE_DELAY_MS ?? 300),
    });
    current = simulator;
    console.log(`▶ simulated run of execution ${EXECUTION_ID} started`);
    simulator
      .run()
      .then(() => console.log(`✔ run finished (${simulator.lines.length} log lines); reload the page to run it again`))
      .catch((error: unknown) => console.error('simulated run failed:', error))
      .finally(() => {
        running = false;
      });
  };
  // Start when someone is watching: a run that finished before the page opened would show no log.
  pages.on('page', () => setTimeout(runOnce, 1000));
  // Playing Django's part after its cancel / retry action: the run stops, or runs again.
  pages.on('control', (request: ControlRequest) => {
    console.log(`■ ${request.action} of execution ${request.executionId} by user ${String(request.userId)}`);
    if (request.action === 'cancel') current?.cancel();
    else runOnce();
  });

  const token = mintToken(secret);
  const page = `${pages.url}/?execution=${EXECUTION_ID}&ws=${encodeURIComponent(service.wsUrl)}&token=${token}`;
  console.log(
    `\nansflow-realtime demo\n  service : ${service.url} (metrics: ${service.url}/metrics)\n  page    : ${page}\n\nOpen the page; the run starts when it loads. Ctrl+C to stop.\n`,
  );

  const shutdown = (): void => {
    void Promise.all([pages.stop(), service.stop()]).then(() => process.exit(0));
  };
  process.once('SIGINT', shutdown);
  process.once('SIGTERM', shutdown);
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
