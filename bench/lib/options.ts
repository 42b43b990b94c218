import type { Mode } from './context';
import type { HubKind } from './hubs';

export const SCENARIOS = ['capacity', 'latency', 'fanout', 'churn', 'multi', 'startup', 'workers'] as const;
export type Scenario = (typeof SCENARIOS)[number];

/** Every knob of a run; defaults are the figures, `--quick` shrinks them to a smoke run. */
export interface Options {
  only: Scenario[];
  targets: HubKind[];
  json: string;
  quick: boolean;
  workers: number;
  secret: string;
  apiKey: string;
  rabbitUrl: string;
  serviceEnv: Record<string, string>;
  baselineEnv: Record<string, string>;
  /** Node flags for the service process, e.g. `--cpu-prof` (not allowed in NODE_OPTIONS). */
  serviceNodeArgs: string[];
  /** Run the service built in this folder (its dist/main.js), e.g. an earlier commit, for a before/after. */
  serviceRoot: string | undefined;
  /** `fresh` (empty exchange) and/or `history` (pre-filled, as deployed); every scenario runs in each. */
  modes: Mode[];
  historyEvents: number;
  historyChannels: number;
  /** Runs of the whole plan; the table shows medians, the JSON every run. */
  repeat: number;
  /** capacity: connection counts held in turn (incrementally). */
  connections: number[];
  connectRate: number;
  capacityChannels: number;
  /** latency (and multi): subscribers, channels, events/s, seconds. */
  latencySubscribers: number;
  latencyChannels: number;
  latencyRate: number;
  latencySeconds: number;
  /** fanout: subscribers, channels, seconds measured (after a warm-up), events in flight per channel. */
  fanoutSubscribers: number;
  fanoutChannels: number;
  fanoutSeconds: number;
  fanoutWarmupSeconds: number;
  window: number;
  /** churn: connects/s, how long each churning socket stays, seconds, steady subscribers, events/s. */
  churnRate: number;
  churnHoldMs: number;
  churnSeconds: number;
  churnSubscribers: number;
  churnEventRate: number;
  settleSeconds: number;
  /** startup: events in the replay window, measured in turn (the stream grows between them). */
  startupSizes: number[];
  /** startup: how the stream is filled (see bench/scenarios/startup.ts), each into its own stream. */
  startupFills: StartupFill[];
}

export const STARTUP_FILLS = ['batched', 'publishers'] as const;
export type StartupFill = (typeof STARTUP_FILLS)[number];

const HELP = `npm run bench -- [flags]
  --only LIST            scenarios, comma-separated: ${SCENARIOS.join(',')} (default: all)
  --targets LIST         service,baseline (default both)
  --quick                smoke run: small numbers, under a minute
  --json PATH            results file (default bench/results/latest.json)
  --workers N            client processes (default 4)
  --connections LIST     capacity: connection counts held in turn (default 10000,19000)
  --connect-rate N       connects/s in capacity, latency, fanout set-up (default 1000)
  --settle S             seconds a hub is left alone before idle RSS is read and after each ramp (default 5)
  --latency-rate N       latency: events/s (default 500)   --latency-seconds N (default 20)
  --fanout-seconds N     fanout: measured seconds per mode (default 15)
  --window N             fanout: events in flight per channel (default 10)
  --churn-rate N         churn: connects/s (default 200)  --churn-seconds N (default 20)
  --modes LIST           fresh,history (default both): history = the exchange pre-filled before the hub starts
  --history-events N     events pre-filled in history mode (default 200000)  --history-channels N (default 2000)
  --repeat N             run everything N times; the table shows medians (default 1)
  --startup-sizes LIST   startup: events in the replay window (default 100000,500000,1000000)
  --startup-fill LIST    startup: batched (confirms per 10,000: big chunks, the broker's best case), publishers
                         (8 publishers awaiting each confirm, as Django does: small chunks) (default both)
  --service-env K=V      extra environment for the service (repeatable)
  --baseline-env K=V     extra environment for the baseline hub (repeatable): BASELINE_SOURCE=stream reads a stream
                         over AMQP 0-9-1, the service's transport, instead of a classic queue
  --service-node-args S  node flags for the service, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"
  --service-root DIR     run the service built in DIR (DIR/dist/main.js: another commit, for a before/after)`;

