/**
 * A three-node RabbitMQ cluster of the test's own, next to the machine's broker (rabbit@localhost on 5672, which
 * CI and every other suite use and which this file never addresses). Each node is a `rabbitmq-server` child with
 * its own node name, ports, data, logs, config and enabled-plugins file in a temporary folder, and its own Erlang
 * cookie in its own HOME: the CLI calls here carry that HOME and an explicit `-n`, so even a mistake cannot reach
 * the machine's broker (a different cookie is refused).
 *
 * Nodes are started detached (their own process group) and killed by the ids in their pid files: at the end of
 * the run (afterAll calls `stop()`), at process exit (a hook), and at the start of the next run if a crashed run
 * left some behind.
 */
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** The scripts themselves: /usr/sbin/rabbitmqctl would switch to the rabbitmq user and its (the machine's) cookie. */
const BIN = process.env.RABBITMQ_BIN_DIR ?? '/usr/lib/rabbitmq/bin';
/** Every run's folder lives under this one, so the next run finds what a crashed one left. */
const BASE = join(tmpdir(), 'ansflow-rabbit-cluster');

export interface NodeSpec {
  /** 1-based index in the cluster. */
  index: number;
  name: string;
  /** A loopback address of its own (127.0.15.<index>): every node listens on the same AMQP and stream ports, as
   * in production where nodes are different hosts, so one RABBITMQ_STREAM_PORT serves them all. */
  host: string;
  amqpPort: number;
  streamPort: number;
  distPort: number;
  dir: string;
}

export interface ClusterOptions {
  /** Node name prefix (default ansflow-t): nodes are <prefix>1@localhost... */
  prefix?: string;
  /** Loopback network of the nodes (default 127.0.15): node i listens on <net>.<i>. */
  net?: string;
  /** AMQP port of every node (default 5701); the stream port is +10; distribution ports 25701+i-1 on 127.0.0.1. */
  basePort?: number;
  size?: number;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { env, timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1;
      resolve({ code, out: `${stdout}${stderr}` });
    });
  });
}

function portFree(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, host, () => srv.close(() => resolve(true)));
  });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Kill one of our nodes by the pids recorded for it (beam and its process group). Synchronous: exit hooks use it. */
