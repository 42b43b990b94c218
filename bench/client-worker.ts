/**
 * A client process of the benchmark (forked by `run.ts`): holds many WebSocket clients (`ws`), opens them at a
 * given rate, and accounts for every event they receive (latency, missing, duplicated, reordered), answering
 * the orchestrator's commands over the IPC channel. One process holds at most a few thousand sockets: open
 * files are capped at 20,000 per process, and several processes spread the client work over both cores.
 *
 * Events are found by scanning the frame text for `"seq":` and `"sent_at_ns":` instead of `JSON.parse`:
 * the publisher writes both fields in every event, and scanning keeps the clients' CPU share (which the
 * server competes with on this machine) as small as possible. A `batch` frame holds several events, so
 * several matches: we count events, not frames.
 */
import { WebSocket } from 'ws';
import type { ChannelTally, ChurnResult, CollectResult, ConnectResult, SocketSpec, WorkerCommand, WorkerReply } from './lib/ipc';
import { monoNs, nowMs } from './lib/stats';
import { accessToken } from './lib/token';

interface Client {
  spec: SocketSpec;
  ws: WebSocket;
  port: string;
  /** Bitmap of the `seq` numbers received since the last reset (seq starts at 1 per channel and phase). */
  seen: Uint8Array;
  distinct: number;
  received: number;
  frames: number;
  duplicates: number;
  reordered: number;
  maxSeq: number;
  closedByUs: boolean;
}

const clients: Client[] = [];
let recordLatency = false;
let latencies: number[] = [];
/** When each latency sample's event was published (CLOCK_MONOTONIC ms), for the latency by second of the run. */
let sentMs: number[] = [];
const receivedByPort: Record<string, number> = {};
let unexpected: Record<string, number> = {};
let trackTimer: NodeJS.Timeout | undefined;
/** Connect timings of the current `connect` or `churn` command. */
const timings = { connectMs: [] as number[], openToFrameMs: [] as number[] };

function send(reply: WorkerReply): void {
  process.send?.(reply);
}

function bump(counts: Record<string, number>, key: string): void {
  counts[key] = (counts[key] ?? 0) + 1;
}

/** Reads the non-negative integer written at `from` (digits only, as JSON.stringify writes them). */
function readNumber(s: string, from: number): number {
  let end = from;
  while (end < s.length) {
    const c = s.charCodeAt(end);
    if (c < 48 || c > 57) break;
    end++;
  }
  return Number(s.slice(from, end));
}

const SEQ = '"seq":';
const SENT = '"sent_at_ns":';

function account(c: Client, text: string): void {
  let i = text.indexOf(SEQ);
  if (i < 0) return;
  c.frames++;
  let j = recordLatency ? text.indexOf(SENT) : -1;
  const nowNs = recordLatency ? Number(monoNs()) : 0;
  while (i >= 0) {
    const seq = readNumber(text, i + SEQ.length);
    c.received++;
    receivedByPort[c.port] = (receivedByPort[c.port] ?? 0) + 1;
    if (seq >= c.seen.length) {
      const grown = new Uint8Array(Math.max(seq + 1, c.seen.length * 2));
      grown.set(c.seen);
      c.seen = grown;
    }
    if (c.seen[seq]) c.duplicates++;
    else {
      c.seen[seq] = 1;
      c.distinct++;
      if (seq < c.maxSeq) c.reordered++;
      else c.maxSeq = seq;
    }
    if (j >= 0) {
      const sent = readNumber(text, j + SENT.length);
      latencies.push((nowNs - sent) / 1e6);
      sentMs.push(sent / 1e6);
      j = text.indexOf(SENT, j + SENT.length);
    }
    i = text.indexOf(SEQ, i + SEQ.length);
  }
}

/**
 * Opens one socket; resolves when its `connection` frame arrives (with the timings) or when it fails.
 * Every frame after the first goes to `account`.
 */