export function parseOptions(argv: string[]): Options {
  const quick = argv.includes('--quick');
  const o: Options = {
    only: [...SCENARIOS],
    targets: ['service', 'baseline'],
    json: 'bench/results/latest.json',
    quick,
    workers: quick ? 2 : 4,
    secret: 'bench-secret-0123456789abcdef0123456789abcdef',
    apiKey: 'bench-publish-key',
    rabbitUrl: process.env.RABBITMQ_URL ?? 'amqp://guest:guest@127.0.0.1:5672',
    serviceEnv: {},
    baselineEnv: {},
    serviceNodeArgs: [],
    serviceRoot: undefined,
    modes: ['fresh', 'history'],
    historyEvents: quick ? 5000 : 200_000,
    historyChannels: quick ? 100 : 2000,
    repeat: 1,
    connections: quick ? [500] : [10_000, 19_000],
    connectRate: 1000,
    capacityChannels: quick ? 100 : 1000,
    latencySubscribers: quick ? 200 : 1000,
    latencyChannels: quick ? 20 : 100,
    latencyRate: quick ? 200 : 500,
    latencySeconds: quick ? 1.5 : 20,
    fanoutSubscribers: quick ? 300 : 5000,
    fanoutChannels: 10,
    fanoutSeconds: quick ? 1 : 15,
    fanoutWarmupSeconds: quick ? 0.5 : 3,
    window: 10,
    churnRate: quick ? 50 : 200,
    churnHoldMs: 1000,
    churnSeconds: quick ? 1.5 : 20,
    churnSubscribers: quick ? 100 : 500,
    churnEventRate: quick ? 50 : 100,
    settleSeconds: quick ? 0.3 : 5,
    startupSizes: [100_000, 500_000, 1_000_000],
    startupFills: [...STARTUP_FILLS],
  };
  const list = (v: string): string[] =>
    v
      .split(',')
      .map((s) => s.trim())
      .filter(Boolean);
  const num = (flag: string, v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag}: not a positive number: ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (flag === '--quick') continue;
    if (flag === '--help' || flag === '-h') {
      console.log(HELP);
      process.exit(0);
    }
    const v = argv[++i];
    if (v === undefined) throw new Error(`${flag} needs a value\n${HELP}`);
    switch (flag) {
      case '--only': {
        const names = list(v);
        const bad = names.filter((n) => !(SCENARIOS as readonly string[]).includes(n));
        if (bad.length) throw new Error(`--only: unknown scenario(s) ${bad.join(',')}`);
        o.only = names as Scenario[];
        break;
      }
      case '--targets':
        o.targets = list(v).filter((t): t is HubKind => t === 'service' || t === 'baseline');
        break;
      case '--modes': {
        const modes = list(v);
        const bad = modes.filter((m) => m !== 'fresh' && m !== 'history');
        if (bad.length) throw new Error(`--modes: unknown mode(s) ${bad.join(',')}`);
        o.modes = modes as Mode[];
        break;
      }
      case '--history-events':
        o.historyEvents = num(flag, v);
        break;
      case '--history-channels':
        o.historyChannels = num(flag, v);
        break;
      case '--repeat':
        o.repeat = num(flag, v);
        break;
      case '--json':
        o.json = v;
        break;
      case '--workers':
        o.workers = num(flag, v);
        break;
      case '--connections':
        o.connections = list(v).map((x) => num(flag, x));
        break;
      case '--startup-sizes':
        o.startupSizes = list(v).map((x) => num(flag, x));
        break;
      case '--startup-fill':
        o.startupFills = list(v).map((x) => {
          if (!(STARTUP_FILLS as readonly string[]).includes(x)) throw new Error(`--startup-fill: unknown fill ${x} (${STARTUP_FILLS.join(', ')})`);
          return x as StartupFill;
        });
        break;
      case '--connect-rate':
        o.connectRate = num(flag, v);
        break;
      case '--settle':
        o.settleSeconds = num(flag, v);
        break;
      case '--latency-rate':
        o.latencyRate = num(flag, v);
        break;
      case '--latency-seconds':
        o.latencySeconds = num(flag, v);
        break;
      case '--fanout-seconds':
        o.fanoutSeconds = num(flag, v);
        break;
      case '--window':
        o.window = num(flag, v);
        break;
      case '--churn-rate':
        o.churnRate = num(flag, v);
        break;
      case '--churn-seconds':
        o.churnSeconds = num(flag, v);
        break;
      case '--service-root':
        o.serviceRoot = v;
        break;
      case '--service-node-args':
        o.serviceNodeArgs = v.split(' ').filter(Boolean);
        break;
      case '--service-env':
      case '--baseline-env': {
        const eq = v.indexOf('=');
        if (eq < 1) throw new Error(`${flag} wants K=V, got ${v}`);
        (flag === '--service-env' ? o.serviceEnv : o.baselineEnv)[v.slice(0, eq)] = v.slice(eq + 1);
        break;
      }
      default:
        throw new Error(`unknown flag ${flag}\n${HELP}`);
    }
  }
  // Each client process may hold at most 20,000 open files; keep a margin for its other descriptors.
  const most = Math.max(...o.connections, o.fanoutSubscribers);
  o.workers = Math.max(o.workers, Math.ceil(most / 15_000));
  return o;
}