function killRecorded(dir: string): void {
  for (const file of ['beam.pid', 'group.pid']) {
    const path = join(dir, file);
    if (!existsSync(path)) continue;
    const pid = Number(readFileSync(path, 'utf8').trim());
    if (!Number.isSafeInteger(pid) || pid <= 1) continue;
    // Only a process that is still one of our nodes (its environment names this node's folder): the pid may have
    // been reused since a crashed run, and the machine's broker is a beam process too.
    let environ = '';
    try {
      environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
    } catch {
      continue;
    }
    if (!environ.includes(`RABBITMQ_PID_FILE=${join(dir, 'beam.pid')}`)) continue;
    try {
      process.kill(file === 'group.pid' ? -pid : pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

const live = new Set<RabbitCluster>();
let hooked = false;
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once('exit', () => {
    for (const c of live) c.killAllSync();
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      for (const c of live) c.killAllSync();
      process.exit(130);
    });
  }
}

/** Kill and remove whatever earlier runs left under BASE (a crashed run has no afterAll). */
export function removeLeftovers(): void {
  if (!existsSync(BASE)) return;
  for (const run of readdirSync(BASE)) {
    const runDir = join(BASE, run);
    const owner = join(runDir, 'owner.pid');
    // A run of another process still alive (two suites at once) keeps its nodes.
    if (existsSync(owner) && alive(Number(readFileSync(owner, 'utf8'))) && Number(readFileSync(owner, 'utf8')) !== process.pid) continue;
    for (const node of existsSync(runDir) ? readdirSync(runDir) : []) {
      const d = join(runDir, node);
      if (existsSync(join(d, 'rabbitmq.conf'))) killRecorded(d);
    }
    rmSync(runDir, { recursive: true, force: true });
  }
}

export class RabbitCluster {
  readonly nodes: NodeSpec[];
  private readonly runDir: string;
  private readonly cookie = randomBytes(16).toString('hex').toUpperCase();
  private stopped = false;

  private constructor(opts: Required<ClusterOptions>) {
    this.runDir = join(BASE, `run-${process.pid}-${randomBytes(3).toString('hex')}`);
    this.nodes = Array.from({ length: opts.size }, (_, k) => {
      const index = k + 1;
      return {
        index,
        name: `${opts.prefix}${index}@localhost`,
        host: `${opts.net}.${index}`,
        amqpPort: opts.basePort,
        streamPort: opts.basePort + 10,
        distPort: opts.basePort + 20_000 + k,
        dir: join(this.runDir, `n${index}`),
      };
    });
  }

  /** Start the nodes, join them into one cluster and wait until every one runs. */
  static async start(opts: ClusterOptions = {}): Promise<RabbitCluster> {
    removeLeftovers();
    const c = new RabbitCluster({ prefix: opts.prefix ?? 'ansflow-t', net: opts.net ?? '127.0.15', basePort: opts.basePort ?? 5701, size: opts.size ?? 3 });
    for (const n of c.nodes) {
      const wanted: [number, string][] = [
        [n.amqpPort, n.host],
        [n.streamPort, n.host],
        [n.distPort, '127.0.0.1'],
      ];
      for (const [p, host] of wanted) {
        if (!(await portFree(p, host))) throw new Error(`${host}:${p} is taken: another cluster run, or something else, uses it`);
      }
    }
    mkdirSync(c.runDir, { recursive: true });
    writeFileSync(join(c.runDir, 'owner.pid'), String(process.pid));
    live.add(c);
    hookExit();
    try {
      for (const n of c.nodes) c.prepare(n);
      // The first node alone (it creates the cluster and the guest user), then the others together: peer
      // discovery (classic_config) has a blank node join the listed ones while it boots, which saves a stop_app /
      // join_cluster / start_app cycle per node. A node that did not join is joined by hand.
      await c.startNode(1);
      await Promise.all(c.nodes.slice(1).map((n) => c.startNode(n.index)));
      const members = await c.runningNodes(1);
      for (const n of c.nodes.slice(1)) {
        if (members.includes(n.name)) continue;
        await c.ctl(n.index, 'stop_app');
        await c.ctl(n.index, 'join_cluster', c.nodes[0].name);
        await c.ctl(n.index, 'start_app');
      }
      await c.ctl(1, 'enable_feature_flag', 'all');
      await c.waitRunning(c.nodes.length);
    } catch (err) {
      await c.stop();
      throw err;
    }
    return c;
  }

  /** amqp:// URL of node i (1-based). */
  url(i: number): string {
    const n = this.node(i);
    return `amqp://guest:guest@${n.host}:${n.amqpPort}`;
  }

  /** RABBITMQ_URL listing every node, in the given order (default 1..n). */
  urls(order: number[] = this.nodes.map((n) => n.index)): string {
    return order.map((i) => this.url(i)).join(',');
  }

  node(i: number): NodeSpec {
    const n = this.nodes[i - 1];
    if (n === undefined) throw new Error(`no node ${i}`);
    return n;
  }

  /** The node index of a `host:port` (AMQP or stream) as logs and /health name it (undefined: not one of ours). */
  indexOf(address: string): number | undefined {
    return this.nodes.find((n) => address === `${n.host}:${n.amqpPort}` || address === `${n.host}:${n.streamPort}`)?.index;
  }

  isRunning(i: number): boolean {
    const pid = this.beamPid(i);
    return pid !== undefined && alive(pid);
  }

  /** Run the CLI against node i; throws with its output when it fails. */
  async ctl(i: number, ...args: string[]): Promise<string> {
    return this.cli('rabbitmqctl', i, args);
  }

  async cli(
    tool: 'rabbitmqctl' | 'rabbitmq-streams' | 'rabbitmq-queues' | 'rabbitmq-diagnostics',
    i: number,
    args: string[],
    timeoutMs = 120_000,
  ): Promise<string> {
    const n = this.node(i);
    const r = await run(join(BIN, tool), ['-n', n.name, ...args], this.env(n), timeoutMs);
    if (r.code !== 0) throw new Error(`${tool} -n ${n.name} ${args.join(' ')} failed (${r.code}): ${r.out.slice(0, 2000)}`);
    return r.out;
  }

  /** Start node i (again) and wait until its broker application runs. */
  async startNode(i: number, timeoutMs = 180_000): Promise<void> {
    const n = this.node(i);
    rmSync(join(n.dir, 'beam.pid'), { force: true });
    const log = openSync(join(n.dir, 'log', 'console.log'), 'a');
    const child = spawn(join(BIN, 'rabbitmq-server'), [], { env: this.env(n), detached: true, stdio: ['ignore', log, log] });
    closeSync(log);
    child.unref();
    if (child.pid !== undefined) writeFileSync(join(n.dir, 'group.pid'), String(child.pid));
    // `wait` follows the pid file until the application runs (the Erlang VM alone takes seconds here).
    const r = await run(
      join(BIN, 'rabbitmqctl'),
      ['-n', n.name, 'wait', join(n.dir, 'beam.pid'), '--timeout', String(Math.round(timeoutMs / 1000))],
      this.env(n),
      timeoutMs + 10_000,
    );
    if (r.code !== 0) throw new Error(`node ${n.name} did not start: ${r.out.slice(0, 1000)}\n${this.logTail(i)}`);
  }

  /**
   * Take node i away. `kill`: SIGKILL of its VM, as a crash or a power loss (the kernel resets its connections at
   * once). `stop`: a clean `rabbitmqctl stop` (clients get a connection.close).
   */
  async stopNode(i: number, how: 'kill' | 'stop' = 'kill'): Promise<void> {
    const n = this.node(i);
    if (how === 'stop') {
      await this.ctl(i, 'stop', join(n.dir, 'beam.pid')).catch(() => undefined);
    }
    killRecorded(n.dir);
    const deadline = Date.now() + 30_000;
    while (this.isRunning(i)) {
      if (Date.now() > deadline) throw new Error(`node ${n.name} still runs 30 s after being stopped`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** The nodes running the broker application, as node i sees them. */
  async runningNodes(i: number): Promise<string[]> {
    const out = await this.ctl(i, 'cluster_status', '--formatter', 'json');
    return (JSON.parse(out.slice(out.indexOf('{'))) as { running_nodes?: string[] }).running_nodes ?? [];
  }

  /** Wait until `count` nodes run the broker application, as seen from a running node. */
  async waitRunning(count: number, timeoutMs = 120_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    for (;;) {
      const from = this.nodes.find((n) => this.isRunning(n.index));
      if (from !== undefined) {
        try {
          const out = await this.ctl(from.index, 'cluster_status', '--formatter', 'json');
          const status = JSON.parse(out.slice(out.indexOf('{'))) as { running_nodes?: string[] };
          last = JSON.stringify(status.running_nodes);
          if ((status.running_nodes ?? []).length >= count) return;
        } catch (err) {
          last = String(err);
        }
      }
      if (Date.now() > deadline) throw new Error(`${count} running nodes not seen within ${timeoutMs} ms (last: ${last})`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /** The node index that leads `queue` (a stream or a quorum queue), asked of a running node. */
  async leaderOf(queue: string): Promise<number | undefined> {
    const from = this.nodes.find((n) => this.isRunning(n.index));
    if (from === undefined) return undefined;
    const out = await this.ctl(from.index, 'list_queues', 'name', 'leader', '--formatter', 'json', '--quiet');
    const rows = JSON.parse(out.slice(out.indexOf('['))) as { name: string; leader: string }[];
    const leader = rows.find((r) => r.name === queue)?.leader;
    return this.nodes.find((n) => n.name === leader)?.index;
  }

  /** `name type members` of the queues, as a running node lists them. */
  async queues(): Promise<{ name: string; type: string; members: string[]; leader: string }[]> {
    const from = this.nodes.find((n) => this.isRunning(n.index));
    if (from === undefined) return [];
    const out = await this.ctl(from.index, 'list_queues', 'name', 'type', 'members', 'leader', '--formatter', 'json', '--quiet');
    return JSON.parse(out.slice(out.indexOf('['))) as { name: string; type: string; members: string[]; leader: string }[];
  }

  /**
   * `rabbitmq-streams stream_status` of a stream as node `from` (default: the first running node) reports it: one
   * row per member (node, role, offset, committed offset). Undefined when no node answers (a paused node
   * refuses it too): this is evidence for a figure, never a condition of a test.
   */
  async streamStatus(stream: string, from?: number): Promise<string | undefined> {
    const candidates = from !== undefined ? [from] : this.nodes.filter((n) => this.isRunning(n.index)).map((n) => n.index);
    for (const i of candidates) {
      try {
        const out = await this.cli('rabbitmq-streams', i, ['stream_status', stream, '--formatter', 'json', '--quiet'], 30_000);
        const rows = JSON.parse(out.slice(out.indexOf('['))) as Record<string, unknown>[];
        return rows
          .map((r) => `${String(r.node).split('@')[0]} ${String(r.role)} offset ${String(r.offset)} committed ${String(r.committed_offset)}`)
          .join('; ');
      } catch {
        // Paused or stopping: ask the next one.
      }
    }
    return undefined;
  }

  logTail(i: number, lines = 30): string {
    const dir = join(this.node(i).dir, 'log');
    if (!existsSync(dir)) return '';
    return readdirSync(dir)
      .map((f) => `--- ${f}\n${readFileSync(join(dir, f), 'utf8').split('\n').slice(-lines).join('\n')}`)
      .join('\n');
  }

  /** Stop every node and remove the folder. Idempotent; safe after a failed start. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.killAllSync();
    const deadline = Date.now() + 30_000;
    while (this.nodes.some((n) => this.isRunning(n.index)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    rmSync(this.runDir, { recursive: true, force: true });
    live.delete(this);
  }

  killAllSync(): void {
    for (const n of this.nodes) if (existsSync(n.dir)) killRecorded(n.dir);
    if (this.stopped) rmSync(this.runDir, { recursive: true, force: true });
  }

  private beamPid(i: number): number | undefined {
    const path = join(this.node(i).dir, 'beam.pid');
    if (!existsSync(path)) return undefined;
    const pid = Number(readFileSync(path, 'utf8').trim());
    return Number.isSafeInteger(pid) && pid > 1 ? pid : undefined;
  }

  private prepare(n: NodeSpec): void {
    for (const d of ['home', 'mnesia', 'log']) mkdirSync(join(n.dir, d), { recursive: true });
    writeFileSync(join(n.dir, 'home', '.erlang.cookie'), this.cookie, { mode: 0o400 });
    writeFileSync(join(n.dir, 'enabled_plugins'), '[rabbitmq_stream].\n');
    // An empty env file: /etc/rabbitmq/rabbitmq-env.conf names the machine's broker.
    writeFileSync(join(n.dir, 'rabbitmq-env.conf'), '');
    writeFileSync(
      join(n.dir, 'rabbitmq.conf'),
      [
        `listeners.tcp.default = ${n.host}:${n.amqpPort}`,
        `stream.listeners.tcp.1 = ${n.host}:${n.streamPort}`,
        `stream.advertised_host = ${n.host}`,
        `stream.advertised_port = ${n.streamPort}`,
        // A node that sees at most half of the cluster pauses (closes its clients' connections, stops listening)
        // rather than serve without a quorum: clients then fail over to the majority or report not ready.
        `cluster_partition_handling = ${process.env.RABBIT_PARTITION_HANDLING ?? 'pause_minority'}`,
        'cluster_formation.peer_discovery_backend = classic_config',
        ...this.nodes.map((m) => `cluster_formation.classic_config.nodes.${m.index} = ${m.name}`),
        // Without registration locks the discovery waits a random 5-60 s by default, against two blank nodes
        // forming two clusters at once; here the first node is up before the others start.
        'cluster_formation.randomized_startup_delay_range.min = 0',
        'cluster_formation.randomized_startup_delay_range.max = 1',
        'log.console = false',
        'log.file.level = info',
        // The machine's disk and memory are shared: no alarm should block publishers during a test.
        'disk_free_limit.absolute = 10MB',
        '',
      ].join('\n'),
    );
  }

  private env(n: NodeSpec): NodeJS.ProcessEnv {
    return {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: join(n.dir, 'home'),
      LANG: 'C.UTF-8',
      RABBITMQ_CONF_ENV_FILE: join(n.dir, 'rabbitmq-env.conf'),
      RABBITMQ_NODENAME: n.name,
      RABBITMQ_NODE_IP_ADDRESS: n.host,
      RABBITMQ_NODE_PORT: String(n.amqpPort),
      RABBITMQ_DIST_PORT: String(n.distPort),
      RABBITMQ_MNESIA_BASE: join(n.dir, 'mnesia'),
      RABBITMQ_LOG_BASE: join(n.dir, 'log'),
      RABBITMQ_PID_FILE: join(n.dir, 'beam.pid'),
      RABBITMQ_CONFIG_FILE: join(n.dir, 'rabbitmq.conf'),
      RABBITMQ_ADVANCED_CONFIG_FILE: join(n.dir, 'advanced.config'),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(n.dir, 'enabled_plugins'),
      // Distribution on the loopback only, like the machine's broker.
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
      RABBITMQ_CTL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
    };
  }
}
