// @ts-check
/**
 * A child process holding many WebSocket client connections, driven by its parent over IPC. Plain JavaScript
 * because it is forked by jest tests and by scripts/soak.ts alike, without a TypeScript loader; each process can
 * hold up to ~19,000 sockets (20,000 open files per process).
 *
 * Commands (parent → child), each answered by one message with the same `cmd`:
 *   {cmd:'open', url, n, localAddress?, concurrency?}  open n sockets, each counted once greeted (`connection`)
 *   {cmd:'drop'}                                         destroy every TCP socket at once (no close frame)
 *   {cmd:'reconnect', baseMs, capMs, deadlineMs?}        reopen every dropped socket with full-jitter back-off
 *   {cmd:'churn', n}                                     close n sockets normally and open n new ones
 *   {cmd:'stats'}                                        sockets open, events received
 *   {cmd:'exit'}
 */
const path = require('node:path');
const WebSocket = require(path.join(__dirname, '..', '..', 'node_modules', 'ws'));

/** @type {Set<import('ws').WebSocket>} */
const open = new Set();
let url = '';
let localAddress = /** @type {string | undefined} */ (undefined);
let events = 0;
let dropped = 0;

/** Open one socket; resolves true once greeted, false on failure (refused, closed before the greeting). */
function connectOne() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { localAddress, handshakeTimeout: 15_000 });
    let greeted = false;
    ws.on('message', () => {
      if (!greeted) {
        greeted = true;
        open.add(ws);
        resolve(true);
      } else events++;
    });
    ws.on('error', () => undefined);
    ws.on('close', () => {
      open.delete(ws);
      if (!greeted) resolve(false);
    });
  });
}

/** Open `n` sockets with at most `concurrency` handshakes in flight; returns how many failed (after retries). */
async function openMany(n, concurrency) {
  let next = 0;
  let failed = 0;
  const lane = async () => {
    while (next < n) {
      next++;
      let ok = false;
      for (let attempt = 0; attempt < 5 && !ok; attempt++) {
        ok = await connectOne();
        if (!ok) await sleep(Math.random() * 100 * 2 ** attempt);
      }
      if (!ok) failed++;
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, lane));
  return failed;
}

/**
 * Reopen `n` sockets, each after a full-jitter back-off (random in [0, min(cap, base·2^attempt)]), as the
 * service's client library does; a socket that is still not open when `deadlineMs` has passed counts as failed.
 */
async function reconnect(n, baseMs, capMs, deadlineMs) {
  const deadline = Date.now() + deadlineMs;
  let attempts = 0;
  let failed = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      for (let attempt = 0; Date.now() < deadline; attempt++) {
        await sleep(Math.random() * Math.min(capMs, baseMs * 2 ** attempt));
        attempts++;
        if (await connectOne()) return;
      }
      failed++;
    }),
  );
  return { attempts, failed };
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

process.on('message', async (/** @type {any} */ msg) => {
  const reply = (/** @type {Record<string, unknown>} */ body) => process.send?.({ cmd: msg.cmd, ...body });
  const t0 = Date.now();
  switch (msg.cmd) {
    case 'open': {
      url = msg.url;
      localAddress = msg.localAddress;
      const failed = await openMany(msg.n, msg.concurrency ?? 100);
      reply({ open: open.size, failed, ms: Date.now() - t0 });
      break;
    }
    case 'drop': {
      dropped = open.size;
      // A killed laptop or a cut network: the TCP socket goes away without a WebSocket close frame.
      for (const ws of open) /** @type {any} */ (ws)._socket?.destroy();
      open.clear();
      reply({ dropped });
      break;
    }
    case 'reconnect': {
      const r = await reconnect(dropped, msg.baseMs, msg.capMs, msg.deadlineMs ?? 120_000);
      reply({ open: open.size, ...r, ms: Date.now() - t0 });
      break;
    }
    case 'churn': {
      const victims = [...open].slice(0, msg.n);
      for (const ws of victims) ws.close(1000);
      const failed = await openMany(victims.length, 50);
      reply({ open: open.size, failed, ms: Date.now() - t0 });
      break;
    }
    case 'stats':
      reply({ open: open.size, events });
      break;
    case 'exit':
      for (const ws of open) ws.terminate();
      reply({});
      setImmediate(() => process.exit(0));
      break;
  }
});
