import { availableCores, cgroupCpuQuota } from './available-cores';

function files(map: Record<string, string>): (path: string) => string | undefined {
  return (path) => map[path];
}

describe('availableCores', () => {
  it('uses the CPUs Node sees when no quota is set', () => {
    const read = files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': 'max 100000\n' });
    expect(cgroupCpuQuota(read)).toBeUndefined();
    expect(availableCores(read, 8)).toBe(8);
  });

  it('is bounded by a cgroup v2 quota, a fraction rounding down, never below 1', () => {
    expect(availableCores(files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '200000 100000\n' }), 64)).toBe(2);
    expect(availableCores(files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '250000 100000\n' }), 64)).toBe(2);
    expect(availableCores(files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '50000 100000\n' }), 64)).toBe(1);
    expect(availableCores(files({ '/proc/self/cgroup': '0::/\n', '/sys/fs/cgroup/cpu.max': '800000 100000\n' }), 4)).toBe(4);
  });

  it('takes the tightest quota of the cgroup and its ancestors (v2)', () => {
    const read = files({
      '/proc/self/cgroup': '0::/kubepods/pod1/c1\n',
      '/sys/fs/cgroup/kubepods/pod1/c1/cpu.max': 'max 100000',
      '/sys/fs/cgroup/kubepods/pod1/cpu.max': '300000 100000',
      '/sys/fs/cgroup/kubepods/cpu.max': '1600000 100000',
    });
    expect(cgroupCpuQuota(read)).toBe(3);
  });

  it('reads a cgroup v1 cfs quota (-1 = none)', () => {
    const v1 = (quota: string): ((path: string) => string | undefined) =>
      files({
        '/proc/self/cgroup': '4:memory:/x\n1:cpu,cpuacct:/docker/abc\n0::/\n',
        '/sys/fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us': quota,
        '/sys/fs/cgroup/cpu/docker/abc/cpu.cfs_period_us': '100000',
      });
    expect(availableCores(v1('150000'), 16)).toBe(1);
    expect(availableCores(v1('400000'), 16)).toBe(4);
    expect(cgroupCpuQuota(v1('-1'))).toBeUndefined();
  });
});
