import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

// bin/load-ts.mjs, which every command and the benchmark run through: it compiles on change and
// keeps its cache from growing with every edit.
describe('the TypeScript loader', () => {
  const dir = path.join(root, 'test', `.load-ts-${process.pid}`);
  const entry = path.join(dir, 'main.ts');
  const outdir = path.join(root, 'node_modules', '.cache', 'latchkey', `main-${createHash('sha256').update(entry).digest('hex').slice(0, 12)}`);
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
    rmSync(outdir, { recursive: true, force: true });
  });

  const run = () => execFileSync(process.execPath, [path.join(root, 'bin', 'run-ts.mjs'), entry], { encoding: 'utf8' }).trim();
  const build = (answer: string) => {
    // The imported module becomes a chunk of its own, named by its content.
    writeFileSync(path.join(dir, 'answer.ts'), `export const answer: string = ${JSON.stringify(answer)};\n`);
    return run();
  };
  const chunks = () => readdirSync(outdir).filter((name) => name.startsWith('chunk-') && name.endsWith('.mjs')).sort();

  it('runs the code in the tree after each change, and keeps the chunks of the last two builds only', async () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(entry, "const { answer } = await import('./answer.ts');\nprocess.stdout.write(answer);\n");
    expect(build('first')).toBe('first');
    const first = chunks();
    expect(build('second')).toBe('second');
    const second = chunks().filter((name) => !first.includes(name));
    expect(second.length).toBeGreaterThan(0);
    expect(chunks()).toEqual([...first, ...second].sort()); // the previous build's chunks stay

    // Files written in the last minute are never removed (another process may be building).
    const minutesAgo = new Date(Date.now() - 5 * 60_000);
    for (const name of readdirSync(outdir)) utimesSync(path.join(outdir, name), minutesAgo, minutesAgo);
    expect(build('third')).toBe('third');
    const remaining = chunks();
    for (const name of first) expect(remaining).not.toContain(name);
    for (const name of second) expect(remaining).toContain(name);
    expect(run()).toBe('third'); // unchanged: no rebuild, nothing removed
    expect(chunks()).toEqual(remaining);
  });
});