function open(spec: SocketSpec, secret: string, keep: boolean): Promise<Client | string> {
  const started = nowMs();
  let openedAt = NaN;
  const sep = spec.url.includes('?') ? '&' : '?';
  const ws = new WebSocket(`${spec.url}${sep}token=${accessToken(secret, spec.userId)}`, {
    perMessageDeflate: false,
    skipUTF8Validation: true,
    handshakeTimeout: 30_000,
  });
  const port = new URL(spec.url).port;
  const c: Client = {
    spec,
    ws,
    port,
    seen: new Uint8Array(64),
    distinct: 0,
    received: 0,
    frames: 0,
    duplicates: 0,
    reordered: 0,
    maxSeq: 0,
    closedByUs: false,
  };
  return new Promise((resolve) => {
    let connected = false;
    ws.on('open', () => (openedAt = nowMs()));
    ws.on('message', (data: Buffer) => {
      const text = data.toString('utf8');
      if (connected) return account(c, text);
      if (!text.startsWith('{"type":"connection"') && !text.includes('"type":"connection"')) {
        return resolve(`first_frame_not_connection`);
      }
      connected = true;
      timings.connectMs.push(nowMs() - started);
      timings.openToFrameMs.push(nowMs() - openedAt);
      if (keep) clients.push(c);
      resolve(c);
    });
    ws.on('error', (err: Error & { code?: string }) => {
      if (!connected) resolve(`error_${err.code ?? err.message}`);
      else bump(unexpected, `error_${err.code ?? err.message}`);
    });
    ws.on('close', (code) => {
      if (!connected) resolve(`close_${code}`);
      else if (!c.closedByUs) bump(unexpected, `close_${code}`);
    });
  });
}

/**
 * At most this many handshakes in flight per worker. Without a bound, a server slower than the connect rate
 * gets an ever longer listen queue, SYN retransmits and handshake time-outs, and "held N" stops meaning
 * anything; with it, an overloaded server shows as a lower achieved connect rate and longer connect times.
 * 100 × 4 workers stays under Node's default listen backlog (511), so the kernel never drops a SYN of ours.
 */
const MAX_IN_FLIGHT = 100;

/** Opens `specs` spread evenly over time at `ratePerSec` at most (slower if MAX_IN_FLIGHT are pending). */
async function openAtRate(
  specs: SocketSpec[],
  ratePerSec: number,
  secret: string,
  keep: boolean,
  onOpened?: (c: Client) => void,
  onFailed?: (spec: SocketSpec) => void,
): Promise<Record<string, number>> {
  const errors: Record<string, number> = {};
  const pending: Promise<void>[] = [];
  let inFlight = 0;
  let slotFreed: (() => void) | undefined;
  const t0 = nowMs();
  for (let k = 0; k < specs.length; k++) {
    const due = t0 + (k * 1000) / ratePerSec;
    const wait = due - nowMs();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    while (inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => (slotFreed = r));
    inFlight++;
    pending.push(
      open(specs[k], secret, keep).then((r) => {
        inFlight--;
        slotFreed?.();
        if (typeof r === 'string') {
          bump(errors, r);
          onFailed?.(specs[k]);
        } else onOpened?.(r);
      }),
    );
  }
  await Promise.all(pending);
  return errors;
}

async function connect(cmd: Extract<WorkerCommand, { cmd: 'connect' }>): Promise<void> {
  timings.connectMs = [];
  timings.openToFrameMs = [];
  const before = clients.length;
  const t0 = nowMs();
  // Failed sockets are counted as errors, then opened again (up to `retries` more passes), so that a
  // scenario that needs N subscribers gets them even from a server that refused some under the connect storm.
  const errors: Record<string, number> = {};
  let todo = cmd.sockets;
  for (let pass = 0; pass <= cmd.retries && todo.length > 0; pass++) {
    const failed: SocketSpec[] = [];
    const passErrors = await openAtRate(todo, cmd.ratePerSec, cmd.secret, true, undefined, (spec) => failed.push(spec));
    for (const [k, v] of Object.entries(passErrors)) errors[k] = (errors[k] ?? 0) + v;
    todo = failed;
  }
  const reply: ConnectResult = {
    ev: 'connected',
    seconds: (nowMs() - t0) / 1000,
    opened: clients.length - before,
    failed: cmd.sockets.length - (clients.length - before),
    connectMs: timings.connectMs,
    openToFrameMs: timings.openToFrameMs,
    errors,
  };
  send(reply);
}

