import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The command that runs test/fixtures/`name` (TypeScript, through bin/run-ts.mjs) in a Node
 * process of its own: `[node, ...nodeOptions, run-ts, fixture, ...args]`.
 */
export function fixtureCommand(name: string, args: readonly string[] = [], nodeOptions: readonly string[] = []): string[] {
  return [process.execPath, ...nodeOptions, path.join(root, 'bin', 'run-ts.mjs'), path.join(root, 'test', 'fixtures', name), ...args];
}

/** Runs test/fixtures/`name` with --expose-gc and returns the bytes its old generation grew by (fixtures/old-space.ts). */
export function oldGenerationGrowth(name: string, args: readonly string[]): number {
  const [node, ...rest] = fixtureCommand(name, args, ['--expose-gc']);
  const out = execFileSync(node!, rest, { encoding: 'utf8', timeout: 120_000 });
  return (JSON.parse(out.trim().split('\n').at(-1)!) as { grown: number }).grown;
}
