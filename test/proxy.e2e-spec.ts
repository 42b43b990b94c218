/**
 * deploy/haproxy/haproxy.cfg, the proxy of docker-compose.scale.yml, run unchanged by Debian's HAProxy in front of
 * three local `node dist/main` instances on the machine's RabbitMQ. The file reads its addresses from the
 * environment; here the instances listen on 127.0.0.2, .3 and .4 (one port) and a dnsmasq answers the service name
 * with those addresses, as Docker's DNS answers `realtime` with one address per replica. A fourth instance is live
 * but never ready (its broker address is closed): the proxy must send it no socket.
 *
 * Needs `haproxy` and `dnsmasq` (Debian packages haproxy, dnsmasq-base; .ci/run installs them) and the RabbitMQ at
 * 127.0.0.1:5672.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { freePort } from './support/broker';
import { Cluster, type Instance, type Publisher } from './support/cluster';
import { mintToken } from './support/tokens';
import { TestClient, type Frame } from './support/ws-client';

jest.setTimeout(120_000);

const ROOT = path.resolve(__dirname, '..');
const CONFIG = path.join(ROOT, 'deploy/haproxy/haproxy.cfg');
const token = mintToken({ userId: 1 });

interface Daemon {
  proc: ChildProcess;
  output: string[];
}

function daemon(cmd: string, args: string[], env: NodeJS.ProcessEnv): Daemon {
  const proc = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  proc.stdout?.on('data', (b: Buffer) => output.push(b.toString()));
  proc.stderr?.on('data', (b: Buffer) => output.push(b.toString()));
  return { proc, output };
}

async function stop(d: Daemon | undefined): Promise<void> {
  if (d === undefined || d.proc.exitCode !== null || d.proc.signalCode !== null) return;
  const exited = new Promise((resolve) => d.proc.once('exit', resolve));
  d.proc.kill('SIGTERM');
  await exited;
}

/** Ends a wait at once (a daemon died). */
class Fatal extends Error {}

async function until<T>(what: string, check: () => Promise<T | undefined>, ms: number, context: () => string = () => ''): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await check().catch((err: unknown) => {
      if (err instanceof Fatal) throw err;
      return undefined;
    });
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms\n${context()}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const isEventOf =
  (channel: string) =>
  (f: Frame): boolean =>
    f.channel === channel && typeof f.seq === 'number';

