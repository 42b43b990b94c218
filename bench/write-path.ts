/**
 * `node bench/dist/write-path.js` (after `npm run build` and `tsc -p bench/tsconfig.json`): the fan-out write path
 * alone, in one process, without a broker. 200 sockets (clients in a forked process), 2,000 events of ~300 bytes,
 * each written to every socket either with `ws.send()` (what the service did, and what the baseline hub does) or as
 * the service does now: one prepared frame (`dist/gateway/ws-frame.js`) and one `socket.write` per socket.
 *
 * Prints the server's CPU µs per delivery and, when run with `node --trace-gc-nvp`, the bytes allocated per delivery
 * can be summed from the `allocated=` fields of its scavenges (see bench/README.md).
 */
import { fork } from 'node:child_process';
import { createServer } from 'node:http';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer } from 'ws';

const SOCKETS = 200;
const EVENTS = 2000;

if (process.argv[2] === 'client') {
  const port = Number(process.argv[3]);
  let got = 0;
  for (let i = 0; i < SOCKETS; i++) {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`);
    ws.on('message', () => {
      if (++got === SOCKETS * EVENTS) process.send?.('done');
    });
  }
} else {
  const mode = process.argv[2] === 'send' ? 'send' : 'prepared';
  // The service's build, not its source: bench/ compiles on its own (as the startup scenario reads dist/messaging).
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { textFrame } = require(join(__dirname, '..', '..', 'dist', 'gateway', 'ws-frame.js')) as { textFrame: (payload: Buffer) => Buffer };
  const sockets: { ws: WebSocket; socket: Duplex }[] = [];
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
  const server = createServer();
  server.on('upgrade', (req, socket: Duplex, head: Buffer) => wss.handleUpgrade(req, socket, head, (ws) => sockets.push({ ws, socket })));
  server.listen(0, '127.0.0.1', () => {
    const address = server.address();
    const port = typeof address === 'object' && address !== null ? address.port : 0;
    const child = fork(__filename, ['client', String(port)]);
    const start = setInterval(() => {
      if (sockets.length < SOCKETS) return;
      clearInterval(start);
      const cpu0 = process.cpuUsage();
      let e = 0;
      child.once('message', () => {
        const cpu = process.cpuUsage(cpu0);
        console.log(`${mode}: ${SOCKETS * EVENTS} deliveries, ${((cpu.user + cpu.system) / (SOCKETS * EVENTS)).toFixed(2)} µs server CPU per delivery`);
        child.kill();
        process.exit(0);
      });
      const tick = (): void => {
        for (let k = 0; k < 20 && e < EVENTS; k++, e++) {
          const payload = Buffer.from(JSON.stringify({ type: 'log_entry', seq: e, message: 'bench line '.repeat(20) }));
          for (const s of sockets) {
            if (mode === 'send') s.ws.send(payload, { binary: false });
            else s.socket.write(textFrame(payload));
          }
        }
        if (e < EVENTS) setImmediate(tick);
      };
      tick();
    }, 50);
  });
}
