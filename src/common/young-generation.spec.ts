import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ModuleKind, transpileModule } from 'typescript';

/**
 * The young generation's size can only be seen in a fresh process (jest's own has long grown it), so the module
 * runs, transpiled, in a child node that allocates objects which all survive, as loading modules does.
 */
describe('young generation hold', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'young-generation-'));
    const source = readFileSync(join(__dirname, 'young-generation.ts'), 'utf8');
    writeFileSync(join(dir, 'young-generation.js'), transpileModule(source, { compilerOptions: { module: ModuleKind.CommonJS } }).outputText);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  /** Young generation size (bytes) after 24 MB of surviving objects, held and then released. */
  function run(args: string[] = []): { held: number; released: number } {
    const script = `
      const v8 = require('node:v8');
      const yg = require(${JSON.stringify(join(dir, 'young-generation.js'))});
      const keep = [];
      const grow = (mb) => { for (let i = 0; i < mb * 1024; i++) keep.push({ i, s: 'x'.repeat(1000) + i }); };
      const young = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === 'new_space').space_size;
      yg.holdYoungGeneration();
      grow(24);
      const held = young();
      yg.releaseYoungGeneration();
      grow(24);
      process.stdout.write(JSON.stringify({ held, released: young() }));`;
    return JSON.parse(execFileSync(process.execPath, [...args, '-e', script], { encoding: 'utf8' })) as { held: number; released: number };
  }

  it('keeps the semi-spaces at their initial 1 MB while held, and lets them grow once released', () => {
    const { held, released } = run();
    expect(held).toBeLessThanOrEqual(2 * 2 ** 20);
    expect(released).toBeGreaterThan(4 * 2 ** 20);
  });

  it('leaves a growth factor given on the command line alone', () => {
    expect(run(['--semi-space-growth-factor=4']).held).toBeGreaterThan(2 * 2 ** 20);
  });
});