/**
 * Churn: opens sockets at `ratePerSec` for `durationMs`, each closed by us `holdMs` after its `connection`
 * frame; the specs are used round-robin.
 */
async function churn(cmd: Extract<WorkerCommand, { cmd: 'churn' }>): Promise<void> {
  timings.connectMs = [];
  timings.openToFrameMs = [];
  const count = Math.round((cmd.ratePerSec * cmd.durationMs) / 1000);
  const specs = Array.from({ length: count }, (_, k) => cmd.sockets[k % cmd.sockets.length]);
  let completed = 0;
  const closes: Promise<void>[] = [];
  const errors = await openAtRate(specs, cmd.ratePerSec, cmd.secret, false, (c) => {
    closes.push(
      new Promise((resolve) => {
        setTimeout(() => {
          c.closedByUs = true;
          c.ws.once('close', () => {
            completed++;
            resolve();
          });
          c.ws.close(1000);
        }, cmd.holdMs);
      }),
    );
  });
  await Promise.all(closes);
  const reply: ChurnResult = {
    ev: 'churned',
    attempted: count,
    completed,
    errors,
    connectMs: timings.connectMs,
  };
  send(reply);
}

function reset(record: boolean): void {
  recordLatency = record;
  latencies = [];
  sentMs = [];
  unexpected = {};
  for (const k of Object.keys(receivedByPort)) delete receivedByPort[k];
  for (const c of clients) {
    c.seen = new Uint8Array(64);
    c.distinct = c.received = c.frames = c.duplicates = c.reordered = c.maxSeq = 0;
  }
  send({ ev: 'reset' });
}

/** Reports, per channel, the fewest distinct events any of our sockets on it has received (closed loop). */
function track(everyMs: number): void {
  clearInterval(trackTimer);
  trackTimer = setInterval(() => {
    const min: Record<string, number> = {};
    for (const c of clients) {
      const m = min[c.spec.channel];
      if (m === undefined || c.distinct < m) min[c.spec.channel] = c.distinct;
    }
    send({ ev: 'progress', min });
  }, everyMs);
}

function collect(published: Record<string, number>): void {
  const channels: Record<string, ChannelTally> = {};
  for (const c of clients) {
    const t = (channels[c.spec.channel] ??= {
      sockets: 0,
      received: 0,
      duplicates: 0,
      reordered: 0,
      missing: 0,
      frames: 0,
    });
    const expected = published[c.spec.channel] ?? 0;
    let distinctInRange = 0;
    for (let s = 1; s <= expected && s < c.seen.length; s++) distinctInRange += c.seen[s];
    t.sockets++;
    t.received += c.received;
    t.duplicates += c.duplicates;
    t.reordered += c.reordered;
    t.missing += expected - distinctInRange;
    t.frames += c.frames;
  }
  const reply: CollectResult = {
    ev: 'collected',
    latencyMs: latencies,
    sentMs,
    channels,
    receivedByPort: { ...receivedByPort },
    unexpected,
  };
  send(reply);
}

async function closeAll(): Promise<void> {
  const closing = clients.map(
    (c) =>
      new Promise<void>((resolve) => {
        c.closedByUs = true;
        if (c.ws.readyState === WebSocket.CLOSED) return resolve();
        const timer = setTimeout(() => {
          c.ws.terminate();
          resolve();
        }, 5000);
        c.ws.once('close', () => {
          clearTimeout(timer);
          resolve();
        });
        c.ws.close(1000);
      }),
  );
  await Promise.all(closing);
  clients.length = 0;
  send({ ev: 'closed' });
}

process.on('message', (msg: WorkerCommand) => {
  switch (msg.cmd) {
    case 'connect':
      void connect(msg);
      break;
    case 'reset':
      reset(msg.recordLatency);
      break;
    case 'track':
      track(msg.everyMs);
      break;
    case 'untrack':
      clearInterval(trackTimer);
      break;
    case 'collect':
      collect(msg.published);
      break;
    case 'closeAll':
      void closeAll();
      break;
    case 'churn':
      void churn(msg);
      break;
    case 'exit':
      process.exit(0);
  }
});
process.on('disconnect', () => process.exit(0));
send({ ev: 'ready' });
