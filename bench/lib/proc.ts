import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';

/** Resident memory of a process in KB (VmRSS of /proc/<pid>/status), or NaN once it has gone. */
export function rssKb(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : NaN;
  } catch {
    return NaN;
  }
}

const CLOCK_TICKS_PER_SECOND = 100; // USER_HZ: 100 on every Linux architecture Node runs on.

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat fields 14 and 15. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may hold spaces and parentheses: count fields after its closing ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS_PER_SECOND;
  } catch {
    return NaN;
  }
}

/** A TCP port free right now on 127.0.0.1 (the kernel picks it; we release it for the server to take). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Connections the kernel refused because a listen queue was full (TcpExt ListenOverflows, machine-wide):
 * each costs the client a SYN retransmit (1 s, then 3 s), which is what a multi-second connect time means.
 */
export function listenOverflows(): number {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
    const names = lines.find((l) => l.startsWith('TcpExt:'))?.split(' ') ?? [];
    const values = lines.filter((l) => l.startsWith('TcpExt:'))[1]?.split(' ') ?? [];
    const i = names.indexOf('ListenOverflows');
    return i > 0 ? Number(values[i]) : NaN;
  } catch {
    return NaN;
  }
}

/** 1-minute load average and the share of time some task waited for a CPU (PSI), to tell a busy machine. */
export function machineLoad(): { loadavg1: number; cpu_pressure_avg10: number } {
  const read = (path: string): string => {
    try {
      return readFileSync(path, 'utf8');
    } catch {
      return '';
    }
  };
  return {
    loadavg1: Number(read('/proc/loadavg').split(' ')[0]),
    cpu_pressure_avg10: Number(/some avg10=([\d.]+)/.exec(read('/proc/pressure/cpu'))?.[1] ?? NaN),
  };
}
