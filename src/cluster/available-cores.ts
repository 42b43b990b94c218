import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';

type Read = (path: string) => string | undefined;

const readText: Read = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};

/**
 * The cores this process may use: the CPUs it may run on (`os.availableParallelism()`, which honours the cpuset),
 * bounded by the CPU quota of its cgroup when one is set (`docker run --cpus=2`, a Kubernetes CPU limit). A quota is
 * a share of time, not a set of CPUs, so Node cannot see it: a container limited to 2 CPUs on a 64-core host would
 * otherwise fork 64 workers that the kernel then throttles. A fraction of a core rounds down (never below 1).
 */
export function availableCores(read: Read = readText, parallelism = availableParallelism()): number {
  const quota = cgroupCpuQuota(read);
  return Math.max(1, quota === undefined ? parallelism : Math.min(parallelism, Math.floor(quota)));
}

/**
 * The tightest CPU quota (in cores) of this process's cgroup and its ancestors, or undefined when none is set.
 * cgroup v2: `cpu.max` ("max 100000" or "<quota> <period>"); v1: `cpu.cfs_quota_us` (-1 = none) / `cpu.cfs_period_us`.
 */
export function cgroupCpuQuota(read: Read = readText): number | undefined {
  const membership = read('/proc/self/cgroup') ?? '';
  let tightest: number | undefined;
  const consider = (cores: number | undefined): void => {
    if (cores !== undefined && cores > 0 && (tightest === undefined || cores < tightest)) tightest = cores;
  };
  for (const line of membership.split('\n')) {
    const [, controllers, path] = /^\d+:([^:]*):(.*)$/.exec(line.trim()) ?? [];
    if (path === undefined) continue;
    if (controllers === '') {
      // cgroup v2 (unified). Inside a container with its own cgroup namespace the path is "/".
      for (const dir of ancestors('/sys/fs/cgroup', path)) {
        const [quota, period] = (read(join(dir, 'cpu.max')) ?? '').trim().split(/\s+/);
        if (quota !== undefined && quota !== 'max' && period !== undefined) consider(Number(quota) / Number(period));
      }
    } else if (controllers.split(',').includes('cpu')) {
      for (const mount of ['/sys/fs/cgroup/cpu', `/sys/fs/cgroup/${controllers}`]) {
        for (const dir of ancestors(mount, path)) {
          const quota = Number(read(join(dir, 'cpu.cfs_quota_us')));
          const period = Number(read(join(dir, 'cpu.cfs_period_us')));
          if (quota > 0 && period > 0) consider(quota / period);
        }
      }
    }
  }
  return tightest;
}

/** `root + path` and each of its parents up to `root` (a parent's quota also applies). */
function ancestors(root: string, path: string): string[] {
  const dirs: string[] = [];
  let dir = join(root, path);
  while (dir.startsWith(root)) {
    dirs.push(dir);
    if (dir === root) break;
    dir = dirname(dir);
  }
  return dirs;
}
