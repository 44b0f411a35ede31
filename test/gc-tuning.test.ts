import { execFileSync, spawnSync } from 'node:child_process';
import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { fixtureCommand } from './fixture-command.ts';

const fullCollections = (...args: string[]): number => {
  const [node, ...rest] = fixtureCommand('pretenuring.ts', args);
  const out = execFileSync(node!, rest, { encoding: 'utf8' });
  return (JSON.parse(out.trim()) as { full: number }).full;
};

/** The helper threads' marking time (ms) in each full collection V8 reports, pinned to CPU 0 or not. */
const backgroundMarking = (pinned: boolean, ...args: string[]): number[] => {
  const node = fixtureCommand('concurrent-marking.ts', args, ['--trace-gc-nvp']);
  const [command, ...rest] = pinned ? ['taskset', '-c', '0', ...node] : node;
  const out = execFileSync(command!, rest, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  return out.split('\n').filter((line) => line.includes('gc=mc')).map((line) => Number(/background\.mark=([\d.]+)/.exec(line)?.[1]));
};
const tasksetWorks = process.platform === 'linux' && spawnSync('taskset', ['-c', '0', 'true']).status === 0;

// src/http/gc-tuning.ts, which `latchkey serve` and `latchkey api` call before they listen.
describe('garbage collector tuning for serving', () => {
  it('keeps short-lived objects out of the old generation once their allocation site looked long-lived', () => {
    // The premise: without the tuning, V8 pretenures the site and the short-lived objects fill
    // the old generation, which takes a full collection. V8 decides from sampled feedback, and
    // once in 25 runs of this file here it did not pretenure: the premise gets three tries.
    const untuned = [fullCollections()];
    while (untuned.at(-1) === 0 && untuned.length < 3) untuned.push(fullCollections());
    expect(untuned.at(-1)).toBeGreaterThan(0);
    expect(fullCollections('tuned')).toBe(0);
  });

  it.skipIf(!tasksetWorks)('marks on the main thread when the process has one CPU, and on a helper thread beside it otherwise', () => {
    // The premise: pinned to one CPU, V8 still marks on its helper threads.
    const untuned = backgroundMarking(true);
    expect(untuned.length).toBeGreaterThan(0);
    expect(Math.max(...untuned)).toBeGreaterThan(0);
    const tuned = backgroundMarking(true, 'tuned');
    expect(tuned.length).toBeGreaterThan(0);
    expect(tuned.every((ms) => ms === 0)).toBe(true);
    if (os.availableParallelism() > 1) expect(Math.max(...backgroundMarking(false, 'tuned'))).toBeGreaterThan(0);
  });
});
