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