describe('HAProxy (deploy/haproxy/haproxy.cfg) in front of three instances', () => {
  let cluster: Cluster;
  let pub: Publisher;
  let dir = '';
  let dns: Daemon | undefined;
  let haproxy: Daemon | undefined;
  let proxyPort = 0;
  let statsPort = 0;
  const ready: Instance[] = [];
  let unready: Instance;
  const clients: TestClient[] = [];

  const proxied = async (p: string): Promise<TestClient> => {
    const c = await TestClient.connect(`ws://127.0.0.1:${proxyPort}${p}${p.includes('?') ? '&' : '?'}token=${token}`);
    clients.push(c);
    return c;
  };

  /** Per server slot of the backend, HAProxy's view: address and state (UP, DOWN, MAINT). */
  const serverStates = async (): Promise<Map<string, string>> => {
    const res = await fetch(`http://127.0.0.1:${statsPort}/stats;csv`, { signal: AbortSignal.timeout(2000) });
    const lines = (await res.text()).trim().split('\n');
    const header = lines[0].replace(/^# /, '').split(',');
    const col = (name: string): number => header.indexOf(name);
    const states = new Map<string, string>();
    for (const line of lines.slice(1)) {
      const f = line.split(',');
      if (f[col('pxname')] !== 'realtime' || f[col('svname')] === 'BACKEND' || f[col('svname')] === 'FRONTEND') continue;
      const addr = f[col('addr')];
      if (addr !== '' && !f[col('status')].startsWith('MAINT')) states.set(addr, f[col('status')]);
    }
    return states;
  };

  /** The instance holding exactly the sockets it says (/health's websocket.connections). */
  const connectionsOf = async (i: Instance): Promise<number> => {
    const body = (await (await fetch(`${i.url}/health`, { signal: AbortSignal.timeout(3000) })).json()) as { websocket: { connections: number } };
    return body.websocket.connections;
  };

  beforeAll(async () => {
    cluster = await Cluster.start(0);
    pub = await cluster.publisher();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ansflow-proxy-'));
    fs.chmodSync(dir, 0o755); // dnsmasq reads the hosts file after dropping to nobody

    // Three instances on one exchange, one address each, one port for all (as replicas behind a service name).
    const port = await freePort();
    for (const host of ['127.0.0.2', '127.0.0.3', '127.0.0.4']) ready.push(await cluster.add({ env: { HOST: host }, port, ready: false }));
    await Promise.all(ready.map((i) => i.waitReady(60_000)));
    // Live but never ready: its broker address refuses connections.
    unready = await cluster.add({ env: { HOST: '127.0.0.5', RABBITMQ_URL: 'amqp://guest:guest@127.0.0.1:1' }, port, ready: false });

    const dnsPort = await freePort();
    const hosts = path.join(dir, 'hosts');
    fs.writeFileSync(hosts, ['127.0.0.2', '127.0.0.3', '127.0.0.4', '127.0.0.5'].map((a) => `${a} realtime.test\n`).join(''), { mode: 0o644 });
    dns = daemon(
      'dnsmasq',
      [
        '--keep-in-foreground',
        '--conf-file=/dev/null',
        '--no-resolv',
        '--no-hosts',
        `--addn-hosts=${hosts}`,
        '--listen-address=127.0.0.1',
        '--bind-interfaces',
        `--port=${dnsPort}`,
        `--pid-file=${path.join(dir, 'dnsmasq.pid')}`,
        '--log-facility=-',
      ],
      process.env,
    );

    proxyPort = await freePort();
    statsPort = await freePort();
    // A second configuration file of the test's own adds only a stats page, to see the proxy's view of the servers.
    const stats = path.join(dir, 'stats.cfg');
    fs.writeFileSync(stats, `listen stats\n    bind 127.0.0.1:${statsPort}\n    no log\n    stats enable\n    stats uri /stats\n    stats show-legends\n`);
    haproxy = daemon('haproxy', ['-db', '-f', CONFIG, '-f', stats], {
      PATH: process.env.PATH,
      PROXY_BIND: `127.0.0.1:${proxyPort}`,
      DNS_NAMESERVER: `127.0.0.1:${dnsPort}`,
      REALTIME_SERVERS: `realtime.test:${port}`,
      REALTIME_SLOTS: '10',
      // This machine caps open files at 20,000.
      PROXY_MAXCONN: '5000',
    });
    const logs = (): string => `--- haproxy ---\n${haproxy?.output.join('').slice(-3000)}\n--- dnsmasq ---\n${dns?.output.join('').slice(-1000)}`;
    await until(
      'HAProxy sees the three ready instances UP and the unready one DOWN',
      async () => {
        if (haproxy?.proc.exitCode !== null) throw new Fatal(`haproxy exited (${haproxy?.proc.exitCode})\n${logs()}`);
        const s = await serverStates();
        const up = [...s]
          .filter(([, st]) => st === 'UP')
          .map(([a]) => a.split(':')[0])
          .sort();
        const down = [...s].filter(([, st]) => st.startsWith('DOWN')).map(([a]) => a.split(':')[0]);
        return up.join(' ') === '127.0.0.2 127.0.0.3 127.0.0.4' && down.join(' ') === '127.0.0.5' ? s : undefined;
      },
      60_000,
      logs,
    );
  }, 180_000);

  afterAll(async () => {
    for (const c of clients) c.close();
    await stop(haproxy);
    await stop(dns);
    await cluster?.cleanup();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('checks /health/ready: the live but unready instance gets no socket, the ready ones share them', async () => {
    expect((await fetch(`${unready.url}/health/live`)).status).toBe(200);
    expect((await fetch(`${unready.url}/health/ready`)).status).toBe(503);
    const sockets = await Promise.all(Array.from({ length: 9 }, () => proxied('/ws/execution/501')));
    await Promise.all(sockets.map((s) => s.next('connection', 15_000)));
    expect(await connectionsOf(unready)).toBe(0);
    const spread = await Promise.all(ready.map(connectionsOf));
    expect(spread.reduce((a, b) => a + b, 0)).toBe(9);
    // leastconn: no instance left out.
    for (const n of spread) expect(n).toBeGreaterThan(0);
    for (const s of sockets) s.close();
    await until(
      'sockets closed on the instances',
      async () => ((await Promise.all(ready.map(connectionsOf))).every((n) => n === 0) ? true : undefined),
      15_000,
    );
  });

  it('the instance holding a socket is killed: the client resumes through the proxy on another with exactly the missed events', async () => {
    const channel = 'execution.502';
    // A witness straight on each instance: it shows when an instance has read the events from the stream.
    const witnesses = await Promise.all(
      ready.map(async (i) => {
        const w = await TestClient.connect(i.ws(`/ws/execution/502?token=${token}`));
        clients.push(w);
        await w.next('execution_status', 15_000);
        return w;
      }),
    );
    const client = await proxied('/ws/execution/502');
    await client.next('execution_status', 15_000);
    const holders = await Promise.all(ready.map(connectionsOf));
    expect(holders.filter((n) => n === 2)).toHaveLength(1);
    const holder = ready[holders.indexOf(2)];

    await pub.burst(channel, 5, (i) => ({ type: 'log_entry', execution_id: 502, seq: i, level: 'info', message: `line ${i}` }));
    const before = await client.collect(isEventOf(channel), 5, 15_000);
    const since = before[4].position as number;

    expect(await holder.kill('SIGKILL')).toBeNull();
    const closed = await client.closedWith(15_000);
    expect(closed.code).not.toBe(1000);

    // Published while the client is away; the resume is answered from the history of the instance it lands on, so
    // wait until the surviving instances have read them.
    await pub.burst(channel, 7, (i) => ({ type: 'log_entry', execution_id: 502, seq: 5 + i, level: 'info', message: `line ${5 + i}` }));
    const survivors = ready.filter((i) => i !== holder);
    await Promise.all(witnesses.filter((_w, k) => ready[k] !== holder).map((w) => w.collect(isEventOf(channel), 12, 15_000)));
    const resumed = await proxied(`/ws/execution/502?since=${since}`);
    expect(await resumed.next(undefined, 15_000)).toMatchObject({ type: 'connection' });
    const recovery = await resumed.next('recovery', 15_000);
    expect(recovery).toMatchObject({ recovered: true, since, missed: 7 });
    const replayed = await resumed.collect(isEventOf(channel), 7, 15_000);
    expect(replayed.map((f) => f.seq)).toEqual([5, 6, 7, 8, 9, 10, 11]);
    for (let k = 1; k < replayed.length; k++) expect(replayed[k].position as number).toBeGreaterThan(replayed[k - 1].position as number);
    expect(replayed[0].position as number).toBeGreaterThan(since);

    // The resumed socket plus the two witnesses.
    const onSurvivors = await Promise.all(survivors.map(connectionsOf));
    expect(onSurvivors.reduce((a, b) => a + b, 0)).toBe(3);

    // Live events keep coming on the resumed socket.
    await pub.publish(channel, { type: 'log_entry', execution_id: 502, seq: 12, level: 'info', message: 'live' });
    expect((await resumed.collect(isEventOf(channel), 8, 15_000)).map((f) => f.seq)).toEqual([5, 6, 7, 8, 9, 10, 11, 12]);
  });
});
